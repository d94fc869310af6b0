"""Decodes with a trained model: translations of text, or images sampled or reconstructed.

Translation, one output line per input line (stdin and stdout when the files are not given):
  bin/decode --problem=translate_ende_multi30k --hparams=transformer_small --data_dir=D \
      --model_dir=M --decode_from_file=source.en --decode_to_file=output.de \
      --decode_hparams="beam_size=4,length_penalty=0.6"
Images, written as a PNG grid:
  bin/decode --problem=image_cifar10 --hparams=vq_em_cifar_small --data_dir=D --model_dir=M \
      --num_images=16 --decode_hparams="temperature=0.9" --decode_to_file=samples.png
  bin/decode ... --reconstructions --decode_to_file=reconstructions.png
"""

import sys
import time

import numpy as np

from vqkeras import decoding
from vqkeras import files
from vqkeras import images
from vqkeras.cli import flags
from vqkeras.cli import runs

FLAGS = flags.FLAGS
COLUMNS = 8


def image_rows(images_):
  """uint8 images `[n, H, W, C]` as rows of COLUMNS `[rows, COLUMNS, H, W, C]` (the last row
  padded black)."""
  images_ = np.asarray(images_)
  missing = -len(images_) % COLUMNS
  images_ = np.concatenate([images_, np.zeros((missing,) + images_.shape[1:], np.uint8)])
  return images_.reshape((-1, COLUMNS) + images_.shape[1:])


def image_grid_of(rows):
  """uint8 images `[n, H, W, C]` as a grid of COLUMNS columns (the last row padded black)."""
  return images.image_grid(image_rows(rows))


def log_to_stderr(message):
  print(message, file=sys.stderr, flush=True)


def write_lines(path, lines):
  text = "".join(line.replace("\n", " ") + "\n" for line in lines)
  if path in (None, "-"):
    sys.stdout.write(text)
    sys.stdout.flush()
  else:
    with files.atomic_write(path) as partial:
      partial.write_text(text, encoding="utf-8")


def decode_text(trained, options):
  """Translates --decode_from_file (or stdin) line by line to --decode_to_file (or stdout)."""
  from vqkeras.translate import Search, Translator  # pylint: disable=import-outside-toplevel
  translator = Translator(trained.model, trained.tokenizer(log_to_stderr),
                          Search.of(options, flags.teacher(log_to_stderr)), options.batch_size)
  lines = files.read_lines(FLAGS.decode_from_file)
  start = time.perf_counter()
  reported = [start]

  def progress(done, total):
    if time.perf_counter() - reported[0] > 60:   # long files: a line a minute
      reported[0] = time.perf_counter()
      log_to_stderr(f"translated {done}/{total} sentences")

  translations, truncations = translator.translate(lines, progress)
  write_lines(FLAGS.decode_to_file, translations)
  for truncation in truncations:
    print(f"warning: {truncation}", file=sys.stderr)
  empty = sum(not line.strip() for line in lines)
  print(f"translated {len(lines)} lines ({empty} empty, {len(truncations)} cut to max_length) "
        f"in {time.perf_counter() - start:.1f}s with beam_size={options.beam_size}"
        + (f" to {FLAGS.decode_to_file}" if FLAGS.decode_to_file not in (None, "-") else ""),
        file=sys.stderr)


def decode_images(trained, options):
  """Samples from the prior, or validation images beside their reconstructions, as a PNG."""
  model = trained.model
  if not FLAGS.decode_to_file:
    raise ValueError("--decode_to_file is required for images, e.g. --decode_to_file=samples.png.")
  scale = FLAGS.image_scale
  if FLAGS.reconstructions:
    originals, _ = trained.problem.arrays("validation", FLAGS.data_dir, flags.raw_dir())
    originals = originals[:FLAGS.num_images]
    reconstructions = model.reconstruct(originals).numpy()
    if scale == 1:
      pairs = np.stack([originals, reconstructions], axis=1)
      grid = image_grid_of(pairs.reshape((-1,) + originals.shape[1:]))
    else:   # a row of images, then a row of their reconstructions
      rows = np.stack([image_rows(originals), image_rows(reconstructions)], axis=1)
      labels = ["validation images", "reconstructions"] * len(rows)
      grid = images.labelled_grid(rows.reshape((-1,) + rows.shape[2:]), labels, scale)
    what = f"{len(originals)} validation images, each followed by its reconstruction"
  else:
    samples = model.sample(FLAGS.num_images, options.temperature, (options.seed, 0)).numpy()
    if scale == 1:
      grid = image_grid_of(samples)
    else:
      rows = image_rows(samples)
      labels = [f"samples {COLUMNS * i + 1}-{min(COLUMNS * (i + 1), len(samples))}, "
                f"temperature {options.temperature:g}" for i in range(len(rows))]
      grid = images.labelled_grid(rows, labels, scale)
    what = f"{FLAGS.num_images} samples at temperature {options.temperature}"
  images.write_png(FLAGS.decode_to_file, grid)
  print(f"wrote {FLAGS.decode_to_file}: {what}")


def main(argv):
  del argv
  from vqkeras import models  # pylint: disable=import-outside-toplevel
  trained = runs.trained_run(log=log_to_stderr)   # stdout may carry the translations
  options = decoding.decode_hparams(trained.hparams, FLAGS.decode_hparams)
  if isinstance(trained.model, models.TranslationModel):
    decode_text(trained, options)
  elif isinstance(trained.model, models.ImageModel):
    decode_images(trained, options)
  else:
    raise ValueError(f"The {type(trained.model).__name__} model of --hparams={FLAGS.hparams} "
                     f"does not decode.")


def run():
  runs.define_run_flags()
  define = flags.flags
  define.DEFINE_integer("num_images", 16, "Images to sample or reconstruct.")
  # Its name until soft EM's samples (num_samples, m) and the images were named apart.
  define.DEFINE_alias("num_samples", "num_images")
  flags.define_decode_flags("of translations or images ('temperature=0.9,seed=3')")
  define.DEFINE_string("decode_from_file", None, "Text to translate, a sentence per line "
                       "(default or '-': stdin).")
  define.DEFINE_string("decode_to_file", None, "Where to write the translations, a line per "
                       "input line (default or '-': stdout), or the PNG grid of images.")
  define.DEFINE_bool("reconstructions", False, "Write validation images beside their "
                     "reconstructions instead of samples.")
  define.DEFINE_integer("image_scale", 4, "Images: each pixel as scale x scale pixels, with a "
                        "label above each row; 1: the plain 1:1 grid (as TensorBoard shows).",
                        lower_bound=1)
  flags.run_tool(main)


if __name__ == "__main__":
  run()
