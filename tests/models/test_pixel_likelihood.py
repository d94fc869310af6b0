"""The pixel likelihoods against float64 NumPy: probability mass functions over 256 values."""

import numpy as np
import pytest
import scipy.special
import tensorflow as tf

from vqkeras.models.pixel_likelihood import (CategoricalPixels, LogisticMixturePixels,
                                             pixel_likelihood)


def logistic_mixture_reference(outputs, num_mixtures):
  """log p of every value `[..., 3, 256]` (float64), written from the definition."""
  params = np.asarray(outputs, np.float64).reshape(outputs.shape[:-1] + (3, 3 * num_mixtures))
  weights, locations, log_scales = np.split(params, 3, axis=-1)
  log_weights = weights - scipy.special.logsumexp(weights, axis=-1, keepdims=True)
  mu = 127.5 * (1 + np.tanh(locations))[..., None]
  s = 127.5 * np.exp(np.maximum(log_scales, -7.0))[..., None]
  v = np.arange(256, dtype=np.float64)
  a = np.where(v == 0, -np.inf, (v - 0.5 - mu) / s)     # the bin (v - 1/2, v + 1/2],
  b = np.where(v == 255, np.inf, (v + 0.5 - mu) / s)    # tails folded into the edges
  log_sigmoid = lambda x: -np.logaddexp(0.0, -x)   # pylint: disable=unnecessary-lambda-assignment
  with np.errstate(divide="ignore", invalid="ignore"):
    # sigma(b) - sigma(a), in log space on the side of the mode where it does not cancel.
    below = log_sigmoid(b) + np.log1p(-np.exp(log_sigmoid(a) - log_sigmoid(b)))
    above = log_sigmoid(-a) + np.log1p(-np.exp(log_sigmoid(-b) - log_sigmoid(-a)))
  log_mass = np.where(a + b < 0, below, above)
  return scipy.special.logsumexp(log_weights[..., None] + log_mass, axis=-2)


def test_the_logistic_mixture_is_a_probability_mass_function_over_256_values():
  rng = np.random.default_rng(0)
  likelihood = LogisticMixturePixels(3)
  outputs = rng.normal(size=(2, 4, 4, 27)) * 2.0
  outputs[0, 0, 0, 18:27] = -9.0   # tiny scales: nearly all mass on one value
  log_probs = likelihood.log_probs(tf.constant(outputs, tf.float32)).numpy()
  assert log_probs.shape == (2, 4, 4, 3, 256)
  np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-4)
  want = logistic_mixture_reference(outputs, 3)
  likely = want > -20   # values whose probability float32 resolves
  np.testing.assert_allclose(log_probs[likely], want[likely], rtol=2e-3, atol=2e-3)
  images = rng.integers(0, 256, size=(2, 4, 4, 3))
  nll = likelihood.nll(tf.constant(outputs, tf.float32), tf.constant(images, tf.uint8))
  picked = np.take_along_axis(want, images[..., None], axis=-1)[..., 0]
  np.testing.assert_allclose(nll.numpy(), -picked.sum(axis=(1, 2, 3)), rtol=1e-4)
  mean = (np.exp(want) * np.arange(256)).sum(-1)
  np.testing.assert_allclose(likelihood.mean(tf.constant(outputs, tf.float32)).numpy(), mean,
                             rtol=1e-3, atol=1e-2)


def test_the_categorical_is_the_softmax_over_256_values():
  rng = np.random.default_rng(1)
  outputs = rng.normal(size=(1, 2, 2, 768))
  likelihood = CategoricalPixels()
  want = scipy.special.log_softmax(outputs.reshape(1, 2, 2, 3, 256), axis=-1)
  np.testing.assert_allclose(likelihood.log_probs(tf.constant(outputs, tf.float32)).numpy(),
                             want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(likelihood.mode(tf.constant(outputs, tf.float32)).numpy(),
                                want.argmax(-1))


def test_bad_likelihoods_are_named():
  with pytest.raises(ValueError, match="num_mixtures=0"):
    LogisticMixturePixels(0)
  with pytest.raises(ValueError, match="Unknown pixel likelihood 'gaussian'"):
    pixel_likelihood("gaussian")
