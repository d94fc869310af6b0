"""GumbelSoftmaxQuantizer against float64 NumPy: argmax codes, the KL to the uniform
prior, the Gumbel-max property of its samples, replicas, round trips."""

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from replicas import per_replica
from round_trip import check_round_trips
from vqkeras.layers import GumbelSoftmaxQuantizer


def logits_reference(layer, x):
  kernel, bias = (v.numpy().astype(np.float64) for v in layer.to_logits.weights)
  return np.asarray(x, np.float64) @ kernel + bias


def test_inference_gives_the_argmax_code_and_the_kl_to_uniform(cifar_patches):
  layer = GumbelSoftmaxQuantizer(16, kl_weight=0.5, seed=1)
  x = cifar_patches[:120].reshape(4, 30, 48)
  mask = np.arange(120).reshape(4, 30) % 3 != 0
  out = layer(x, mask=mask, return_codes=True)
  logits = logits_reference(layer, x.reshape(-1, 48))
  codes = logits.argmax(-1)
  np.testing.assert_array_equal(out.codes.numpy().reshape(-1), codes)
  np.testing.assert_allclose(out.quantized.numpy().reshape(-1, 48),
                             layer.codebook.numpy()[codes], atol=1e-6)
  np.testing.assert_allclose(layer.decode(out.codes).numpy(), out.quantized.numpy(),
                             atol=1e-6)
  np.testing.assert_array_equal(layer.encode(x).numpy(), out.codes.numpy())
  q = np.exp(logits - logits.max(-1, keepdims=True))
  q /= q.sum(-1, keepdims=True)
  kl = np.log(16) + (q * np.log(q)).sum(-1)
  assert len(layer.losses) == 1
  np.testing.assert_allclose(float(layer.losses[0]), 0.5 * kl[mask.reshape(-1)].mean(),
                             rtol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_logits_codebook_and_kl_float32(policy, cifar_patches):
  """The inputs arrive in the compute dtype; logits, codebook, samples and the KL stay
  float32 (the argmax against float64 logits of the same inputs), the output is cast."""
  layer = GumbelSoftmaxQuantizer(16, kl_weight=0.5, dtype=policy, seed=1)
  compute_dtype = keras.mixed_precision.Policy(policy).compute_dtype
  x = cifar_patches[:200]
  out = layer(x, training=True, return_codes=True)
  assert out.quantized.dtype == compute_dtype
  assert layer.logits(tf.cast(x, compute_dtype)).dtype == "float32"
  assert layer.embeddings.dtype == "float32"
  assert all(v.dtype == "float32" for v in layer.to_logits.weights)
  x_seen = tf.cast(tf.cast(x, compute_dtype), tf.float32).numpy()   # what the layer gets
  np.testing.assert_array_equal(out.codes.numpy()[:, 0],
                                logits_reference(layer, x_seen).argmax(-1))
  assert len(layer.losses) == 1 and layer.losses[0].dtype == "float32"
  assert np.isfinite(float(layer.losses[0]))


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_samples_follow_the_softmax_of_the_logits_at_any_temperature(temperature):
  """Gumbel-max: the argmax of a relaxed sample is a draw from softmax(logits), whatever
  tau; the straight-through output is the drawn code's vector."""
  layer = GumbelSoftmaxQuantizer(4, temperature=temperature, seed=3)
  layer.build((None, 2))
  logits = np.array([1.0, 0.0, -1.0, 0.5])
  layer.to_logits.kernel.assign(np.zeros((2, 4), np.float32))
  layer.to_logits.bias.assign(logits.astype(np.float32))
  out = layer(np.zeros((20000, 2), np.float32), training=True).numpy()
  drawn = np.argmin(((out[:, None] - layer.codebook.numpy()[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_allclose(out, layer.codebook.numpy()[drawn], atol=1e-6)
  probabilities = np.exp(logits) / np.exp(logits).sum()
  _, p_value = scipy.stats.chisquare(np.bincount(drawn, minlength=4), 20000 * probabilities)
  assert p_value > 1e-3


def test_straight_through_gradient_is_the_relaxed_samples(cifar_patches):
  """With straight_through the forward pass is hard, the gradient the relaxed sample's:
  it reaches the logits' projection, the codebook and the inputs; without it the output
  is a mixture of code vectors."""
  x = tf.constant(cifar_patches[:64])
  for straight_through in (True, False):
    layer = GumbelSoftmaxQuantizer(8, straight_through=straight_through, kl_weight=0.0, seed=5)
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x, training=True)
      loss = tf.reduce_sum(tf.square(y))
    variables = [x, layer.to_logits.kernel, layer.embeddings]
    for grad in tape.gradient(loss, variables):
      assert np.abs(grad.numpy()).max() > 0
    distances = ((y.numpy()[:, None] - layer.codebook.numpy()[None]) ** 2).sum(-1).min(1)
    assert (distances < 1e-10).all() == straight_through


def test_mirrored_replicas_record_the_usage_and_loss_of_the_global_batch(cifar_patches,
                                                                          mirrored_strategy):
  x = cifar_patches[:128]
  single = GumbelSoftmaxQuantizer(16, kl_weight=1.0, seed=2)
  single.build(x.shape)
  single(x, training=True)
  with mirrored_strategy.scope():
    mirrored = GumbelSoftmaxQuantizer(16, kl_weight=1.0, seed=2)
    mirrored.build(x.shape)
  for name in ("kernel", "bias"):
    getattr(mirrored.to_logits, name).assign(getattr(single.to_logits, name))
  mirrored.embeddings.assign(single.embeddings)

  @tf.function
  def step(x):
    def replica(x):
      mirrored(x, training=True)
      return mirrored.losses[0]
    return mirrored_strategy.run(replica, args=(x,))

  losses = step(per_replica(mirrored_strategy, x))
  # Keras sums the replicas' losses, each scaled by 1/replicas: the global mean.
  np.testing.assert_allclose(sum(v.numpy() for v in losses.values) / 2,
                             float(single.losses[0]), rtol=1e-5)
  for name in ("batch_counts", "last_used", "num_updates", "batch_perplexity"):
    want = getattr(single, name).numpy()
    for value in getattr(mirrored, name).value.values:
      np.testing.assert_allclose(value.numpy(), want, rtol=1e-6, err_msg=name)


def test_keras_file_and_saved_model_round_trips(tmp_path, cifar_patches):
  check_round_trips(GumbelSoftmaxQuantizer(16, seed=4, name="gumbel"), 8, cifar_patches,
                    tmp_path)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(codebook_size=1), "codebook_size"),
    (dict(codebook_size=8, temperature=0.0), "temperature"),
    (dict(codebook_size=8, kl_weight=-1.0), "kl_weight"),
    (dict(codebook_size=8, usage_window=0), "usage_window"),
])
def test_bad_arguments_name_the_argument(kwargs, argument):
  with pytest.raises(ValueError, match=f"invalid {argument}="):
    GumbelSoftmaxQuantizer(**kwargs)


def test_bad_inputs_are_refused_with_a_clear_message():
  layer = GumbelSoftmaxQuantizer(8)
  layer(np.zeros((2, 16), np.float32))
  with pytest.raises(ValueError, match="built for inputs of depth 16, got last dimension 12"):
    layer(np.zeros((2, 12), np.float32))
  with pytest.raises(ValueError, match="float inputs.*int32"):
    layer(np.zeros((2, 16), np.int32))
  with pytest.raises(ValueError, match="codes of shape"):
    layer.decode(np.zeros((2, 3), np.int32))
  keras.backend.clear_session()
