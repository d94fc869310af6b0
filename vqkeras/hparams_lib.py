"""Hyper-parameter sets: plain, typed, documented records.

A family is a frozen dataclass whose fields are the hyper-parameters with their
defaults; a registered set is a function that returns one, and a set derives
from another by naming only what it changes:

    @registry.register_hparams
    def vq_em_small():
      return vq_em().derive(hidden_size=256, num_layers=3)

`override("a=1,b=x")` applies the command line's --hparams_overrides with type
checking.
"""

import dataclasses
from typing import ClassVar

from vqkeras import registry


class HParamsError(ValueError):
  """A wrong hyper-parameter name or value, with a message that says how to fix it."""


@dataclasses.dataclass(frozen=True)
class HParams:
  """Base of every hyper-parameter family. Subclasses add fields and extend `validate`.

  The fields here are the trainer's, the same in every family.
  """

  # Fields added after runs were recorded with this family, each with the value that
  # reproduces such a run (what the code did before the field existed), which need
  # not be the field's default. A subclass extends its parent's.
  ADDED_FIELDS: ClassVar[dict] = {"clip_grad_norm": 0.0}

  clip_grad_norm: float = 0.0   # > 0: the global batch's gradient clipped to this norm

  def __post_init__(self):
    self.validate()

  def validate(self):
    """Raises HParamsError for values out of range; subclasses extend it."""
    check(self.clip_grad_norm >= 0.0, "clip_grad_norm", self.clip_grad_norm,
          "a float >= 0 (0: no clipping)")

  def decoding_defaults(self):
    """The decoding settings (`vqkeras.decoding.DecodeHParams` fields) these
    hyper-parameters set; none by default."""
    return {}

  @classmethod
  def field_names(cls):
    return [field.name for field in dataclasses.fields(cls)]

  def derive(self, **changes):
    """A copy with `changes` applied; unknown names are refused."""
    for name in changes:
      if name not in self.field_names():
        raise HParamsError(registry.unknown_name_message(
            f"hyper-parameter of {type(self).__name__}", name, self.field_names()))
    return dataclasses.replace(self, **changes)

  def override(self, overrides):
    """Applies "name=value,name=value" with each value parsed as its field's type."""
    changes = {}
    for item in filter(None, (part.strip() for part in overrides.split(","))):
      if "=" not in item:
        raise HParamsError(f"Bad --hparams_overrides item {item!r}: expected name=value, "
                           f"as in 'learning_rate=0.001,num_layers=2'.")
      name, text = (part.strip() for part in item.split("=", 1))
      field_types = {field.name: field.type for field in dataclasses.fields(self)}
      if name not in field_types:
        raise HParamsError(registry.unknown_name_message(
            f"hyper-parameter of {type(self).__name__}", name, field_types))
      changes[name] = _parse(name, text, field_types[name])
    return self.derive(**changes)

  @classmethod
  def recorded_values(cls, values):
    """The {name: value} a run recorded, with the ADDED_FIELDS it predates filled in."""
    return {**cls.ADDED_FIELDS, **values}

  def differences(self, other):
    """{name: (ours, theirs)} for every field whose values differ."""
    return value_differences(dataclasses.asdict(self), dataclasses.asdict(other))


def value_differences(ours, theirs):
  """{name: (ours, theirs)} for every name of either dict whose values differ."""
  return {k: (ours.get(k), theirs.get(k)) for k in sorted(set(ours) | set(theirs))
          if ours.get(k) != theirs.get(k)}


def _parse(name, text, kind):
  try:
    if kind is bool:
      lowered = text.lower()
      if lowered not in ("true", "false", "1", "0"):
        raise ValueError
      return lowered in ("true", "1")
    if kind is int:
      return int(text)
    if kind is float:
      return float(text)
    if kind is str:
      return text
  except ValueError:
    pass
  else:
    raise HParamsError(f"Hyper-parameter {name} has unsupported type {kind}.")
  expected = {bool: "true or false", int: "an integer", float: "a number"}[kind]
  raise HParamsError(f"Bad value for hyper-parameter {name}: {text!r} is not {expected}.")


def check(condition, name, value, expected):
  """Raises HParamsError naming the field and what it accepts."""
  if not condition:
    raise HParamsError(f"Bad value for hyper-parameter {name}: {value!r}; expected {expected}.")
