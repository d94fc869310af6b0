"""CIFAR-10 images."""

import pathlib

import numpy as np

RECORD_BYTES = 1 + 32 * 32 * 3


def read_cifar10_binary(paths):
  """Reads CIFAR-10 records in the official binary format.

  Each record is 1 label byte then 3072 pixel bytes: 1024 red, 1024 green,
  1024 blue, each 32x32 row-major.

  Args:
    paths: files such as `data_batch_1.bin`.

  Returns:
    images uint8 `[n, 32, 32, 3]` and labels int64 `[n]`.

  Raises:
    FileNotFoundError: a file is missing.
    ValueError: a file is truncated (its size is not a whole number of records).
  """
  images, labels = [], []
  for path in map(pathlib.Path, paths):
    if not path.is_file():
      raise FileNotFoundError(f"CIFAR-10 file not found: {path}")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % RECORD_BYTES:
      raise ValueError(f"{path} is truncated or not a CIFAR-10 binary file: {raw.size} bytes "
                       f"is not a whole number of {RECORD_BYTES}-byte records (record "
                       f"{raw.size // RECORD_BYTES} is cut short).")
    records = raw.reshape(-1, RECORD_BYTES)
    labels.append(records[:, 0].astype(np.int64))
    images.append(records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
  return np.concatenate(images), np.concatenate(labels)
