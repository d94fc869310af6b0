"""Decodes with a trained model: samples or reconstructions of images, written as a PNG grid.

  bin/decode --problem=image_cifar10 --hparams=vq_em_cifar_small --data_dir=D --model_dir=M \
      --num_samples=16 --decode_hparams="temperature=0.9" --decode_to_file=samples.png
  bin/decode ... --reconstructions --decode_to_file=reconstructions.png
"""

import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from absl import app

from vqkeras import hparams_lib
from vqkeras import images
from vqkeras.cli import flags
from vqkeras.cli import train

FLAGS = flags.FLAGS
COLUMNS = 8


@dataclasses.dataclass(frozen=True)
class DecodeHParams(hparams_lib.HParams):
  """Decoding options (--decode_hparams)."""
  temperature: float = 1.0     # of the prior's softmax when sampling codes
  seed: int = 0

  def validate(self):
    hparams_lib.check(self.temperature > 0, "temperature", self.temperature, "a float > 0")


def image_grid_of(rows):
  """uint8 images `[n, H, W, C]` as a grid of COLUMNS columns (the last row padded black)."""
  rows = np.asarray(rows)
  missing = -len(rows) % COLUMNS
  rows = np.concatenate([rows, np.zeros((missing,) + rows.shape[1:], np.uint8)])
  return images.image_grid(rows.reshape((-1, COLUMNS) + rows.shape[1:]))


def main(argv):
  del argv
  if not FLAGS.hparams:
    raise ValueError("--hparams is required: the set the model in --model_dir was trained with.")
  if not FLAGS.decode_to_file:
    raise ValueError("--decode_to_file is required, e.g. --decode_to_file=samples.png.")
  decode = DecodeHParams().override(FLAGS.decode_hparams)
  trainer = train.make_trainer()
  if not trainer.manager.latest_checkpoint:
    raise FileNotFoundError(f"No checkpoint in {FLAGS.model_dir}/checkpoints; train first.")
  trainer.restore()
  model = trainer.model
  if not hasattr(model, "sample"):
    raise ValueError(f"The {type(model).__name__} model of --hparams={FLAGS.hparams} does not "
                     f"decode to images.")
  if FLAGS.reconstructions:
    originals, _ = trainer.problem.arrays("validation", FLAGS.data_dir, flags.raw_dir())
    originals = originals[:FLAGS.num_samples]
    pairs = np.stack([originals, model.reconstruct(originals).numpy()], axis=1)
    grid = image_grid_of(pairs.reshape((-1,) + originals.shape[1:]))
    what = f"{len(originals)} validation images, each followed by its reconstruction"
  else:
    samples = model.sample(FLAGS.num_samples, decode.temperature, (decode.seed, 0)).numpy()
    grid = image_grid_of(samples)
    what = f"{FLAGS.num_samples} samples at temperature {decode.temperature}"
  images.write_png(FLAGS.decode_to_file, grid)
  print(f"wrote {FLAGS.decode_to_file}: {what}")


def run():
  train.define_flags()
  define = flags.flags
  define.DEFINE_integer("num_samples", 16, "Images to sample or reconstruct.")
  define.DEFINE_string("decode_hparams", "", "Decoding options: 'temperature=0.9,seed=3'.")
  define.DEFINE_string("decode_to_file", None, "Where to write the PNG grid.")
  define.DEFINE_bool("reconstructions", False, "Write validation images beside their "
                     "reconstructions instead of samples.")
  app.run(flags.run_reporting_errors(main))


if __name__ == "__main__":
  run()
