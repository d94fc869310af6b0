"""Trains a model on a problem, on one device, all local GPUs or many machines.

  bin/train --problem=translate_ende_multi30k --hparams=transformer_small \
      --data_dir=~/vqkeras_data --model_dir=~/runs/ende

Re-running the same command resumes from the latest checkpoint in --model_dir.
"""

import sys

from vqkeras.cli import flags

FLAGS = flags.FLAGS


def define_flags():
  flags.define_data_flags()
  define = flags.flags
  define.DEFINE_string("model_dir", None, "Checkpoints, TensorBoard events and the run's config.")
  define.DEFINE_integer("train_steps", None, "Global steps to train to (default: the hparams').")
  define.DEFINE_integer("eval_every", 0, "Evaluate on the validation split every N steps.")
  define.DEFINE_integer("checkpoint_every", 500, "Save a checkpoint every N steps.")
  define.DEFINE_integer("log_every", 50, "Report progress every N steps.")
  define.DEFINE_enum("strategy", "auto", ["auto", "one_device", "mirrored", "multi_worker"],
                     "auto: MirroredStrategy when several GPUs (or --cpu_devices) are there.")
  define.DEFINE_integer("seed", 1, "Seed of initialization, data order and sampling.")
  define.DEFINE_enum("mixed_precision", "none", ["none", "mixed_float16", "mixed_bfloat16"],
                     "Keras mixed-precision policy; the codebook stays float32.")
  define.DEFINE_bool("jit_compile", False, "Compile the training step with XLA (once per batch "
                     "shape); for GPUs. Random draws (dropout, soft-EM samples) then come from "
                     "XLA's generator: the same distributions, other numbers.")
  define.DEFINE_integer("cpu_devices", 1, "Split the CPU into N logical devices, to try and "
                        "test multi-device training without GPUs.")
  define.mark_flag_as_required("model_dir")


def make_run(log=print):
  """The run the flags describe (bin/train, and through `trained_run` bin/eval, bin/decode
  and bin/export)."""
  from vqkeras import distribute  # pylint: disable=import-outside-toplevel
  from vqkeras import run as run_lib  # pylint: disable=import-outside-toplevel
  if not FLAGS.hparams:
    raise ValueError("--hparams is required: the set to train, or the one the run in "
                     "--model_dir was trained with, e.g. --hparams=vq_em_cifar_small.")
  distribute.split_cpu(FLAGS.cpu_devices)
  config = run_lib.RunConfig(
      problem=FLAGS.problem, hparams=FLAGS.hparams, hparams_overrides=FLAGS.hparams_overrides,
      data_dir=FLAGS.data_dir, raw_dir=flags.raw_dir(), model_dir=FLAGS.model_dir,
      seed=FLAGS.seed, mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile)
  return run_lib.Run(config, distribute.make_strategy(FLAGS.strategy), log=log)


def trained_run(log=print):
  """The run the flags describe, restored to its latest checkpoint (the tools that read a
  trained model).

  Raises:
    FileNotFoundError: --model_dir has no checkpoint.
  """
  trained = make_run(log)
  trained.restore(required=True)
  return trained


def main(argv):
  del argv
  from vqkeras import trainer  # pylint: disable=import-outside-toplevel
  new_or_resumed = make_run()
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
