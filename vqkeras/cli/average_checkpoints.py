"""Averages a run's last checkpoints into a new run (Vaswani et al. 2017 translate with the
average of the last 5; Tensor2Tensor's avg_checkpoints).

  bin/average_checkpoints --problem=translate_ende_multi30k_distilled --hparams=vq_em_small \
      --data_dir=D --model_dir=M --output_dir=M_averaged [--last=5 | --steps=5000,6000]

writes M_averaged/ (config.json and one checkpoint, of the last averaged step), which
bin/eval, bin/decode and bin/export read as any run.
"""

import sys

from vqkeras.cli import flags
from vqkeras.cli import runs

FLAGS = flags.FLAGS


def main(argv):
  del argv
  from vqkeras import averaging  # pylint: disable=import-outside-toplevel
  if not FLAGS.output_dir:
    raise ValueError("--output_dir is required: a new run directory for the average, e.g. "
                     f"--output_dir={FLAGS.model_dir.rstrip('/')}_averaged.")
  try:
    steps = [int(step) for step in FLAGS.steps.split(",") if step.strip()]
  except ValueError:
    raise ValueError(f"--steps={FLAGS.steps}: give training steps separated by commas, "
                     f"e.g. --steps=5000,6000.") from None
  if FLAGS.last < 0:
    raise ValueError(f"--last={FLAGS.last}: give how many of the latest checkpoints to "
                     f"average (0: every one kept).")
  paths = averaging.checkpoint_paths(FLAGS.model_dir, FLAGS.last, steps)
  run = runs.make_run()
  try:
    averaged = averaging.average_checkpoints(run, paths, FLAGS.output_dir)
  except FileExistsError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  print(f"averaged steps {', '.join(str(averaging.checkpoint_step(p)) for p in paths)} into "
        f"{averaged.latest_checkpoint}")


def run():
  runs.define_run_flags()
  define = flags.flags
  define.DEFINE_string("output_dir", None, "The new run directory of the average.")
  define.DEFINE_integer("last", 5, "Average the N latest checkpoints (0: every one kept).")
  define.DEFINE_string("steps", "", "Average the checkpoints of these steps instead, e.g. "
                       "5000,6000.")
  flags.run_tool(main)


if __name__ == "__main__":
  run()
