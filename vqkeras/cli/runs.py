"""The run every tool works on: its flags, and the run they describe (bin/train, eval,
decode and export)."""

from vqkeras.cli import flags

FLAGS = flags.FLAGS


def define_run_flags():
  """The data flags and the run's: --model_dir, where to run it and how it was seeded."""
  flags.define_data_flags()
  define = flags.flags
  define.DEFINE_string("model_dir", None, "Checkpoints, TensorBoard events and the run's config.")
  define.DEFINE_enum("strategy", "auto", ["auto", "one_device", "mirrored", "multi_worker"],
                     "auto: MirroredStrategy when several GPUs (or --cpu_devices) are there.")
  define.DEFINE_integer("seed", 1, "Seed of initialization, data order and sampling.")
  define.DEFINE_enum("mixed_precision", "none", ["none", "mixed_float16", "mixed_bfloat16"],
                     "Keras mixed-precision policy; the codebook stays float32.")
  define.DEFINE_integer("cpu_devices", 1, "Split the CPU into N logical devices, to try and "
                        "test multi-device training without GPUs.")
  define.mark_flag_as_required("model_dir")


def make_run(log=print, jit_compile=False):
  """The run the flags describe (bin/train; through `trained_run` bin/eval, bin/decode
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
      seed=FLAGS.seed, mixed_precision=FLAGS.mixed_precision, jit_compile=jit_compile)
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
