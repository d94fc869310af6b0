"""LookupFreeQuantizer (LFQ and BSQ) against float64 NumPy statements of the papers'
equations: codes, corners, the entropy terms computed over every code directly."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from replicas import assert_replicas_hold, per_replica, train_alone_and_mirrored
from round_trip import check_round_trips
from vqkeras.layers import LookupFreeQuantizer
from vqkeras.layers.code_usage import MAX_TRACKED_CODES


def encoder_outputs(cifar_patches, depth, scale=1.0):
  """Real CIFAR patches through a fixed random projection to `depth` channels."""
  rng = np.random.default_rng(0)
  x = cifar_patches.astype(np.float64)
  x = (x - x.mean(0)) / x.std(0)
  return x @ rng.normal(size=(x.shape[1], depth)) * scale / np.sqrt(x.shape[1])


def reference(z, spherical):
  """Corners and indices in float64: sign per channel (after l2 normalization and with
  1/sqrt(d) under BSQ), index sum_i [q_i > 0] 2^i."""
  d = z.shape[-1]
  x = z / np.linalg.norm(z, axis=-1, keepdims=True) if spherical else z
  scale = 1 / np.sqrt(d) if spherical else 1.0
  quantized = np.where(x > 0, scale, -scale)
  index = ((x > 0).astype(np.int64) << np.arange(d)).sum(-1)
  return x, quantized, index


def reference_entropies(x, scale, temperature, valid):
  """(mean per-position entropy, exact batch entropy, factorized batch entropy) from the
  softmax over all 2^d corners, p(k|x) = softmax(-||x - c_k||^2 / T)."""
  d = x.shape[-1]
  corners = np.where((np.arange(2 ** d)[:, None] >> np.arange(d)) & 1, scale, -scale)
  logits = -((x[:, None, :] - corners[None]) ** 2).sum(-1) / temperature
  logits -= logits.max(-1, keepdims=True)
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  p = p[valid]

  def h(q):
    return -(q * np.log(np.maximum(q, 1e-300))).sum(-1)
  bits_one = np.stack([p[:, ((np.arange(2 ** d) >> i) & 1) == 1].sum(-1) for i in range(d)], -1)
  mean_bits = bits_one.mean(0)
  factorized = h(np.stack([mean_bits, 1 - mean_bits], -1)).sum()
  return h(p).mean(), h(p.mean(0)), factorized


@pytest.mark.parametrize("spherical", [False, True])
def test_codes_are_the_signs_and_decode_to_the_corners(cifar_patches, spherical):
  z = encoder_outputs(cifar_patches, 10)
  layer = LookupFreeQuantizer(10, spherical=spherical)
  out = layer(z.astype(np.float32), return_codes=True)
  _, quantized, index = reference(z, spherical)
  assert out.codes.shape[-1] == 1 == layer.codes_per_position
  np.testing.assert_array_equal(out.codes.numpy()[:, 0], index)
  np.testing.assert_allclose(out.quantized.numpy(), quantized, rtol=1e-6)
  np.testing.assert_allclose(layer.decode(out.codes).numpy(), quantized, rtol=1e-6)
  np.testing.assert_array_equal(layer.encode(z.astype(np.float32)).numpy(), out.codes.numpy())
  if spherical:   # BSQ's corners lie on the unit sphere
    np.testing.assert_allclose(np.linalg.norm(out.quantized.numpy(), axis=-1), 1.0, rtol=1e-6)
  all_codes = np.arange(2 ** 10)[:, None]
  np.testing.assert_array_equal(layer.encode(layer.decode(all_codes)).numpy(), all_codes)


@pytest.mark.parametrize("spherical, temperature", [(False, 1.0), (True, 0.05)])
@pytest.mark.parametrize("entropy", ["exact", "factorized"])
def test_entropy_loss_against_every_code_directly(cifar_patches, spherical, temperature,
                                                  entropy):
  """Over the valid positions only; the per-position term is exact in both modes."""
  d = 7
  z = encoder_outputs(cifar_patches[:300], d)
  valid = np.arange(len(z)) % 3 != 0
  layer = LookupFreeQuantizer(d, spherical=spherical, temperature=temperature,
                              entropy=entropy, entropy_weight=0.3, diversity_weight=0.7,
                              beta=0.0)
  layer(z.astype(np.float32), training=True, mask=valid)
  x, _, _ = reference(z, spherical)
  scale = 1 / np.sqrt(d) if spherical else 1.0
  per_position, exact, factorized = reference_entropies(x, scale, temperature, valid)
  batch = exact if entropy == "exact" else factorized
  assert factorized >= exact - 1e-9   # the factorized value bounds the exact one
  np.testing.assert_allclose(float(layer.losses[1]), 0.3 * (per_position - 0.7 * batch),
                             rtol=1e-4, atol=1e-6)


def test_codebooks_quantize_their_groups_of_channels_alone(cifar_patches):
  """num_codebooks = 3 under BSQ: three groups of 5 channels, each on its own sphere,
  codes [..., 3]; the entropy terms the means of the groups' (float64 references)."""
  z = encoder_outputs(cifar_patches[:240], 15)
  valid = np.arange(len(z)) % 4 != 0
  layer = LookupFreeQuantizer(5, spherical=True, num_codebooks=3, temperature=0.1,
                              entropy_weight=1.0, beta=0.0)
  out = layer(z.astype(np.float32).reshape(-1, 4, 15), training=True,
              mask=valid.reshape(-1, 4), return_codes=True)
  assert out.codes.shape == (60, 4, 3)
  codes, entropy = out.codes.numpy().reshape(-1, 3), 0.0
  for g in range(3):
    x, quantized, index = reference(z[:, 5 * g:5 * (g + 1)], True)
    np.testing.assert_array_equal(codes[:, g], index)
    np.testing.assert_allclose(out.quantized.numpy().reshape(-1, 15)[:, 5 * g:5 * (g + 1)],
                               quantized, rtol=1e-6)
    per_position, exact, _ = reference_entropies(x, 1 / np.sqrt(5), 0.1, valid)
    entropy += (per_position - exact) / 3
  np.testing.assert_allclose(float(layer.losses[1]), entropy, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(layer.encode(layer.decode(out.codes)).numpy(),
                                out.codes.numpy())
  assert layer.batch_counts.shape == (3, 32)


def test_commitment_loss_and_straight_through_gradient(cifar_patches):
  z = encoder_outputs(cifar_patches[:200], 6).astype(np.float32)
  valid = np.arange(len(z)) % 2 == 0
  layer = LookupFreeQuantizer(6, entropy_weight=0.0, beta=0.5)
  x = tf.constant(z)
  upstream = tf.random.stateless_normal(x.shape, [1, 2])
  with tf.GradientTape() as tape:
    tape.watch(x)
    out = tf.reduce_sum(layer(x, training=True, mask=valid) * upstream)
  _, quantized, _ = reference(z.astype(np.float64), False)
  commitment = ((z - quantized) ** 2).mean(-1)[valid].mean()
  np.testing.assert_allclose(float(layer.losses[0]), 0.5 * commitment, rtol=1e-5)
  np.testing.assert_array_equal(tape.gradient(out, x).numpy(), upstream.numpy())


def test_entropy_gradient_is_finite_when_probabilities_underflow(cifar_patches):
  """At T = 1e-4 most code probabilities are 0 in float32; the loss and its gradient
  stay finite."""
  x = tf.constant(encoder_outputs(cifar_patches[:64], 12, scale=5.0).astype(np.float32))
  for entropy in ("exact", "factorized"):
    layer = LookupFreeQuantizer(12, temperature=1e-4, entropy=entropy)
    with tf.GradientTape() as tape:
      tape.watch(x)
      layer(x, training=True)
      loss = tf.add_n(layer.losses)
    assert np.isfinite(float(loss))
    assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))


