"""VectorQuantizer against float64 NumPy statements of the papers' equations."""

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

import numpy_reference as ref
from round_trip import check_round_trips
from vqkeras.layers import VectorQuantizer


def make_layer(codebook, **kwargs):
  """A built layer whose codebook is `codebook` ([K, D] or [B, K, D/B])."""
  codebook = np.asarray(codebook, np.float32)
  if codebook.ndim == 2:
    codebook = codebook[None]
  blocks, size, depth = codebook.shape
  layer = VectorQuantizer(size, num_blocks=blocks,
                          codebook_initializer=keras.initializers.Constant(codebook),
                          **kwargs)
  layer.build((None, blocks * depth))
  return layer


def test_forward_is_nearest_code_vector_for_any_rank(cifar_patches):
  rng = np.random.default_rng(0)
  codebook = cifar_patches[rng.choice(len(cifar_patches), 32, replace=False)]
  layer = make_layer(codebook)
  x = cifar_patches[:60].reshape(3, 4, 5, 48)
  expected = codebook[ref.nearest(x.reshape(-1, 48).astype(np.float64), codebook)]
  out = layer(x, training=False, return_codes=True)
  np.testing.assert_allclose(out.quantized.numpy().reshape(-1, 48), expected, atol=1e-6)
  np.testing.assert_array_equal(out.codes.numpy().reshape(-1),
                                ref.nearest(x.reshape(-1, 48), codebook))
  assert out.codes.shape == (3, 4, 5, 1)
  np.testing.assert_array_equal(layer.encode(x).numpy(), out.codes.numpy())
  np.testing.assert_allclose(layer.decode(out.codes).numpy(), expected.reshape(x.shape),
                             atol=1e-6)


def test_sliced_codebook_quantizes_each_slice_with_its_own_block(cifar_patches):
  rng = np.random.default_rng(1)
  blocks = np.stack([cifar_patches[rng.choice(500, 8)][:, 16 * b:16 * (b + 1)] for b in range(3)])
  layer = make_layer(blocks)
  x = cifar_patches[:50]
  out = layer(x, return_codes=True)
  for b in range(3):
    codes = ref.nearest(x[:, 16 * b:16 * (b + 1)].astype(np.float64), blocks[b])
    np.testing.assert_array_equal(out.codes.numpy()[:, b], codes)
    np.testing.assert_allclose(out.quantized.numpy()[:, 16 * b:16 * (b + 1)],
                               blocks[b][codes], atol=1e-6)
  assert layer.codebook.shape == (3, 8, 16)


# A large epsilon makes the Laplace smoothing visible at float32 precision.
@pytest.mark.parametrize("num_blocks, epsilon", [(1, 1e-5), (2, 1e-5), (1, 0.5)])
def test_ema_update_matches_reference_float64(cifar_patches, num_blocks, epsilon):
  rng = np.random.default_rng(2)
  k, d = 16, 48 // num_blocks
  codebook = np.stack([cifar_patches[rng.choice(1000, k)][:, d * b:d * (b + 1)]
                       for b in range(num_blocks)])
  layer = make_layer(codebook, update="ema", decay=0.9, epsilon=epsilon)
  refs = [ref.ReferenceEMA(codebook[b], 0.9, epsilon) for b in range(num_blocks)]
  for step in range(4):
    x = cifar_patches[256 * step:256 * (step + 1)]
    layer(x, training=True)
    for b, r in enumerate(refs):
      xb = x[:, d * b:d * (b + 1)].astype(np.float64)
      counts, sums = ref.counts_and_sums(xb, ref.nearest(xb, r.codebook)[:, None], k)
      r.step(counts, sums)
  for b, r in enumerate(refs):
    np.testing.assert_allclose(layer.embeddings.numpy()[b], r.codebook, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.ema_count.numpy()[b], r.count, rtol=1e-5)
    np.testing.assert_allclose(layer.ema_sum.numpy()[b], r.sum, rtol=1e-4, atol=1e-5)


