"""CIFAR-10: 32x32 RGB images of ten classes.

Sources, tried in this order:
1. the official archives' files in --raw_dir: the binary version
   (`data_batch_1.bin` ... `data_batch_5.bin`, `test_batch.bin`) or the python
   version (pickled `data_batch_1` ... `test_batch`), loose, in their
   `cifar-10-batches-bin/` or `cifar-10-batches-py/` folders, or as the
   `cifar-10-binary.tar.gz` / `cifar-10-python.tar.gz` archives;
2. tensorflow-datasets' `cifar10`, prepared in --data_dir or downloaded there.

The last 10% of the training images are held out as the validation split.
"""

import pathlib
import pickle
import tarfile

import numpy as np

from vqkeras import problem
from vqkeras import registry

RECORD_BYTES = 1 + 32 * 32 * 3
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
VALIDATION_FRACTION = 0.1
BINARY = ("cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)],
          "test_batch.bin", "cifar-10-binary.tar.gz")
PYTHON = ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
          "cifar-10-python.tar.gz")


def read_cifar10_binary(paths):
  """Reads CIFAR-10 records in the official binary format.

  Each record is 1 label byte then 3072 pixel bytes: 1024 red, 1024 green,
  1024 blue, each 32x32 row-major.

  Args:
    paths: files such as `data_batch_1.bin`.

  Returns:
    images uint8 `[n, 32, 32, 3]` and labels int64 `[n]`.

  Raises:
    problem.DataError: a file is missing or truncated.
  """
  images, labels = [], []
  for path in map(pathlib.Path, paths):
    if not path.is_file():
      raise problem.DataError(f"CIFAR-10 file not found: {path}")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % RECORD_BYTES:
      raise problem.DataError(
          f"{path} is truncated or not a CIFAR-10 binary file: {raw.size} bytes is not a "
          f"whole number of {RECORD_BYTES}-byte records (record {raw.size // RECORD_BYTES} "
          f"is cut short).")
    records = raw.reshape(-1, RECORD_BYTES)
    labels.append(records[:, 0].astype(np.int64))
    images.append(records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
  return np.concatenate(images), np.concatenate(labels)


def read_cifar10_pickle(paths):
  """Reads the python version: pickled dicts with b"data" `[n, 3072]` and b"labels"."""
  images, labels = [], []
  for path in map(pathlib.Path, paths):
    try:
      with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
      data = np.asarray(batch[b"data"], np.uint8)
      batch_labels = np.asarray(batch[b"labels"], np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
      raise problem.DataError(f"{path} is not a readable CIFAR-10 python batch: "
                              f"{type(error).__name__}: {error}") from error
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(batch_labels):
      raise problem.DataError(f"{path}: expected data [n, 3072] and n labels, got data "
                              f"{data.shape} and {len(batch_labels)} labels.")
    images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    labels.append(batch_labels)
  return np.concatenate(images), np.concatenate(labels)


def _find_batches(raw_dir, layout, log):
  """The train and test files of one layout in raw_dir, extracting its archive if needed."""
  folder, train_names, test_name, archive = layout
  raw_dir = pathlib.Path(raw_dir)
  for place in (raw_dir / folder, raw_dir):
    train = [place / name for name in train_names if (place / name).is_file()]
    if train:
      test = place / test_name
      return train, (test if test.is_file() else None)
  if (raw_dir / archive).is_file():
    log(f"image_cifar10: extracting {raw_dir / archive}")
    try:
      with tarfile.open(raw_dir / archive) as tar:
        tar.extractall(raw_dir, filter="data")
    except (tarfile.TarError, OSError, EOFError) as error:
      raise problem.DataError(f"{raw_dir / archive} is not a readable tar.gz archive: "
                              f"{error}") from error
    return _find_batches(raw_dir, layout[:3] + ("",), log)
  return None


def _split_validation(images, labels):
  held = int(round(len(images) * VALIDATION_FRACTION))
  return {"train": (images[:-held], labels[:-held]),
          "validation": (images[-held:], labels[-held:])}


@registry.register_problem
class ImageCifar10(problem.ImageProblem):
  """CIFAR-10 images, uint8 `[32, 32, 3]`, with labels."""

  name = "image_cifar10"
  image_shape = (32, 32, 3)

  def read_raw(self, data_dir, raw_dir, log):
    """The CIFAR-10 batches (binary or python, loose or in the official archive) in
    `raw_dir`, else tensorflow-datasets' `cifar10`."""
    if raw_dir is not None:
      for layout, reader in ((BINARY, read_cifar10_binary), (PYTHON, read_cifar10_pickle)):
        found = _find_batches(raw_dir, layout, log)
        if found:
          train, test = found
          log(f"image_cifar10: reading {len(train)} training files from {train[0].parent}"
              + ("" if test else " (no test batch there: no test split)"))
          splits = _split_validation(*reader(train))
          if test:
            splits["test"] = reader([test])
          return splits
    return self.read_tfds(data_dir, raw_dir, log)

  def read_tfds(self, data_dir, raw_dir, log):
    """CIFAR-10 from tensorflow-datasets, downloaded into `data_dir` (or from the
    archive in `raw_dir`)."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    log(f"image_cifar10: no raw files in --raw_dir={raw_dir}; trying tensorflow-datasets")
    builder = problem.prepare_tfds(
        tfds.builder("cifar10", data_dir=data_dir), ARCHIVE_URL, raw_dir,
        lambda error: self.missing_message(data_dir, raw_dir, error), log)
    splits = {}
    for split in ("train", "test"):
      batches = list(tfds.as_numpy(builder.as_dataset(split=split).batch(4096)))
      splits[split] = (np.concatenate([b["image"] for b in batches]).astype(np.uint8),
                       np.concatenate([b["label"] for b in batches]).astype(np.int64))
    return {**_split_validation(*splits["train"]), "test": splits["test"]}

  @staticmethod
  def missing_message(data_dir, raw_dir, error):
    return (
        f"CIFAR-10 not found and could not be downloaded ({type(error).__name__}: {error}).\n"
        f"Put one of these in --raw_dir={raw_dir}:\n"
        f"  - cifar-10-binary.tar.gz, or its files data_batch_1.bin ... data_batch_5.bin and "
        f"test_batch.bin (loose or in cifar-10-batches-bin/)\n"
        f"  - cifar-10-python.tar.gz, or its files data_batch_1 ... data_batch_5 and test_batch "
        f"(loose or in cifar-10-batches-py/)\n"
        f"from https://www.cs.toronto.edu/~kriz/cifar.html, or, with internet, prepare "
        f"tensorflow-datasets' copy in --data_dir:\n"
        f"  python -m tensorflow_datasets.scripts.download_and_prepare --datasets=cifar10 "
        f"--data_dir={data_dir}")