def test_the_entropy_loss_spreads_the_codes(cifar_patches):
  """A projection that starts with nearly one direction for every bit (few codes), trained
  on the entropy loss alone, spreads the batch over many codes."""
  z = encoder_outputs(cifar_patches[:512], 16).astype(np.float32)
  layer = LookupFreeQuantizer(8, temperature=0.1, beta=0.0, entropy_weight=1.0)
  rng = np.random.default_rng(3)
  kernel = np.outer(rng.normal(size=16), np.ones(8)) + 0.01 * rng.normal(size=(16, 8))
  project = keras.layers.Dense(8, kernel_initializer=keras.initializers.Constant(kernel))
  project.build((None, 16))
  optimizer = keras.optimizers.Adam(0.05)
  used = []
  for _ in range(60):
    with tf.GradientTape() as tape:
      out = layer(project(z), training=True, return_codes=True)
      loss = tf.add_n(layer.losses)
    optimizer.apply(tape.gradient(loss, project.trainable_variables),
                    project.trainable_variables)
    used.append(len(np.unique(out.codes.numpy())))
  assert used[0] <= 4 and used[-1] >= 100   # of 256 codes, 512 positions


def test_large_code_counts_keep_no_per_code_state(cifar_patches):
  """2^40 codes: no [K] state; the health is the batch's distinct codes and their
  perplexity (NumPy unique), codes int64."""
  z = encoder_outputs(cifar_patches[:500], 40)
  valid = np.arange(len(z)) % 5 != 0
  layer = LookupFreeQuantizer(40, spherical=True)
  out = layer(z.astype(np.float32), training=True, mask=valid, return_codes=True)
  assert 2 ** 40 > MAX_TRACKED_CODES and not layer.tracks_codes
  assert sum(int(np.prod(w.shape)) for w in layer.weights) == 3   # three scalars
  assert out.codes.dtype == tf.int64
  _, _, index = reference(z, True)
  np.testing.assert_array_equal(out.codes.numpy()[:, 0], index)
  _, counts = np.unique(index[valid], return_counts=True)
  p = counts / counts.sum()
  health = layer.health()
  assert int(health["codes_used"]) == len(counts)
  assert int(health["dead_codes"]) == 2 ** 40 - len(counts)
  np.testing.assert_allclose(float(health["perplexity"]), np.exp(-(p * np.log(p)).sum()),
                             rtol=1e-4)
  assert layer.usage_histogram() is None


