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
