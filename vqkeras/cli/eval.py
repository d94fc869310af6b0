"""Evaluates the latest checkpoint in --model_dir on a split; the last line is JSON.

  bin/eval --problem=image_cifar10 --hparams=vq_em_cifar_small --data_dir=D --model_dir=M
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app

from vqkeras.cli import flags
from vqkeras.cli import train

FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.hparams:
    raise ValueError("--hparams is required: the set the model in --model_dir was trained with.")
  trainer = train.make_trainer()
  if trainer.restore() == 0 and not trainer.manager.latest_checkpoint:
    raise FileNotFoundError(f"No checkpoint in {FLAGS.model_dir}/checkpoints; train first.")
  print(json.dumps(trainer.evaluate(FLAGS.split)))


def run():
  train.define_flags()
  flags.flags.DEFINE_enum("split", "validation", ["train", "validation", "test"],
                          "The split to evaluate.")
  app.run(flags.run_reporting_errors(main))


if __name__ == "__main__":
  run()
