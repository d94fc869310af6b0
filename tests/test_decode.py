"""bin/decode: samples and reconstructions as PNG grids."""

import subprocess
import sys

import tensorflow as tf

from conftest import REPO, shared_data_dir


def run(tool, *args):
  return subprocess.run([sys.executable, str(REPO / "bin" / tool), *args], capture_output=True,
                        text=True, timeout=300)


def test_decode_writes_samples_and_reconstructions(tmp_path):
  common = ["--problem=image_cifar10", "--hparams=vq_em_cifar_tiny",
            f"--data_dir={tmp_path / 'data'}", f"--raw_dir={shared_data_dir() / 'cifar10'}",
            f"--model_dir={tmp_path / 'run'}"]
  assert run("train", *common, "--train_steps=3").returncode == 0
  result = run("decode", *common, "--num_samples=10", "--decode_hparams=temperature=0.7",
               f"--decode_to_file={tmp_path / 'samples.png'}")
  assert result.returncode == 0, result.stderr
  samples = tf.io.decode_png(tf.io.read_file(str(tmp_path / "samples.png")))
  assert samples.shape == (2 * 32, 8 * 32, 3)            # 10 samples, rows of 8
  result = run("decode", *common, "--num_samples=4", "--reconstructions",
               f"--decode_to_file={tmp_path / 'pairs.png'}")
  assert result.returncode == 0, result.stderr
  pairs = tf.io.decode_png(tf.io.read_file(str(tmp_path / "pairs.png")))
  assert pairs.shape == (32, 8 * 32, 3)                  # 4 images and their reconstructions
  result = run("decode", *common, "--decode_hparams=temperature=-1",
               f"--decode_to_file={tmp_path / 'x.png'}")
  assert result.returncode == 2 and "temperature: -1.0; expected a float > 0" in result.stderr
