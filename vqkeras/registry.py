"""Registries of problems and hyper-parameter sets, looked up by name as in Tensor2Tensor.

    @registry.register_problem
    class ImageCifar10(ImageProblem):
      name = "image_cifar10"

    @registry.register_hparams
    def vq_em_cifar(): ...                      # registered as "vq_em_cifar"

Importing `vqkeras.problems` and `vqkeras.hparams` registers everything they define.
Models are registered by their hyper-parameter class (vqkeras/models/base.py).
"""

import difflib


class Registry:
  """Names to objects, with errors that list the nearest valid names."""

  def __init__(self, kind):
    self.kind = kind
    self._entries = {}

  def register(self, name, value):
    if name in self._entries:
      raise ValueError(f"The {self.kind} {name!r} is registered twice.")
    self._entries[name] = value
    return value

  def __contains__(self, name):
    return name in self._entries

  def __getitem__(self, name):
    if name not in self._entries:
      raise KeyError(unknown_name_message(self.kind, name, self._entries))
    return self._entries[name]

  def names(self):
    return sorted(self._entries)


def unknown_name_message(kind, name, choices):
  """"Unknown X 'name'; did you mean ...? Valid: ..." for any list of choices."""
  choices = sorted(choices)
  close = difflib.get_close_matches(str(name), choices, n=3, cutoff=0.5)
  hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
  return f"Unknown {kind} {name!r}.{hint} Valid choices: {', '.join(choices)}."


PROBLEMS = Registry("problem")
HPARAMS = Registry("hparams set")


def register_problem(cls):
  """Class decorator: registers a Problem subclass under its class attribute `name`."""
  PROBLEMS.register(cls.name, cls)
  return cls


def register_hparams(fn):
  """Function decorator: registers a function returning an HParams record under its name."""
  HPARAMS.register(fn.__name__, fn)
  return fn


def _load_all():
  # The modules register on import.
  import vqkeras.problems  # pylint: disable=import-outside-toplevel,unused-import
  import vqkeras.hparams  # pylint: disable=import-outside-toplevel,unused-import


def problem(name):
  """The problem registered as `name`, an instance."""
  _load_all()
  try:
    return PROBLEMS[name]()
  except KeyError as error:
    raise ValueError(error.args[0]) from None


def hparams(name, overrides=""):
  """The hyper-parameter set registered as `name`, with `overrides` ("a=1,b=x") applied."""
  _load_all()
  try:
    record = HPARAMS[name]()
  except KeyError as error:
    raise ValueError(error.args[0]) from None
  return record.override(overrides) if overrides else record