def test_2_to_the_18_codes_train_exactly_in_small_memory(cifar_patches):
  """The exact batch entropy of 2^18 codes through its two 2^9-code halves."""
  z = encoder_outputs(cifar_patches[:256], 18).astype(np.float32)
  layer = LookupFreeQuantizer(18)
  assert layer.exact_entropy
  x = tf.constant(z)
  with tf.GradientTape() as tape:
    tape.watch(x)
    layer(x, training=True)
    loss = tf.add_n(layer.losses)
  assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))
  assert int(layer.codes_used()) == len(np.unique(reference(z, False)[2]))


@pytest.mark.parametrize("entropy", ["exact", "factorized"])
def test_mirrored_replicas_compute_the_global_batch(cifar_patches, mirrored_strategy, entropy):
  """Two replicas: the losses (as the train step sums them) and the input gradients equal
  one device's on the global batch, and every replica records the global usage."""
  z = encoder_outputs(cifar_patches[:128], 8).astype(np.float32)
  valid = np.arange(len(z)) % 4 != 1
  upstream = np.random.default_rng(1).normal(size=z.shape).astype(np.float32)

  def loss_and_gradient(layer, x, mask, w, replicas):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x, training=True, mask=mask)
      loss = tf.reduce_sum(y * w) / len(z) + tf.add_n(layer.losses) / replicas
    return loss, tape.gradient(loss, x)

  single = LookupFreeQuantizer(8, temperature=0.5, entropy=entropy)
  want_loss, want_grad = loss_and_gradient(single, tf.constant(z), valid, upstream, 1)
  with mirrored_strategy.scope():
    mirrored = LookupFreeQuantizer(8, temperature=0.5, entropy=entropy)
    mirrored.build(z.shape)

  @tf.function
  def step(x, mask, w):
    return mirrored_strategy.run(
        lambda x, mask, w: loss_and_gradient(mirrored, x, mask, w, 2), args=(x, mask, w))

  losses, grads = step(*[per_replica(mirrored_strategy, a) for a in (z, valid, upstream)])
  np.testing.assert_allclose(sum(float(v) for v in losses.values), float(want_loss),
                             rtol=1e-5)
  np.testing.assert_allclose(np.concatenate([g.numpy() for g in grads.values]),
                             want_grad.numpy(), rtol=1e-4, atol=1e-7)
  assert_replicas_hold(single, mirrored, ("batch_counts", "last_used", "batch_perplexity"))


