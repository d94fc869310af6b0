"""Trains a model on a problem, on one device, all local GPUs or many machines.

  bin/train --problem=translate_ende_multi30k --hparams=transformer_small \
      --data_dir=~/vqkeras_data --model_dir=~/runs/ende

Re-running the same command resumes from the latest checkpoint in --model_dir.
"""

import sys

from vqkeras.cli import flags
from vqkeras.cli import runs

FLAGS = flags.FLAGS


def define_flags():
  runs.define_run_flags()
  define = flags.flags
  define.DEFINE_integer("train_steps", None, "Global steps to train to (default: the hparams').")
  define.DEFINE_integer("eval_every", 0, "Evaluate on the validation split every N steps.")
  define.DEFINE_integer("checkpoint_every", 500, "Save a checkpoint every N steps.")
  define.DEFINE_integer("log_every", 50, "Report progress every N steps.")
  define.DEFINE_bool("jit_compile", False, "Compile the training step with XLA (once per batch "
                     "shape); for GPUs. Random draws (dropout, soft-EM samples) then come from "
                     "XLA's generator: the same distributions, other numbers.")


def main(argv):
  del argv
  from vqkeras import trainer  # pylint: disable=import-outside-toplevel
  new_or_resumed = runs.make_run(jit_compile=FLAGS.jit_compile)
  try:
    trainer.Trainer(new_or_resumed).train(
        FLAGS.train_steps or new_or_resumed.hparams.train_steps, eval_every=FLAGS.eval_every,
        checkpoint_every=FLAGS.checkpoint_every, log_every=FLAGS.log_every)
  except trainer.TrainingError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)


def run():
  define_flags()
  flags.run_tool(main)


if __name__ == "__main__":
  run()
