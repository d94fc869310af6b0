"""Flags shared by the command-line tools, and their user-facing error handling."""

import os
import sys

from absl import app
from absl import flags
from absl import logging

from vqkeras import startup

FLAGS = flags.FLAGS


def define_data_flags():
  flags.DEFINE_string("problem", None, "Registered problem, e.g. translate_ende or image_cifar10.")
  flags.DEFINE_string("hparams", None, "Registered hyper-parameter set, e.g. vq_em or "
                      "vq_em_cifar_small.")
  flags.DEFINE_string("hparams_overrides", "", "Changes to the set: 'name=value,...'.")
  flags.DEFINE_string("data_dir", None, "Where prepared data is cached: vocabulary, image "
                      "caches, tensorflow-datasets builds.")
  flags.DEFINE_string("raw_dir", None, "Where the datasets' raw files are, downloaded or put "
                      "by hand (Tensor2Tensor's tmp_dir). Default: DATA_DIR/raw.")
  flags.mark_flags_as_required(["problem", "data_dir"])


def define_decode_flags(what):
  """--decode_hparams (what they decode) and --teacher_dir, of bin/decode, eval and export."""
  flags.DEFINE_string("decode_hparams", "", f"Decoding options {what} (vqkeras.decoding."
                      f"DecodeHParams): 'beam_size=4,length_penalty=0.6', 'num_candidates=4'.")
  flags.DEFINE_string("teacher_dir", None, "The run of an autoregressive Transformer on the "
                      "same vocabulary that scores the latent model's candidates "
                      "(num_candidates > 1); default: the latent model scores them itself.")


def teacher(log=print):
  """The model of --teacher_dir restored to its latest checkpoint, or None."""
  if not FLAGS.teacher_dir:
    return None
  from vqkeras import run as run_lib  # pylint: disable=import-outside-toplevel
  return run_lib.Run.from_model_dir(FLAGS.teacher_dir, FLAGS.data_dir, raw_dir(), log=log).model


def raw_dir():
  return FLAGS.raw_dir or os.path.join(FLAGS.data_dir, "raw")


def run_reporting_errors(main):
  """Runs main(); a user's mistake (ValueError, FileNotFoundError) exits 2 with its message.

  VQKERAS_DEBUG=1 in the environment shows the traceback as well.
  """
  def wrapped(argv):
    try:
      return main(argv)
    except (ValueError, FileNotFoundError) as error:
      if os.environ.get("VQKERAS_DEBUG"):
        raise
      print(f"error: {error}\n(set VQKERAS_DEBUG=1 to see where it was raised)", file=sys.stderr)
      sys.exit(2)
  return wrapped


def run_tool(main):
  """Runs a tool's main() under absl with its errors reported (run_reporting_errors).

  absl raises its logging to INFO when --verbosity is not given, and TensorFlow's
  Python code logs at INFO (checkpoint sharding times, ...): a quiet tool keeps to
  warnings unless --verbosity asks for more.
  """
  def quiet_main(argv):
    if startup.is_quiet():
      logging.set_verbosity(logging.WARNING)
    return main(argv)
  app.run(run_reporting_errors(quiet_main))