# A peaked and a flat posterior: few or most draws are not the nearest code, and
# the lookup and statistics take their two paths.
@pytest.mark.parametrize("temperature", [0.1, 1e4])
def test_soft_em_m_step_weights_each_sample_one_over_m(cifar_patches, temperature):
  rng = np.random.default_rng(3)
  codebook = cifar_patches[rng.choice(1000, 8)] * 0.3
  layer = make_layer(codebook, update="soft_em", num_samples=5, decay=0.5,
                     temperature=temperature, seed=7)
  r = ref.ReferenceEMA(codebook, 0.5, 1e-5)
  x = cifar_patches[:300]
  out = layer(x, training=True, return_codes=True)
  samples = out.samples.numpy()[:, 0, :]
  assert samples.shape == (300, 5)
  not_nearest = (samples != out.codes.numpy()[:, :1]).mean()
  assert (not_nearest > 0.5) if temperature > 1 else (0.0 < not_nearest < 0.2), not_nearest
  # Decoder input: the mean of the sampled code vectors.
  np.testing.assert_allclose(out.quantized.numpy(), codebook[samples].mean(1), atol=1e-5)
  r.step(*ref.counts_and_sums(x.astype(np.float64), samples, 8))
  np.testing.assert_allclose(layer.codebook.numpy(), r.codebook, rtol=1e-4, atol=1e-4)
  # The nearest codes come from the same distances.
  np.testing.assert_array_equal(out.codes.numpy()[:, 0], ref.nearest(x, codebook))


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_soft_em_sample_frequencies_follow_softmax_of_negative_distances(temperature):
  codebook = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.5], [1.0, 1.0], [2.0, -1.0]], np.float32)
  points = np.array([[0.4, 0.3], [0.9, 0.8], [1.2, -0.4]], np.float32)
  repeats = 4000
  x = np.repeat(points, repeats, axis=0)
  layer = make_layer(codebook, update="soft_em", num_samples=10, temperature=temperature, seed=11)
  samples = layer(x, training=True, return_codes=True).samples.numpy()[:, 0, :]
  expected = ref.posterior(points.astype(np.float64), codebook, temperature)
  for p, probs in enumerate(expected):
    observed = np.bincount(samples[p * repeats:(p + 1) * repeats].ravel(), minlength=5)
    _, p_value = scipy.stats.chisquare(observed, probs * observed.sum())
    assert p_value > 1e-3, (p, observed, probs)


def test_hard_em_with_full_batch_and_no_decay_is_lloyds_kmeans(cifar_patches):
  x = cifar_patches[:2048]
  rng = np.random.default_rng(4)
  codebook = x[rng.choice(len(x), 12, replace=False)]
  layer = make_layer(codebook, update="hard_em", decay=0.0, epsilon=1e-9)
  centroids = codebook.astype(np.float64)
  for _ in range(6):
    layer(x, training=True)
    codes = ref.nearest(x.astype(np.float64), centroids)
    centroids = np.stack([x[codes == j].mean(0) if (codes == j).any() else np.zeros(48)
                          for j in range(12)])
  np.testing.assert_allclose(layer.codebook.numpy(), centroids, atol=1e-4)


def test_hard_em_converges_to_kmeans_centroids_of_its_assignments(cifar_patches):
  x = cifar_patches[:2048]
  rng = np.random.default_rng(5)
  layer = make_layer(x[rng.choice(len(x), 10, replace=False)], update="ema", decay=0.8)
  for _ in range(200):
    layer(x, training=True)
  codebook = layer.codebook.numpy().astype(np.float64)
  codes = ref.nearest(x.astype(np.float64), codebook)
  for j in np.unique(codes):
    np.testing.assert_allclose(codebook[j], x[codes == j].mean(0), atol=2e-3)


