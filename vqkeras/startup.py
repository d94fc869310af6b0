"""A quiet start for the command-line tools, examples and benchmarks.

TensorFlow writes lines to the process' stderr from C++ that no environment variable
removes (the ones before absl's logging starts: oneDNN, CUDA drivers), then more while it
finds its devices (cuInit) and runs (oneDNN's integer fallback); SentencePiece adds one at
every load of a vocabulary trained with its "identity" rules (earlier runs' vocabularies).
`quiet()` drops exactly these known lines from file descriptor 2 and passes every other
line on, so a warning that matters stays visible. It must run before TensorFlow loads.

The user who asks for logs gets them all: `--verbosity` (or `-v`) on the command line, or
TF_CPP_MIN_LOG_LEVEL=0 in the environment, turns the filter off. A user who asks for
less (TF_CPP_MIN_LOG_LEVEL=1, 2 or 3, the usual way to silence TensorFlow) gets the filter
and their level, so asking for silence is never louder than asking for nothing.

This module imports no TensorFlow.
"""

import atexit
import os
import re
import sys
import threading

# Each one is a line TensorFlow or SentencePiece writes whatever the program does.
NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .* rebuild TensorFlow"
    rb"|[IWE]\d{4} [\d:. ]+\d+ \S+\.cc:\d+\] (oneDNN custom operations are on"
    rb"|Could not find cuda drivers"
    rb"|This TensorFlow binary is optimized to use available CPU instructions"
    rb"|failed call to cuInit"
    rb"|oneDNN supports DT_INT(32|64) only"
    rb"|Unable to register cu\w+ factory"
    rb"|computation placer already registered)"
    rb"|normalizer\.cc\(\d+\) LOG\(INFO\) precompiled_charsmap is empty)")

# In the environment of a process that quiet() filters and of its children: their
# TF_CPP_MIN_LOG_LEVEL is ours, not the user's.
SET_BY_QUIET = "VQKERAS_QUIET_SET_TF_CPP_MIN_LOG_LEVEL"

_filter = None


def user_asks_for_logs(argv=None, environ=None):
  """Whether the command line or the environment asks for TensorFlow's own lines."""
  argv = sys.argv[1:] if argv is None else argv
  environ = os.environ if environ is None else environ
  flags = ("--verbosity", "-v", "--v")
  user_set_level = "TF_CPP_MIN_LOG_LEVEL" in environ and SET_BY_QUIET not in environ
  wants_all = user_set_level and environ["TF_CPP_MIN_LOG_LEVEL"].strip() in ("", "0")
  return wants_all or any(
      arg == flag or arg.startswith(flag + "=") for arg in argv for flag in flags)


def is_quiet():
  """Whether `quiet()` is filtering this process' stderr."""
  return _filter is not None


def quiet():
  """Drops TensorFlow's and SentencePiece's known noise from stderr, unless asked for logs."""
  global _filter
  if _filter is None and not user_asks_for_logs():
    # Hides TensorFlow's C++ INFO and WARNING lines once its logging starts (errors stay,
    # unless the user hid them too), in child processes too, which quiet themselves.
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "") if SET_BY_QUIET not in os.environ else ""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = level if level in ("2", "3") else "2"
    os.environ[SET_BY_QUIET] = "1"
    _filter = _LineFilter(2, NOISE)
    atexit.register(_filter.close)


class _LineFilter:
  """Routes file descriptor `fd` through a pipe; a thread passes on the lines that are not noise.

  The descriptor itself is replaced, so C++ writes, Python's sys.stderr and child
  processes that inherit it all pass through. `close` restores it and waits for the
  last lines.
  """

  def __init__(self, fd, noise):
    self._fd = fd
    self._noise = noise
    sys.stderr.flush()
    self._original = os.dup(fd)
    read, write = os.pipe()
    os.dup2(write, fd)
    os.close(write)
    self._thread = threading.Thread(target=self._forward, args=(read, os.dup(self._original)),
                                    name="stderr-filter", daemon=True)
    self._thread.start()

  def _forward(self, read, out):
    with os.fdopen(read, "rb") as pipe, os.fdopen(out, "wb", buffering=0) as original:
      for line in pipe:   # ends when the last writer closes the pipe
        if self._noise.match(line):
          continue
        try:
          original.write(line)
        except OSError:
          pass   # keep draining: a full pipe would block every writer of stderr

  def close(self):
    try:
      sys.stderr.flush()
    except (OSError, ValueError):
      pass
    os.dup2(self._original, self._fd)   # closes our end of the pipe
    os.close(self._original)
    # Children that inherited the pipe may hold it open: do not wait for them.
    self._thread.join(timeout=2.0)
