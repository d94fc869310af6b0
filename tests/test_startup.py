"""Quiet tools: TensorFlow's known start-up lines dropped from stderr, everything else kept."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from vqkeras import startup

# Lines as TensorFlow 2.21 and SentencePiece write them, and lines that must stay.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796223363.872624    2217 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results due to floating-point round-off errors.",
    "I0000 00:00:1796223363.873602    2217 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "E0000 00:00:1796223368.770958    2217 cuda_platform.cc:52] failed call to cuInit: INTERNAL:"
    " CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1796225249.168787    3091 util.cc:131] oneDNN supports DT_INT64 only on "
    "platforms with AVX-512. Falling back to the default Eigen-based implementation if present.",
    "normalizer.cc(51) LOG(INFO) precompiled_charsmap is empty. use identity normalization.",
]
KEPT = [
    "W0000 00:00:1796225687.994242    4060 dataset.cc:997] Input of GeneratorDatasetOp::Dataset"
    " will not be optimized.",
    "error: No checkpoint in /tmp/run.",
    "UserWarning: oneDNN custom operations are on, said the user",
]

PROGRAM = f"""
import os, sys
sys.path.insert(0, {str(REPO)!r})
from vqkeras import startup
startup.quiet()
import tensorflow as tf
tf.config.list_physical_devices()
for line in {NOISE + KEPT!r}:
  os.write(2, (line + "\\n").encode())
print("from python", file=sys.stderr)
sys.exit(3)
"""


def run(*args, **environ):
  env = {key: value for key, value in os.environ.items()
         if key not in ("TF_CPP_MIN_LOG_LEVEL", startup.SET_BY_QUIET)}
  return subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True,
                        env={**env, **environ}, timeout=300, check=False)


def test_the_known_lines_go_and_every_other_line_stays():
  result = run()
  assert result.returncode == 3
  assert result.stderr.splitlines() == KEPT + ["from python"]


@pytest.mark.parametrize("args, environ", [(["--verbosity=0"], {}),
                                           ([], {"TF_CPP_MIN_LOG_LEVEL": "0"})])
def test_asking_for_logs_keeps_them_all(args, environ):
  lines = run(*args, **environ).stderr.splitlines()
  assert all(line in lines for line in NOISE + KEPT)
  assert any("port.cc" in line for line in lines[:-len(NOISE + KEPT) - 1])   # TF's own


@pytest.mark.parametrize("level", ["1", "2", "3"])
def test_asking_for_silence_is_at_least_as_quiet_as_asking_nothing(level):
  result = run(TF_CPP_MIN_LOG_LEVEL=level)
  assert result.stderr.splitlines() == KEPT + ["from python"]


def test_what_counts_as_asking_for_logs():
  assert not startup.user_asks_for_logs(["--problem=x", "--verbose_name=1"], {})
  assert startup.user_asks_for_logs(["--verbosity", "1"], {})
  assert startup.user_asks_for_logs(["-v=1"], {})
  assert startup.user_asks_for_logs([], {"TF_CPP_MIN_LOG_LEVEL": "0"})
  # Asking for less is not asking for logs:
  assert not startup.user_asks_for_logs([], {"TF_CPP_MIN_LOG_LEVEL": "3"})
  assert not startup.user_asks_for_logs([], {"TF_CPP_MIN_LOG_LEVEL": "1"})
  # Set by a parent's quiet(), not by the user:
  assert not startup.user_asks_for_logs(
      [], {"TF_CPP_MIN_LOG_LEVEL": "2", startup.SET_BY_QUIET: "1"})


def test_training_the_image_model_prints_no_error_lines(tmp_path):
  """No TensorFlow "E..." line (the Grappler remapper failed on the residual blocks'
  skip connections before ResidualBlock added its bias after them)."""
  result = subprocess.run(
      [sys.executable, str(REPO / "bin" / "train"), "--problem=image_cifar10",
       "--hparams=vq_em_cifar_tiny", f"--data_dir={tmp_path / 'data'}",
       f"--raw_dir={REPO / 'tests' / 'testdata' / 'cifar10'}", f"--model_dir={tmp_path / 'run'}",
       "--train_steps=2"], capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr
  errors = [line for line in result.stderr.splitlines() if re.match(r"E\d{4} ", line)]
  assert not errors, errors