def test_mirrored_replicas_count_the_distinct_codes_of_the_global_batch(cifar_patches,
                                                                         mirrored_strategy):
  """Above 2^20 codes the health comes from the batch's distinct codes, gathered over the
  replicas: two replicas hold one device's count and perplexity of the global batch."""
  z = encoder_outputs(cifar_patches[:256], 24).astype(np.float32)
  valid = np.arange(len(z)) % 3 != 0
  single, mirrored = train_alone_and_mirrored(lambda: LookupFreeQuantizer(24),
                                              mirrored_strategy, z, valid)
  assert not mirrored.tracks_codes
  assert int(single.batch_codes_used) == len(np.unique(reference(z, False)[2][valid]))
  assert_replicas_hold(single, mirrored, ("batch_codes_used", "batch_perplexity", "num_updates"))


def test_mixed_precision_quantizes_in_float32(cifar_patches):
  z = tf.cast(tf.cast(encoder_outputs(cifar_patches[:200], 8), tf.bfloat16), tf.float32)
  plain = LookupFreeQuantizer(8)(z, training=True, return_codes=True)
  layer = LookupFreeQuantizer(8, dtype="mixed_bfloat16")
  mixed = layer(z, training=True, return_codes=True)
  assert mixed.quantized.dtype == tf.bfloat16
  assert all(loss.dtype == tf.float32 for loss in layer.losses)
  np.testing.assert_array_equal(mixed.codes.numpy(), plain.codes.numpy())


@pytest.mark.parametrize("spherical", [False, True])
def test_keras_file_and_saved_model_round_trips(tmp_path, cifar_patches, spherical):
  check_round_trips(LookupFreeQuantizer(6, spherical=spherical, name="lfq"), 6,
                    cifar_patches, tmp_path)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(num_bits=0), "num_bits"),
    (dict(num_bits=63), "num_bits"),
    (dict(num_bits=4.0), "num_bits"),
    (dict(num_bits=4, entropy_weight=-1), "entropy_weight"),
    (dict(num_bits=4, temperature=0), "temperature"),
    (dict(num_bits=4, entropy="approximate"), "entropy"),
    (dict(num_bits=4, beta=-0.1), "beta"),
])
def test_bad_arguments_name_the_argument(kwargs, argument):
  with pytest.raises(ValueError, match=f"invalid {argument}="):
    LookupFreeQuantizer(**kwargs)


def test_bad_inputs_are_refused_with_a_clear_message():
  layer = LookupFreeQuantizer(4)
  with pytest.raises(ValueError, match=r"num_bits=4 needs a last dimension of 4, got input "
                                       r"shape \(2, 6\).*Dense\(4\)"):
    layer(np.zeros((2, 6), np.float32))
  with pytest.raises(ValueError, match="float inputs.*int32"):
    layer(np.zeros((2, 4), np.int32))
  with pytest.raises(ValueError, match=r"codes of shape \[\.\.\., 1\]"):
    layer.decode(np.zeros((2, 2), np.int32))
