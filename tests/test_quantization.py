"""The tensor math of vqkeras.quantization against NumPy, and the shape of its graphs."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

import numpy_reference as ref
from vqkeras import quantization
from vqkeras.layers import VectorQuantizer


def test_sampler_is_exact_when_most_draws_are_not_the_nearest_code():
  """A flat posterior sends most draws through the categorical branch."""
  rng = np.random.default_rng(0)
  codebook = rng.normal(size=(1, 40, 3)).astype(np.float32)
  point = rng.normal(size=(1, 3)).astype(np.float32)
  temperature = 8.0
  x = np.repeat(point, 3000, axis=0)[None]
  samples, nearest = quantization.sample_codes(
      tf.constant(x), tf.constant(codebook), 10, temperature, tf.constant([3, 4]), 1 << 20)
  probs = ref.posterior(point.astype(np.float64), codebook[0], temperature)[0]
  assert probs.max() < 0.2
  observed = np.bincount(samples.numpy().ravel(), minlength=40)
  _, p_value = scipy.stats.chisquare(observed, probs * observed.sum())
  assert p_value > 1e-3
  np.testing.assert_array_equal(nearest.numpy()[0], ref.nearest(x[0], codebook[0]))


def test_sampler_with_a_certain_posterior_returns_the_nearest_code():
  codebook = np.array([[[0.0], [100.0], [200.0]]], np.float32)
  x = np.array([[[1.0], [99.0], [205.0]]], np.float32)
  samples, _ = quantization.sample_codes(tf.constant(x), tf.constant(codebook), 4, 1.0,
                                         tf.constant([1, 2]), 1 << 20)
  np.testing.assert_array_equal(samples.numpy()[0], [[0] * 4, [1] * 4, [2] * 4])


def test_soft_targets_and_their_cross_entropy():
  rng = np.random.default_rng(1)
  samples = rng.integers(0, 6, size=(2, 3, 5))
  logits = rng.normal(size=(2, 3, 6)).astype(np.float32)
  targets = np.zeros((2, 3, 6))
  for index in np.ndindex(2, 3):
    for code in samples[index]:
      targets[index][code] += 1 / 5
  np.testing.assert_allclose(quantization.soft_targets(samples, 6).numpy(), targets, atol=1e-7)
  log_probs = logits - np.log(np.exp(logits.astype(np.float64)).sum(-1, keepdims=True))
  np.testing.assert_allclose(quantization.sample_cross_entropy(logits, samples).numpy(),
                             -(targets * log_probs).sum(-1), rtol=1e-5)


def test_perplexity_and_laplace_smoothing_by_hand():
  counts = np.array([[0.0, 1.0, 3.0], [2.0, 2.0, 0.0]], np.float32)
  # (c + 0.5) / (4 + 3 * 0.5) * 4
  np.testing.assert_allclose(quantization.laplace_smoothed_counts(counts, 0.5).numpy(),
                             [[2 / 5.5, 6 / 5.5, 14 / 5.5], [10 / 5.5, 10 / 5.5, 2 / 5.5]],
                             rtol=1e-6)
  first = np.exp(-(0.25 * np.log(0.25) + 0.75 * np.log(0.75)))
  np.testing.assert_allclose(float(quantization.perplexity(counts)), (first + 2.0) / 2,
                             rtol=1e-6)


def training_step_graph(update, rows, depth, codebook_size, num_samples):
  layer = VectorQuantizer(codebook_size, update=update, num_samples=num_samples, seed=0)
  layer.build((None, depth))

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(layer(x, training=True)) + tf.add_n(layer.losses)
    return tape.gradient(loss, x)
  return step.get_concrete_function(tf.TensorSpec([rows, depth])).graph


def all_ops(graph):
  ops = list(graph.get_operations())
  for function in graph._functions.values():   # while-loop and cond bodies
    ops += all_ops(function.graph) if hasattr(function, "graph") else []
  return ops


@pytest.mark.parametrize("update", ["ema", "soft_em"])
def test_update_has_no_one_hot_product_and_no_n_m_k_tensor(update):
  rows, depth, codebook_size, num_samples = 640, 24, 96, 10
  ops = all_ops(training_step_graph(update, rows, depth, codebook_size, num_samples))
  assert not [op for op in ops if op.type == "OneHot"]
  big_products = [op for op in ops if op.type in ("MatMul", "BatchMatMulV2")]
  # The one product is the distances: [rows, depth] x [depth, K] (per cache chunk).
  assert big_products
  for op in big_products:
    assert codebook_size in op.outputs[0].shape.as_list(), op
    assert op.inputs[0].shape[-1] == depth, op
  for op in ops:
    for tensor in op.outputs:
      shape = tensor.shape.as_list() if tensor.shape.rank is not None else []
      assert not (num_samples in shape and codebook_size in shape and
                  np.prod([s for s in shape if s]) >= rows * num_samples * codebook_size), \
          (op.name, shape)
