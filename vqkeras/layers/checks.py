"""The argument and input checks every layer of discrete codes makes, with one wording."""

import tensorflow as tf


def check_argument(layer_class, ok, argument, value, accepted):
  """Raises ValueError naming the layer class, the argument and what it accepts."""
  if not ok:
    raise ValueError(f"{layer_class}: invalid {argument}={value!r}; expected {accepted}.")


def float_inputs(layer_name, inputs):
  """`inputs` as a tensor; ValueError unless they are floats."""
  x = tf.convert_to_tensor(inputs)
  if not x.dtype.is_floating:
    raise ValueError(f"{layer_name} expects float inputs (the encoder output z_e), got "
                     f"dtype {x.dtype.name}; pass floats, or use `decode` for integer codes.")
  return x


def known_depth(layer_name, input_shape):
  """The last dimension of `input_shape`; ValueError when it is unknown."""
  depth = input_shape[-1]
  if depth is None:
    raise ValueError(f"{layer_name}: the last dimension of the input must be known; "
                     f"got input shape {tuple(input_shape)}.")
  return depth


def channels(layer_name, shape, depth, unit, setting):
  """ValueError unless `shape` ends in `depth` channels, one per `unit` of `setting`
  (e.g. "level", "levels=[8, 5, 5, 5]")."""
  shape = tf.TensorShape(shape)
  if shape.rank is None or shape.rank < 1 or shape[-1] != depth:
    raise ValueError(f"{layer_name}: inputs must have one channel per {unit}: {setting} "
                     f"needs a last dimension of {depth}, got input shape {shape}; project "
                     f"the inputs to {depth} channels first, e.g. with "
                     f"keras.layers.Dense({depth}).")


def integer_codes(layer_name, codes):
  """`codes` as a tensor; ValueError unless they are integers."""
  codes = tf.convert_to_tensor(codes)
  if codes.dtype.is_floating or codes.dtype == tf.bool:
    raise ValueError(f"{layer_name}.decode expects integer codes, got dtype {codes.dtype}.")
  return codes


def position_codes(layer_name, codes, width, named=None, note=""):
  """`codes` for `decode`: integers whose last dimension is a position's `width` codes;
  ValueError otherwise, naming the shape as `[..., named=width]` (or `[..., width]`) and
  `note`."""
  codes = integer_codes(layer_name, codes)
  if codes.shape.rank is None or codes.shape[-1] != width:
    expected = f"{named}={width}" if named else f"{width}"
    raise ValueError(f"{layer_name}.decode expects codes of shape [..., {expected}]{note}, got "
                     f"{codes.shape}.")
  return codes


def seed_or_random(seed):
  """`seed`, or a random int seed (drawn from TensorFlow's global generator) when None."""
  return seed if seed is not None else int(tf.random.uniform([], 0, 2**31 - 1, tf.int64))
