"""The image decoder's likelihood of each sub-pixel's 256 values.

Two choices, each a small class the image model holds (`ImageVQVAE`):
- `CategoricalPixels`: a 256-way categorical per sub-pixel (3 x 256 output channels),
  the likelihood of van den Oord et al. 2017's bits/dim.
- `LogisticMixturePixels`: a mixture of n discretized logistics per sub-pixel (the
  likelihood of PixelCNN++, Salimans et al. 2017, without its coupling of the colour
  channels): 3 x 3n output channels, 90 instead of 768 for n = 10.
Both are probability mass functions over the 256 values of a sub-pixel, so the
reconstruction NLL in bits/dim stays an exact bound.
"""

import tensorflow as tf

from vqkeras.distributions import distributions

PIXEL_VALUES = 256


def _per_sub_pixel(outputs, parameters):
  """Decoder outputs `[batch, H, W, 3 * parameters]` as `[batch, H, W, 3, parameters]`."""
  return tf.reshape(tf.cast(outputs, tf.float32),
                    tf.concat([tf.shape(outputs)[:-1], [3, parameters]], 0))


class CategoricalPixels:
  """A 256-way categorical per sub-pixel."""

  name = "categorical"
  output_channels = 3 * PIXEL_VALUES

  def log_probs(self, outputs):
    """float32 `[batch, H, W, 3, 256]`: log p of every value of every sub-pixel."""
    return tf.nn.log_softmax(_per_sub_pixel(outputs, PIXEL_VALUES))

  def nll(self, outputs, images):
    """-log p(images) in nats per image `[batch]`; images uint8 `[batch, H, W, 3]`."""
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(
        tf.cast(images, tf.int32), _per_sub_pixel(outputs, PIXEL_VALUES))
    return tf.reduce_sum(nll, axis=[1, 2, 3])

  def mean(self, outputs):
    """The expected value of each sub-pixel, float32 `[batch, H, W, 3]` in [0, 255]."""
    probabilities = tf.exp(self.log_probs(outputs))
    return tf.reduce_sum(probabilities * tf.range(PIXEL_VALUES, dtype=tf.float32), -1)

  def mode(self, outputs):
    """The most likely value of each sub-pixel, uint8 `[batch, H, W, 3]`."""
    return tf.cast(tf.argmax(_per_sub_pixel(outputs, PIXEL_VALUES), axis=-1), tf.uint8)


class LogisticMixturePixels:
  """A mixture of `num_mixtures` logistics per sub-pixel, discretized to the 256 values.

  Component k has weight softmax(a)_k, location mu_k = 127.5 (1 + tanh(b_k)) and scale
  s_k = 127.5 exp(max(c_k, -7)) in pixel units; the value v has probability
  F_k(v + 1/2) - F_k(v - 1/2) (F_k the logistic CDF), with the tails folded into the
  edges: F_k(1/2) for 0 and 1 - F_k(254.5) for 255 (tfd.QuantizedDistribution with
  low=0, high=255), so the 256 probabilities sum to 1.
  """

  name = "logistic_mixture"

  def __init__(self, num_mixtures):
    if not isinstance(num_mixtures, int) or num_mixtures < 1:
      raise ValueError(f"LogisticMixturePixels: invalid num_mixtures={num_mixtures!r}; "
                       f"expected a positive integer.")
    self.num_mixtures = num_mixtures
    self.output_channels = 3 * 3 * num_mixtures

  def distribution(self, outputs):
    """The mixture of every sub-pixel, batch shape `[batch, H, W, 3]`."""
    tfd = distributions()
    weights, locations, log_scales = tf.split(_per_sub_pixel(outputs, 3 * self.num_mixtures),
                                              3, axis=-1)
    half = (PIXEL_VALUES - 1) / 2.0
    # QuantizedDistribution gives value v the mass of (v - 1, v]: the logistic is shifted
    # by -1/2 so that v gets (v - 1/2, v + 1/2].
    logistic = tfd.Logistic(loc=half * (1.0 + tf.tanh(locations)) - 0.5,
                            scale=half * tf.exp(tf.maximum(log_scales, -7.0)))
    components = tfd.QuantizedDistribution(logistic, low=0.0, high=PIXEL_VALUES - 1.0)
    return tfd.MixtureSameFamily(tfd.Categorical(logits=weights), components)

  def log_probs(self, outputs):
    """float32 `[batch, H, W, 3, 256]`: log p of every value of every sub-pixel."""
    values = tf.range(PIXEL_VALUES, dtype=tf.float32)[:, None, None, None, None]
    log_probs = self.distribution(outputs).log_prob(values)   # [256, batch, H, W, 3]
    return tf.transpose(log_probs, [1, 2, 3, 4, 0])

  def nll(self, outputs, images):
    """-log p(images) in nats per image `[batch]`; images uint8 `[batch, H, W, 3]`."""
    log_prob = self.distribution(outputs).log_prob(tf.cast(images, tf.float32))
    return -tf.reduce_sum(log_prob, axis=[1, 2, 3])

  def mean(self, outputs):
    """The expected value of each sub-pixel, float32 `[batch, H, W, 3]` in [0, 255]."""
    probabilities = tf.exp(self.log_probs(outputs))
    return tf.reduce_sum(probabilities * tf.range(PIXEL_VALUES, dtype=tf.float32), -1)

  def mode(self, outputs):
    """The most likely value of each sub-pixel, uint8 `[batch, H, W, 3]`."""
    return tf.cast(tf.argmax(self.log_probs(outputs), axis=-1), tf.uint8)


def pixel_likelihood(name, num_mixtures=10):
  """The likelihood called `name`: "categorical" or "logistic_mixture"."""
  if name == "categorical":
    return CategoricalPixels()
  if name == "logistic_mixture":
    return LogisticMixturePixels(num_mixtures)
  raise ValueError(f"Unknown pixel likelihood {name!r}; expected categorical or "
                   f"logistic_mixture.")
