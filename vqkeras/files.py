"""Text lines as every tool reads them, and writing files so that a reader never sees
half of one."""

import contextlib
import gzip
import os
import pathlib
import sys


@contextlib.contextmanager
def atomic_write(path):
  """Yields a temporary path beside `path`; moves it over `path` when the block succeeds.

  The temporary name carries the process id, so processes preparing the same
  file at once (several workers) do not collide; a killed or failed writer
  leaves `path` as it was.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
  try:
    yield partial
    partial.replace(path)
  finally:
    partial.unlink(missing_ok=True)


def read_lines(path):
  """The lines of a text file (plain or .gz) or of stdin ('-' or None), split on "\n" only.

  As tf.data.TextLineDataset reads training files: str.splitlines would also split
  at U+2028, form feeds and other separators found in web text and misalign
  parallel files. A "\r" before a "\n" is dropped; bytes that are not UTF-8
  become U+FFFD rather than failing the file.
  """
  if path in (None, "-"):
    data = sys.stdin.buffer.read()
  else:
    path = pathlib.Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
      data = f.read()
  lines = data.decode("utf-8", errors="replace").split("\n")
  if lines and lines[-1] == "":
    lines.pop()   # the newline that ends the last line
  return [line.rstrip("\r") for line in lines]