def test_soft_em_converges_to_soft_kmeans_means(cifar_patches):
  x = cifar_patches[:1024]
  rng = np.random.default_rng(6)
  temperature = 4.0
  layer = make_layer(x[rng.choice(len(x), 6, replace=False)], update="soft_em",
                     num_samples=50, decay=0.95, temperature=temperature, seed=1)
  for _ in range(300):
    layer(x, training=True)
  codebook = layer.codebook.numpy().astype(np.float64)
  p = ref.posterior(x.astype(np.float64), codebook, temperature)
  soft_means = (p.T @ x) / p.sum(0)[:, None]
  # Monte-Carlo noise of m * N = 51200 draws per step, averaged by the EMA.
  assert np.abs(codebook - soft_means).max() < 0.03
  assert np.abs(codebook - soft_means).max() < 0.1 * np.abs(soft_means).max()


def test_straight_through_gradient_and_commitment_loss(cifar_patches):
  rng = np.random.default_rng(7)
  codebook = cifar_patches[rng.choice(1000, 16)]
  layer = make_layer(codebook, update="ema", beta=0.25)
  x = tf.constant(cifar_patches[:40])
  w = tf.constant(rng.normal(size=(40, 48)).astype(np.float32))
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x, training=False)
    loss = tf.reduce_sum(y * w) + tf.add_n(layer.losses)
  grad = tape.gradient(loss, x).numpy()
  q = codebook[ref.nearest(cifar_patches[:40], codebook)].astype(np.float64)
  xd = cifar_patches[:40].astype(np.float64)
  assert len(layer.losses) == 1
  np.testing.assert_allclose(float(layer.losses[0]), 0.25 * ((xd - q) ** 2).mean(), rtol=1e-5)
  np.testing.assert_allclose(grad, w.numpy() + 0.25 * 2 * (xd - q) / xd.size, rtol=1e-5,
                             atol=1e-7)


@pytest.mark.parametrize("num_blocks", [1, 3])
def test_rotation_trick_gradient_against_its_closed_form(cifar_patches, num_blocks):
  """Each input slice turns onto its code vector: the forward pass is the code vector,
  the gradient lambda R^T g of each slice (NumPy, float64), not the identity's g."""
  rng = np.random.default_rng(17)
  d = 48 // num_blocks
  blocks = np.stack([cifar_patches[rng.choice(1000, 16)][:, d * b:d * (b + 1)]
                     for b in range(num_blocks)])
  layer = make_layer(blocks, update="ema", beta=0.0, rotation_trick=True)
  x = tf.constant(cifar_patches[:40])
  g = rng.normal(size=(40, 48))
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x, training=False)
    loss = tf.reduce_sum(y * tf.constant(g, tf.float32))
  grad = tape.gradient(loss, x).numpy()
  for b in range(num_blocks):
    part = slice(d * b, d * (b + 1))
    q = blocks[b][ref.nearest(cifar_patches[:40, part], blocks[b])]
    np.testing.assert_allclose(y.numpy()[:, part], q, atol=1e-6)
    want = ref.rotation_trick_gradient(cifar_patches[:40, part], q, g[:, part])
    np.testing.assert_allclose(grad[:, part], want, rtol=1e-4, atol=1e-5)
  assert np.abs(grad - g).max() > 0.1   # not the straight-through gradient


def unit(v):
  v = np.asarray(v, np.float64)
  return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.mark.parametrize("num_blocks", [1, 2])
