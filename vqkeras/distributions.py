"""TensorFlow Probability's distributions, loaded on first use (the import takes seconds)."""


def distributions():
  """The `tfp.distributions` module."""
  import tensorflow_probability as tfp  # pylint: disable=import-outside-toplevel
  return tfp.distributions
