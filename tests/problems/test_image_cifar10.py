"""image_cifar10 from every source format, against a NumPy reading of the raw bytes."""

import pickle
import shutil
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import TESTDATA
from vqkeras import problem as problem_lib
from vqkeras import registry
from vqkeras.input_pipeline import scale_images

BATCHES = [f"data_batch_{i}.bin" for i in range(1, 6)]


def raw_bytes_reading():
  """Images and labels of the five sample files, straight from the bytes."""
  images, labels = [], []
  for name in BATCHES:
    raw = np.fromfile(TESTDATA / "cifar10" / "cifar-10-batches-bin" / name, np.uint8)
    records = raw.reshape(-1, 3073)
    labels.append(records[:, 0])
    planes = records[:, 1:].reshape(-1, 3, 1024)          # red, green, blue planes
    images.append(np.stack([planes[:, c].reshape(-1, 32, 32) for c in range(3)], axis=-1))
  return np.concatenate(images), np.concatenate(labels)


@pytest.fixture(scope="module")
def expected():
  images, labels = raw_bytes_reading()
  held = int(round(len(images) * 0.1))
  return {"train": (images[:-held], labels[:-held]),
          "validation": (images[-held:], labels[-held:])}


def check_splits(cifar, data_dir, raw_dir, expected):
  for split, (images, labels) in expected.items():
    got_images, got_labels = cifar.arrays(split, data_dir, raw_dir, log=lambda _: None)
    assert got_images.dtype == np.uint8 and got_images.shape[1:] == (32, 32, 3)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_binary_folder(tmp_path, expected):
  cifar = registry.problem("image_cifar10")
  check_splits(cifar, tmp_path / "data", TESTDATA / "cifar10", expected)
  with pytest.raises(problem_lib.DataError, match="no 'test' split"):
    cifar.arrays("test", tmp_path / "data", None)


def test_binary_archive(tmp_path, expected):
  raw = tmp_path / "raw"
  raw.mkdir()
  with tarfile.open(raw / "cifar-10-binary.tar.gz", "w:gz") as tar:
    tar.add(TESTDATA / "cifar10" / "cifar-10-batches-bin", "cifar-10-batches-bin")
  check_splits(registry.problem("image_cifar10"), tmp_path / "data", raw, expected)


def write_python_batches(folder):
  """The official python version: pickled dicts with b'data' [n, 3072] in plane order."""
  folder.mkdir(parents=True)
  for index, name in enumerate(BATCHES, 1):
    raw = np.fromfile(TESTDATA / "cifar10" / "cifar-10-batches-bin" / name, np.uint8)
    records = raw.reshape(-1, 3073)
    batch = {b"batch_label": b"training batch", b"labels": records[:, 0].tolist(),
             b"data": records[:, 1:], b"filenames": [b"x.png"] * len(records)}
    with open(folder / f"data_batch_{index}", "wb") as f:
      pickle.dump(batch, f)


@pytest.mark.parametrize("archived", [False, True])
def test_python_batches(tmp_path, expected, archived):
  raw = tmp_path / "raw"
  write_python_batches(raw / "cifar-10-batches-py")
  if archived:
    with tarfile.open(raw / "cifar-10-python.tar.gz", "w:gz") as tar:
      tar.add(raw / "cifar-10-batches-py", "cifar-10-batches-py")
    shutil.rmtree(raw / "cifar-10-batches-py")
  check_splits(registry.problem("image_cifar10"), tmp_path / "data", raw, expected)


def test_truncated_file_names_the_file_and_the_record(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  for name in BATCHES:
    shutil.copy(TESTDATA / "cifar10" / "cifar-10-batches-bin" / name, raw / name)
  data = (raw / "data_batch_3.bin").read_bytes()
  (raw / "data_batch_3.bin").write_bytes(data[:3073 * 10 + 500])
  with pytest.raises(problem_lib.DataError, match=r"data_batch_3.bin is truncated.*record 10 "):
    registry.problem("image_cifar10").prepare(tmp_path / "data", raw, log=lambda _: None)
  assert not (tmp_path / "data" / "image_cifar10.npz").exists()


def test_corrupt_python_batch_names_the_file(tmp_path):
  folder = tmp_path / "raw" / "cifar-10-batches-py"
  folder.mkdir(parents=True)
  (folder / "data_batch_1").write_bytes(b"not a pickle")
  with pytest.raises(problem_lib.DataError, match="data_batch_1 is not a readable CIFAR-10"):
    registry.problem("image_cifar10").prepare(tmp_path / "data", tmp_path / "raw",
                                              log=lambda _: None)


def test_tensorflow_datasets_path(tmp_path, monkeypatch):
  monkeypatch.setattr(problem_lib, "reachable", lambda url: True)
  with tfds.testing.mock_data(num_examples=40):
    images, labels = registry.problem("image_cifar10").arrays(
        "train", tmp_path / "data", tmp_path / "empty_raw", log=lambda _: None)
    test_images, _ = registry.problem("image_cifar10").arrays(
        "test", tmp_path / "data", tmp_path / "empty_raw", log=lambda _: None)
  assert images.shape == (36, 32, 32, 3) and images.dtype == np.uint8
  assert labels.shape == (36,) and set(labels) <= set(range(10))
  assert test_images.shape == (40, 32, 32, 3)


def test_missing_data_offline_says_what_to_put_where(tmp_path, monkeypatch):
  monkeypatch.setattr(problem_lib, "reachable", lambda url: False)
  with pytest.raises(problem_lib.DataNotFound) as error:
    registry.problem("image_cifar10").prepare(tmp_path / "data", tmp_path / "raw",
                                              log=lambda _: None)
  message = str(error.value)
  for expected in ("cifar-10-binary.tar.gz", "data_batch_1.bin", "cifar-10-python.tar.gz",
                   f"--raw_dir={tmp_path / 'raw'}",
                   "download_and_prepare --datasets=cifar10"):
    assert expected in message


def test_image_batches(tmp_path, expected):
  hparams = registry.hparams("vq_em_cifar_tiny")
  cifar = registry.problem("image_cifar10")
  dataset = cifar.dataset("validation", tmp_path, TESTDATA / "cifar10", hparams,
                          training=False)
  batches = list(dataset)
  assert sum(len(b["label"]) for b in batches) == len(expected["validation"][1])
  first = batches[0]
  assert first["image"].shape == (16, 32, 32, 3) and first["image"].dtype == np.uint8
  np.testing.assert_allclose(scale_images(first["image"]).numpy(),
                             first["image"].numpy().astype(np.float64) / 127.5 - 1, atol=1e-6)
  training = next(iter(cifar.dataset("train", tmp_path, None, hparams, training=True, seed=0)))
  assert training["image"].shape == (16, 32, 32, 3)
