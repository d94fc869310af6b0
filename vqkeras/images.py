"""Image grids for reconstructions and samples."""

import numpy as np
import tensorflow as tf


def image_grid(rows):
  """Tiles rows of equally sized uint8 images `[rows, cols, H, W, C]` into one `[rows*H, cols*W, C]` image."""
  rows = np.asarray(rows)
  if rows.dtype != np.uint8 or rows.ndim != 5:
    raise ValueError(f"image_grid expects uint8 [rows, cols, H, W, C], got {rows.dtype} "
                     f"{rows.shape}.")
  r, c, h, w, channels = rows.shape
  return rows.transpose(0, 2, 1, 3, 4).reshape(r * h, c * w, channels)


def write_png(path, image):
  """Writes a uint8 `[H, W, C]` image as PNG."""
  tf.io.write_file(str(path), tf.io.encode_png(image))


# A 3 x 5 pixel font for the labels of `labelled_grid`: each glyph five rows of three.
GLYPHS = {
    "A": "010101111101101", "B": "110101110101110", "C": "011100100100011",
    "D": "110101101101110", "E": "111100110100111", "F": "111100110100100",
    "G": "011100101101011", "H": "101101111101101", "I": "111010010010111",
    "J": "001001001101010", "K": "101101110101101", "L": "100100100100111",
    "M": "101111111101101", "N": "110101101101101", "O": "010101101101010",
    "P": "110101110100100", "Q": "010101101110011", "R": "110101110101101",
    "S": "011100010001110", "T": "111010010010010", "U": "101101101101111",
    "V": "101101101101010", "W": "101101111111101", "X": "101101010101101",
    "Y": "101101010010010", "Z": "111001010100111", "0": "111101101101111",
    "1": "010110010010111", "2": "110001010100111", "3": "110001010001110",
    "4": "101101111001001", "5": "111100110001110", "6": "011100110101010",
    "7": "111001010010010", "8": "010101010101010", "9": "010101011001110",
    " ": "000000000000000", "-": "000000111000000", ".": "000000000000010",
    ":": "000010000010000", "=": "000111000111000",
}


def text_image(text, scale):
  """`text` (letters, digits, " -.:=") in black on white, uint8 `[5 * scale, ...]`, each
  glyph 3 x 5 pixels scaled by `scale` with a pixel of space between glyphs."""
  columns = []
  for char in text.upper():
    glyph = np.array([int(bit) for bit in GLYPHS.get(char, GLYPHS[" "])]).reshape(5, 3)
    columns += [glyph, np.zeros((5, 1), int)]
  ink = np.concatenate(columns, axis=1) if columns else np.zeros((5, 0), int)
  ink = np.repeat(np.repeat(ink, scale, axis=0), scale, axis=1)
  return np.where(ink[..., None] > 0, 0, 255).astype(np.uint8).repeat(3, axis=-1)


def labelled_grid(rows, labels, scale=4, margin=4):
  """An image grid a person can read: rows of uint8 images `[rows, cols, H, W, 3]`, each
  image scaled up `scale` times (nearest neighbour) with `margin` white pixels between
  them, each row under its label (one string per row)."""
  rows = np.asarray(rows)
  if rows.dtype != np.uint8 or rows.ndim != 5 or len(labels) != rows.shape[0]:
    raise ValueError(f"labelled_grid expects uint8 [rows, cols, H, W, 3] and one label per "
                     f"row, got {rows.dtype} {rows.shape} and {len(labels)} labels.")
  big = rows.repeat(scale, axis=2).repeat(scale, axis=3)
  r, c, h, w, channels = big.shape
  width = c * (w + margin) + margin
  parts = []
  for images, label in zip(big, labels):
    text = text_image(label, max(1, scale // 2))[:, :width]
    band = np.full((text.shape[0] + 2 * margin, width, channels), 255, np.uint8)
    band[margin:margin + text.shape[0], margin:margin + text.shape[1]] = text
    strip = np.full((h, width, channels), 255, np.uint8)
    for j, image in enumerate(images):
      strip[:, margin + j * (w + margin):margin + j * (w + margin) + w] = image
    parts += [band, strip]
  parts.append(np.full((margin, width, channels), 255, np.uint8))
  return np.concatenate(parts, axis=0)
