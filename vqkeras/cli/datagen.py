"""Prepares and caches a problem's data: vocabulary, caches, statistics.

  bin/datagen --problem=translate_ende_multi30k --hparams=transformer_small \
      --data_dir=~/vqkeras_data --raw_dir=~/vqkeras_data/raw
"""

from vqkeras import registry
from vqkeras.cli import flags

FLAGS = flags.FLAGS


def main(argv):
  del argv
  problem = registry.problem(FLAGS.problem)
  hparams = registry.hparams(FLAGS.hparams, FLAGS.hparams_overrides) if FLAGS.hparams else None
  if hparams is None and problem.prepares_with_hparams:
    raise ValueError(f"--hparams is required for {FLAGS.problem}: its vocabulary size comes "
                     f"from the hyper-parameters (e.g. --hparams=transformer_small).")
  problem.prepare(FLAGS.data_dir, flags.raw_dir(), hparams)
  print(f"{FLAGS.problem}: prepared in {FLAGS.data_dir}")


def run():
  flags.define_data_flags()
  flags.run_tool(main)


if __name__ == "__main__":
  run()
