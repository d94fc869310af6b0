"""Writing files so that a reader never sees half of one."""

import contextlib
import os
import pathlib


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