def test_cosine_codebook_quantizes_to_the_most_similar_unit_code(cifar_patches, num_blocks):
  """Codes by cosine similarity (float64), unit code vectors out, and an EMA step
  (decay 0) that moves each used code onto the direction of its unit inputs' sum."""
  rng = np.random.default_rng(21)
  d = 48 // num_blocks
  blocks = np.stack([cifar_patches[rng.choice(1000, 16)][:, d * b:d * (b + 1)] * (b + 2)
                     for b in range(num_blocks)])
  layer = make_layer(blocks, update="ema", decay=0.0, distance="cosine")
  x = cifar_patches[:300]
  out = layer(x, training=True, return_codes=True)
  for b in range(num_blocks):
    part = slice(d * b, d * (b + 1))
    codes = np.argmax(unit(x[:, part]) @ unit(blocks[b]).T, axis=1)
    np.testing.assert_array_equal(out.codes.numpy()[:, b], codes)
    np.testing.assert_allclose(out.quantized.numpy()[:, part], unit(blocks[b])[codes],
                               atol=1e-6)
    used = np.unique(codes)
    sums = np.stack([unit(x[:, part])[codes == k].sum(0) for k in used])
    codebook = layer.codebook.numpy().reshape(num_blocks, 16, d)[b]
    np.testing.assert_allclose(codebook[used], unit(sums), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(codebook, axis=-1), 1.0, atol=1e-6)


