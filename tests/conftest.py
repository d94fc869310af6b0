"""Test setup: two logical CPU devices for the multi-replica tests, and the real data."""

import gzip
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

# Must run before TensorFlow initializes its devices: MirroredStrategy tests need
# two replicas, which a CPU provides as logical devices.
_CPUS = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _CPUS[0], [tf.config.LogicalDeviceConfiguration()] * 2)

REPO = pathlib.Path(__file__).resolve().parents[1]


# A sample of the real data, kept in the repository (tests/testdata/README.md): the tests
# need nothing beside a fresh clone. ../shared/data serves examples and benchmarks.
TESTDATA = REPO / "tests" / "testdata"


def multi30k_lines(name):
  """The lines of the sample's Multi30k file `name`, e.g. "val.en.gz"."""
  with gzip.open(TESTDATA / "multi30k" / name, "rt", encoding="utf-8") as f:
    return f.read().splitlines()


@pytest.fixture(scope="session")
def cifar_images():
  """The 100 images of the sample's data_batch_1, from the raw bytes: uint8 [n, 32, 32, 3]."""
  raw = np.fromfile(TESTDATA / "cifar10" / "cifar-10-batches-bin" / "data_batch_1.bin",
                    dtype=np.uint8)
  records = raw.reshape(-1, 1 + 3 * 32 * 32)
  return records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


@pytest.fixture(scope="session")
def cifar_patches(cifar_images):
  """Real 4x4 RGB patches scaled to [-1, 1]: float32 [n, 48], a natural K-means problem."""
  images = cifar_images[:64].astype(np.float64) / 127.5 - 1.0
  patches = images.reshape(64, 8, 4, 8, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, 48)
  return patches.astype(np.float32)


@pytest.fixture(scope="session")
def mirrored_strategy():
  """One MirroredStrategy over the two logical CPUs for the whole session.

  Two MirroredStrategy instances in one process issue collectives with clashing
  keys (the second fails with "Shape mismatch in the collective instance"), so
  every test shares this one.
  """
  return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="session")
def multi30k_data_dir(tmp_path_factory):
  """A data_dir with the tiny (1000-piece) vocabulary trained on the real Multi30k training text."""
  from vqkeras import registry  # pylint: disable=import-outside-toplevel
  data_dir = tmp_path_factory.mktemp("multi30k_data")
  registry.problem("translate_ende_multi30k").prepare(
      data_dir, TESTDATA / "multi30k", registry.hparams("transformer_tiny"),
      lambda _: None)
  return data_dir


@pytest.fixture(scope="session")
def multi30k_tokenizer(multi30k_data_dir):
  from vqkeras import registry  # pylint: disable=import-outside-toplevel
  return registry.problem("translate_ende_multi30k").tokenizer(
      multi30k_data_dir, None, registry.hparams("transformer_tiny"))


def run_tool(tool, *args, **kwargs):
  """Runs bin/<tool> in a subprocess; returns the CompletedProcess (text output)."""
  return subprocess.run([sys.executable, str(REPO / "bin" / tool), *args], capture_output=True,
                        text=True, timeout=600, **kwargs)


_TRAINED_RUNS = {}


def _trained_run(tmp_path_factory, problem, hparams, data_dir, raw_dir):
  """The flags of a run of bin/train for 3 steps (for the tools that read a trained run),
  trained once per session."""
  key = (problem, hparams, str(data_dir))
  if key not in _TRAINED_RUNS:
    _TRAINED_RUNS[key] = _train_run(tmp_path_factory, problem, hparams, data_dir, raw_dir)
  return _TRAINED_RUNS[key]


def _train_run(tmp_path_factory, problem, hparams, data_dir, raw_dir):
  flags = [f"--problem={problem}", f"--hparams={hparams}", f"--data_dir={data_dir}",
           f"--raw_dir={raw_dir}", f"--model_dir={tmp_path_factory.mktemp('run')}"]
  result = run_tool("train", *flags, "--train_steps=3")
  assert result.returncode == 0, result.stderr
  return flags


@pytest.fixture(scope="session", params=["transformer_tiny", "vq_em_tiny", "vq_glat_tiny"])
def translation_run(request, tmp_path_factory, multi30k_data_dir):
  """bin/train flags of a briefly trained translation model of each kind."""
  return _trained_run(tmp_path_factory, "translate_ende_multi30k", request.param,
                      multi30k_data_dir, TESTDATA / "multi30k")


@pytest.fixture(scope="session")
def cifar_run(tmp_path_factory):
  """bin/train flags of a briefly trained image VQ-VAE with a prior."""
  return _trained_run(tmp_path_factory, "image_cifar10", "vq_em_cifar_tiny",
                      tmp_path_factory.mktemp("cifar_data"), TESTDATA / "cifar10")


@pytest.fixture(scope="session", params=["vq_em_tiny", "vq_glat_tiny"])
def latent_and_teacher_runs(request, tmp_path_factory, multi30k_data_dir):
  """bin/train flags of a briefly trained latent model of each kind and a Transformer on
  one vocabulary."""
  return [_trained_run(tmp_path_factory, "translate_ende_multi30k", name, multi30k_data_dir,
                       TESTDATA / "multi30k")
          for name in (request.param, "transformer_tiny")]


def decoding_of(flags):
  """Decoding options {name: value} that search a little for a run's model: a beam of 2;
  latent-GLAT searches nothing: its 2 likeliest lengths."""
  if flag_value(flags, "hparams").startswith("vq_glat"):
    return {"num_candidates": 2}
  return {"beam_size": 2}


def decoding_text(flags):
  """`decoding_of` as --decode_hparams text."""
  return ",".join(f"{name}={value}" for name, value in decoding_of(flags).items())


def flag_value(flags, name):
  return next(flag.split("=", 1)[1] for flag in flags if flag.startswith(f"--{name}="))