def test_a_lower_codebook_dimension_projects_in_and_out(cifar_patches):
  """Inputs of depth 48 quantized in 8 dimensions (float64 reference of both Dense
  projections); gradients reach both projections and the layer's inputs."""
  layer = VectorQuantizer(16, update="ema", codebook_dim=8, seed=3)
  x = tf.constant(cifar_patches[:200])
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    out = layer(x, training=False, return_codes=True)
    loss = tf.reduce_sum(tf.square(out.quantized)) + tf.add_n(layer.losses)
  w_in, b_in = (v.numpy().astype(np.float64) for v in layer.project_in.weights)
  w_out, b_out = (v.numpy().astype(np.float64) for v in layer.project_out.weights)
  z = cifar_patches[:200].astype(np.float64) @ w_in + b_in
  codebook = layer.codebook.numpy().astype(np.float64)
  codes = ref.nearest(z, codebook)
  assert codebook.shape == (16, 8) and out.quantized.shape == (200, 48)
  np.testing.assert_array_equal(out.codes.numpy()[:, 0], codes)
  expected = codebook[codes] @ w_out + b_out
  np.testing.assert_allclose(out.quantized.numpy(), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(layer.decode(out.codes).numpy(), expected, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(layer.encode(x).numpy(), out.codes.numpy())
  for variable in layer.project_in.weights + layer.project_out.weights + [x]:
    assert np.abs(tape.gradient(loss, variable).numpy()).max() > 0, variable.name


@pytest.mark.parametrize("options", [dict(distance="cosine"), dict(codebook_dim=4)])
def test_cosine_and_projected_layers_round_trip(tmp_path, cifar_patches, options):
  check_round_trips(VectorQuantizer(16, seed=2, name="vq", **options), 8, cifar_patches,
                    tmp_path)


def lloyd(x, codebook, iterations):
  """Lloyd's k-means iterations in float64; a code without vectors stays."""
  x, codebook = np.asarray(x, np.float64), np.array(codebook, np.float64)
  for _ in range(iterations):
    codes = ref.nearest(x, codebook)
    for k in np.unique(codes):
      codebook[k] = x[codes == k].mean(0)
  return codebook


@pytest.mark.parametrize("update", ["ema", "gradient"])
def test_kmeans_init_is_lloyds_iterations_from_drawn_inputs(cifar_patches, update):
  x, mask = cifar_patches[:400], np.arange(400) % 5 != 0
  drawn = VectorQuantizer(16, update=update, seed=8)
  drawn.kmeans_init(x, mask=mask, iterations=0)
  start = drawn.codebook.numpy()
  # The start: valid inputs.
  valid = x[mask]
  assert all(np.abs(valid - row).sum(1).min() == 0 for row in start)
  layer = VectorQuantizer(16, update=update, seed=8)
  counts = layer.kmeans_init(x, mask=mask, iterations=6)
  want = lloyd(valid, start, 6)
  np.testing.assert_allclose(layer.codebook.numpy(), want, atol=1e-5)
  assert counts.numpy().sum() == mask.sum()
  assert not np.allclose(want, start)
  if update == "ema":   # the running statistics restart from the centroids
    np.testing.assert_array_equal(layer.ema_count.numpy(), np.ones((1, 16)))
    np.testing.assert_allclose(layer.ema_sum.numpy()[0], want, atol=1e-5)


def test_gradient_mode_codebook_loss_moves_only_the_codebook(cifar_patches):
  rng = np.random.default_rng(8)
  codebook = cifar_patches[rng.choice(1000, 16)]
  layer = make_layer(codebook, update="gradient", beta=0.5)
  assert [v.name for v in layer.trainable_variables] == ["codebook"]
  x = tf.constant(cifar_patches[:40])
  with tf.GradientTape() as tape:
    layer(x, training=True)
    commitment, codebook_loss = layer.losses
    total = commitment + codebook_loss
  grad = tape.gradient(total, layer.trainable_variables)[0].numpy()[0]
  xd = cifar_patches[:40].astype(np.float64)
  codes = ref.nearest(xd, codebook)
  q = codebook[codes]
  np.testing.assert_allclose(float(codebook_loss), ((xd - q) ** 2).mean(), rtol=1e-5)
  np.testing.assert_allclose(float(commitment), 0.5 * ((xd - q) ** 2).mean(), rtol=1e-5)
  expected = np.zeros_like(codebook, np.float64)
  np.add.at(expected, codes, 2 * (q - xd) / xd.size)
  np.testing.assert_allclose(grad, expected, atol=1e-7)


@pytest.mark.parametrize("update", ["ema", "soft_em", "gradient"])
def test_masked_positions_leave_statistics_and_losses_untouched(cifar_patches, update):
  rng = np.random.default_rng(9)
  codebook = cifar_patches[rng.choice(1000, 16)]
  # Padding at the end, so that the valid rows (and their soft-EM draws) stay in place.
  valid = cifar_patches[:30].reshape(1, 30, 48)
  padding = np.full((1, 10, 48), 1e3, np.float32)      # far from every code
  padded = np.concatenate([valid, padding], axis=1)
  mask = np.concatenate([np.ones((1, 30), bool), np.zeros((1, 10), bool)], axis=1)
  plain = make_layer(codebook, update=update, seed=3)
  masked = make_layer(codebook, update=update, seed=3)
  for _ in range(2):
    plain(valid, training=True)
    masked(padded, training=True, mask=mask)
  np.testing.assert_allclose(masked.codebook.numpy(), plain.codebook.numpy(), atol=1e-5)
  np.testing.assert_allclose([float(v) for v in masked.losses],
                             [float(v) for v in plain.losses], rtol=1e-5)
  np.testing.assert_array_equal(masked.last_used.numpy(), plain.last_used.numpy())


def test_keras_masking_reaches_the_layer(cifar_patches):
  rng = np.random.default_rng(10)
  codebook = cifar_patches[rng.choice(1000, 16)]
  valid = cifar_patches[:12].reshape(1, 12, 48)
  padded = np.concatenate([valid, np.zeros((1, 4, 48), np.float32)], axis=1)
  layer = make_layer(codebook, update="ema", decay=0.5)
  reference = make_layer(codebook, update="ema", decay=0.5)
  model = keras.Sequential([keras.layers.Masking(0.0), layer])
  model(padded, training=True)
  reference(valid, training=True)
  np.testing.assert_allclose(layer.codebook.numpy(), reference.codebook.numpy(), atol=1e-6)


def test_health_metrics(cifar_patches):
  rng = np.random.default_rng(11)
  codebook = cifar_patches[rng.choice(1000, 64)]
  layer = make_layer(codebook, update="gradient", usage_window=2)
  first, second, third = cifar_patches[:20], cifar_patches[500:520], cifar_patches[900:920]
  used = [set(ref.nearest(b, codebook)) for b in (first, second, third)]
  for batch in (first, second, third):
    layer(batch, training=True)
  counts = np.bincount(ref.nearest(third, codebook), minlength=64).astype(np.float64)
  health = layer.health()
  np.testing.assert_allclose(float(health["perplexity"]), ref.perplexity(counts), rtol=1e-5)
  assert int(health["codes_used"]) == len(used[1] | used[2])
  assert int(health["dead_codes"]) == 64 - len(used[1] | used[2])
  names = {m.name: float(m.result()) for m in layer.metrics}
  assert set(names) == {f"{layer.name}_perplexity", f"{layer.name}_codes_used",
                        f"{layer.name}_dead_codes"}


def test_soft_em_counts_a_code_as_used_when_it_is_a_nearest_code(cifar_patches):
  """Samples reach far codes; only nearest codes count as used, so restarts can fire."""
  rng = np.random.default_rng(13)
  codebook = cifar_patches[rng.choice(1000, 64)]
  # A flat posterior: the m = 10 draws of 40 positions cover most of the 64 codes.
  layer = make_layer(codebook, update="soft_em", temperature=50.0, decay=0.9,
                     usage_window=2, seed=3)
  nearest, sampled = [], set()
  for batch in (cifar_patches[:40], cifar_patches[500:540], cifar_patches[900:940]):
    nearest.append(set(ref.nearest(batch, layer.codebook.numpy().astype(np.float64))))
    sampled |= set(layer(batch, training=True, return_codes=True).samples.numpy().ravel())
  used = nearest[1] | nearest[2]
  assert len(sampled) > len(used) + 10   # counting samples would give another answer
  assert int(layer.health()["codes_used"]) == len(used)
  np.testing.assert_array_equal(layer.last_used.numpy()[0] > 1,
                                np.isin(np.arange(64), list(used)))


def is_encoder_output(codes, x):
  distance = ref.squared_distances(codes.astype(np.float64), x.astype(np.float64)).min(1)
  return distance < 1e-8


def test_codes_start_on_encoder_outputs_of_the_first_batch(cifar_patches):
  x = cifar_patches[:256]
  codebook = np.full((16, 48), 50.0, np.float32)   # far from every patch
  layer = make_layer(codebook, update="ema", usage_window=3, restart_dead_codes=True, seed=2)
  layer(x, training=True)
  assert is_encoder_output(layer.codebook.numpy(), x).all()
  assert len({tuple(code) for code in layer.codebook.numpy()}) > 12


def test_dead_codes_restart_onto_encoder_outputs(cifar_patches):
  x, later = cifar_patches[:256], cifar_patches[256:512]
  layer = make_layer(np.zeros((16, 48), np.float32), update="ema", usage_window=3,
                     restart_dead_codes=True, seed=2)
  layer(x, training=True)
  # Four codes stay in use; the 12 others move far away and are unused from step 2 on.
  far = np.concatenate([layer.codebook.numpy()[:4], np.full((12, 48), 50.0, np.float32)])
  layer.embeddings.assign(far[None])
  layer.ema_sum.assign(far[None] * layer.ema_count.numpy()[..., None])
  # Codes 4..15 have never been a nearest code (last used: step 0): they restart at
  # step W = 3, and a restart is not a use: they count dead until a batch picks them.
  for step in (2, 3):
    layer(later, training=True)
    assert is_encoder_output(layer.codebook.numpy()[4:], later).all() == (step == 3)
    assert int(layer.health()["dead_codes"]) >= 12
  layer(later, training=True)   # the restarted codes sit on encoder outputs of `later`
  assert int(layer.health()["dead_codes"]) < 12


def test_a_code_that_stays_unused_restarts_every_window(cifar_patches):
  x, later = cifar_patches[:256], cifar_patches[256:512]
  layer = make_layer(np.full((16, 48), 50.0, np.float32), update="ema", usage_window=2,
                     restart_dead_codes=True, seed=4)
  layer(x, training=True)   # step 1: every code restarts; none was a nearest code but 0
  far = np.full((8, 48), 50.0, np.float32)

  def move_far():   # codes 8..15 far from every patch: never a nearest code
    codebook = layer.codebook.numpy()
    codebook[8:] = far
    layer.embeddings.assign(codebook[None])
    layer.ema_sum.assign(codebook[None] * layer.ema_count.numpy()[..., None])

  for step in (2, 3, 4, 5):
    move_far()
    layer(later, training=True)
    restarted = is_encoder_output(layer.codebook.numpy()[8:], later)
    assert restarted.all() == (step % 2 == 0) and restarted.any() == (step % 2 == 0)


@pytest.mark.parametrize("update", ["ema", "soft_em", "gradient"])
def test_a_frozen_layer_quantizes_to_nearest_codes_and_keeps_its_state(cifar_patches, update):
  rng = np.random.default_rng(9)
  codebook = cifar_patches[rng.choice(len(cifar_patches), 16, replace=False)]
  layer = make_layer(codebook, update=update, num_samples=4, restart_dead_codes=True)
  layer.trainable = False
  assert not layer.trainable_weights
  before = [v.numpy() for v in layer.weights]
  x = cifar_patches[:64]
  out = layer(x, training=True, return_codes=True)
  np.testing.assert_array_equal(out.codes.numpy()[:, 0],
                                ref.nearest(x.astype(np.float64), codebook))
  np.testing.assert_allclose(out.quantized.numpy(),
                             codebook[out.codes.numpy()[:, 0]], atol=1e-6)
  for want, variable in zip(before, layer.weights):
    np.testing.assert_array_equal(variable.numpy(), want, err_msg=variable.path)


def test_chunked_distances_give_the_same_codes(cifar_patches):
  rng = np.random.default_rng(12)
  codebook = cifar_patches[rng.choice(1000, 32)]
  layer = make_layer(codebook, max_distance_elements=32 * 7)   # 7 rows per chunk
  x = cifar_patches[:100]
  expected = ref.nearest(x, codebook)
  np.testing.assert_array_equal(layer.encode(x).numpy()[:, 0], expected)
  dynamic = tf.function(layer.encode, input_signature=[tf.TensorSpec([None, 48], tf.float32)])
  np.testing.assert_array_equal(dynamic(x).numpy()[:, 0], expected)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_distances_and_statistics_float32(policy):
  rng = np.random.default_rng(13)
  # ||x||^2 is about 2e6: it overflows float16 (max 65504).
  x = rng.normal(300.0, 1.0, size=(512, 32)).astype(np.float32)
  layer = VectorQuantizer(64, update="ema", dtype=policy, seed=0)
  out = layer(x, training=True, return_codes=True)
  assert out.quantized.dtype == keras.mixed_precision.Policy(policy).compute_dtype
  for v in (layer.embeddings, layer.ema_count, layer.ema_sum):
    assert v.dtype == "float32"
  for _ in range(3):
    layer(x, training=True)
  assert np.isfinite(layer.codebook.numpy()).all()
  codebook = layer.codebook.numpy().astype(np.float64)
  codes = layer.encode(x).numpy()[:, 0]
  np.testing.assert_array_equal(codes, ref.nearest(x.astype(np.float64), codebook))
  # Most codes are empty clusters here: still no NaN anywhere.
  assert (layer.ema_count.numpy() == 0).sum() > 32
  assert all(np.isfinite(float(v)) for v in layer.losses)


def test_a_batch_with_no_valid_position_changes_nothing():
  layer = VectorQuantizer(8, update="ema", seed=0)
  x = np.ones((2, 3, 4), np.float32)
  layer.build(x.shape)
  before = layer.codebook.numpy()
  layer(x, training=True, mask=np.zeros((2, 3), bool))
  np.testing.assert_array_equal(layer.codebook.numpy(), before)
  assert all(float(v) == 0.0 for v in layer.losses)
  assert float(layer.health()["perplexity"]) == 0.0


@pytest.mark.parametrize("update", ["gradient", "ema", "soft_em"])
def test_keras_file_round_trip_keeps_codebook_and_ema_state(tmp_path, cifar_patches, update):
  inputs = keras.Input((48,))
  hidden = keras.layers.Dense(16)(inputs)
  quantized = VectorQuantizer(32, update=update, num_blocks=2, seed=4)(hidden)
  model = keras.Model(inputs, keras.layers.Dense(48)(quantized))
  model.compile("adam", "mse")
  model.fit(cifar_patches[:512], cifar_patches[:512], batch_size=128, epochs=1, verbose=0)
  path = tmp_path / "model.keras"
  model.save(path)
  loaded = keras.models.load_model(path)
  original, restored = model.layers[2], loaded.layers[2]
  assert restored.get_config() == original.get_config()
  for a, b in zip(original.weights, restored.weights):
    assert a.path == b.path
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  x = cifar_patches[600:700]
  np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                             atol=1e-6)


def test_config_round_trip():
  layer = VectorQuantizer(64, update="hard_em", num_samples=3, decay=0.95, epsilon=1e-4,
                          beta=0.5, num_blocks=4, temperature=2.0, usage_window=7,
                          restart_dead_codes=True, rotation_trick=True, seed=5, name="vq")
  clone = VectorQuantizer.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  assert clone.update == "ema"


def test_exported_saved_model_quantizes(tmp_path, cifar_patches):
  inputs = keras.Input((48,))
  quantized = VectorQuantizer(16, update="soft_em", seed=4)(keras.layers.Dense(8)(inputs))
  model = keras.Model(inputs, quantized)
  model.compile("sgd", "mse")
  model.fit(cifar_patches[:256], np.zeros((256, 8)), verbose=0, batch_size=64)
  model.export(str(tmp_path / "export"), verbose=False)
  served = tf.saved_model.load(str(tmp_path / "export"))
  x = cifar_patches[:10]
  np.testing.assert_allclose(served.serve(x).numpy(), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(codebook_size=1), "codebook_size"),
    (dict(codebook_size=8, update="kmeans"), "update"),
    (dict(codebook_size=8, num_samples=0), "num_samples"),
    (dict(codebook_size=8, decay=1.0), "decay"),
    (dict(codebook_size=8, decay=-0.1), "decay"),
    (dict(codebook_size=8, epsilon=0.0), "epsilon"),
    (dict(codebook_size=8, num_blocks=0), "num_blocks"),
    (dict(codebook_size=8, temperature=0.0), "temperature"),
    (dict(codebook_size=8, distance="l1"), "distance"),
    (dict(codebook_size=8, codebook_dim=0), "codebook_dim"),
])
def test_bad_arguments_name_the_argument(kwargs, argument):
  with pytest.raises(ValueError, match=argument):
    VectorQuantizer(**kwargs)


def test_bad_inputs_are_refused_with_a_clear_message():
  layer = VectorQuantizer(8, num_blocks=3)
  with pytest.raises(ValueError, match="num_blocks=3.*divisor of the input depth 16"):
    layer(np.zeros((2, 16), np.float32))
  layer = VectorQuantizer(8)
  layer(np.zeros((2, 16), np.float32))
  with pytest.raises(ValueError, match="built for inputs of depth 16, got last dimension 12"):
    layer(np.zeros((2, 12), np.float32))
  with pytest.raises(ValueError, match="float inputs.*int32"):
    layer(np.zeros((2, 16), np.int32))
  with pytest.raises(ValueError, match="integer codes"):
    layer.decode(np.zeros((2, 1), np.float32))
