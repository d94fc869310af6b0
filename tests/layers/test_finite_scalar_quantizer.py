"""FiniteScalarQuantizer against float64 NumPy statements of the FSQ paper's equations."""

import numpy as np
import pytest
import tensorflow as tf

from replicas import assert_replicas_hold, train_alone_and_mirrored
from round_trip import check_round_trips
from vqkeras.layers import FiniteScalarQuantizer

LEVELS = [8, 5, 5, 5]


def reference(z, levels, eps=1e-3):
  """FSQ in float64: bound, round, normalize; and the mixed-radix index."""
  levels = np.asarray(levels, np.float64)
  half_l = (levels - 1) * (1 - eps) / 2
  offset = np.where(levels % 2 == 0, 0.5, 0.0)
  bounded = np.tanh(z + np.tan(offset / half_l)) * half_l - offset
  half_width = np.floor(levels / 2)
  quantized = np.round(bounded) / half_width
  digits = np.round(quantized * half_width + half_width).astype(np.int64)
  index = np.zeros(z.shape[:-1], np.int64)
  for i in reversed(range(len(levels))):   # digit 0 is the least significant
    index = index * int(levels[i]) + digits[..., i]
  return quantized, index


def encoder_outputs(cifar_patches, depth, scale=1.5):
  """Real CIFAR patches through a fixed random projection to `depth` channels."""
  rng = np.random.default_rng(0)
  x = cifar_patches.astype(np.float64)
  x = (x - x.mean(0)) / x.std(0)
  return (x @ rng.normal(size=(x.shape[1], depth)) * scale / np.sqrt(x.shape[1]))


@pytest.mark.parametrize("levels", [LEVELS, [3, 4, 7], [2]])
def test_forward_is_the_bounded_rounded_grid_point(cifar_patches, levels):
  z = encoder_outputs(cifar_patches, len(levels))
  layer = FiniteScalarQuantizer(levels)
  out = layer(z.astype(np.float32), return_codes=True)
  quantized, index = reference(z, levels)
  # Grid values agree to float32 precision; inputs within float32 rounding of a
  # rounding boundary may go either way.
  agree = np.all(np.abs(out.quantized.numpy() - quantized) < 1e-6, axis=-1)
  assert agree.mean() > 0.999
  assert out.codes.shape[-1] == 1 == layer.codes_per_position   # codes [..., 1]
  np.testing.assert_array_equal(out.codes.numpy()[agree, 0], index[agree])
  np.testing.assert_array_equal(layer.encode(z.astype(np.float32)).numpy(),
                                out.codes.numpy())


def test_codebooks_quantize_their_groups_of_channels_alone(cifar_patches):
  """num_codebooks = 3: three groups of four channels, codes [..., 3] (float64 reference
  per group), decode back, and usage counted per group over the valid positions."""
  z = encoder_outputs(cifar_patches, 12)
  mask = np.arange(len(z)) % 4 != 0
  layer = FiniteScalarQuantizer(LEVELS, num_codebooks=3)
  out = layer(z.astype(np.float32).reshape(-1, 4, 12), training=True,
              mask=mask.reshape(-1, 4), return_codes=True)
  codes = out.codes.numpy().reshape(-1, 3)
  assert out.codes.shape[-1] == 3 and layer.codes_per_position == 3
  for g in range(3):
    quantized, index = reference(z[:, 4 * g:4 * (g + 1)], LEVELS)
    agree = index == codes[:, g]
    assert agree.mean() > 0.999
    np.testing.assert_allclose(out.quantized.numpy().reshape(-1, 12)[agree, 4 * g:4 * (g + 1)],
                               quantized[agree], atol=1e-6)
    np.testing.assert_array_equal(layer.batch_counts.numpy()[g],
                                  np.bincount(codes[mask, g], minlength=1000))
  np.testing.assert_allclose(layer.decode(out.codes).numpy(), out.quantized.numpy())
  np.testing.assert_array_equal(layer.encode(z.astype(np.float32).reshape(-1, 4, 12)).numpy(),
                                out.codes.numpy())


@pytest.mark.parametrize("levels", [LEVELS, [3, 4, 7]])
def test_each_channel_takes_exactly_its_levels(levels):
  sweep = np.linspace(-12.0, 12.0, 4001)
  z = np.repeat(sweep[:, None], len(levels), axis=1).astype(np.float32)
  values = FiniteScalarQuantizer(levels)(z).numpy()
  for i, level in enumerate(levels):
    half = level // 2
    np.testing.assert_allclose(np.unique(values[:, i]),
                               [(k - half) / half for k in range(level)], rtol=1e-6)


def test_indices_and_codes_are_a_bijection_over_the_whole_grid():
  layer = FiniteScalarQuantizer(LEVELS)
  codes = layer.indices_to_codes(np.arange(1000)).numpy()
  assert len({tuple(row) for row in codes}) == 1000 == layer.codebook_size
  np.testing.assert_array_equal(layer.codes_to_indices(codes).numpy(), np.arange(1000))
  np.testing.assert_array_equal(layer.codebook.numpy(), codes)
  np.testing.assert_array_equal(layer.decode(np.arange(1000)[:, None]).numpy(), codes)
  # Index 1 steps the first channel, index 8 the second (mixed radix, first digit lowest).
  np.testing.assert_array_equal(codes[1] - codes[0], [0.25, 0, 0, 0])
  np.testing.assert_array_equal(codes[8] - codes[0], [0, 0.5, 0, 0])


def test_the_gradient_passes_the_rounding_straight_through(cifar_patches):
  z = encoder_outputs(cifar_patches[:64], 4)
  weights = np.random.default_rng(3).normal(size=z.shape)
  layer = FiniteScalarQuantizer(LEVELS)
  x = tf.constant(z, tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = tf.reduce_sum(layer(x, training=True) * weights)
  levels = np.asarray(LEVELS, np.float64)
  half_l = (levels - 1) * (1 - 1e-3) / 2
  shift = np.tan(np.where(levels % 2 == 0, 0.5, 0.0) / half_l)
  expected = weights * half_l * (1 - np.tanh(z + shift) ** 2) / np.floor(levels / 2)
  np.testing.assert_allclose(tape.gradient(loss, x).numpy(), expected, rtol=1e-4, atol=1e-6)
  assert not layer.losses   # no auxiliary loss


def test_usage_counts_the_valid_positions_only(cifar_patches):
  z = encoder_outputs(cifar_patches[:240], 4).reshape(6, 40, 4).astype(np.float32)
  mask = np.arange(40)[None] < np.array([40, 3, 17, 0, 25, 9])[:, None]
  layer = FiniteScalarQuantizer(LEVELS, usage_window=2)
  out = layer(z, training=True, mask=mask, return_codes=True)
  _, index = reference(z.astype(np.float64), LEVELS)
  counts = np.bincount(index[mask], minlength=1000).astype(np.float64)
  np.testing.assert_array_equal(layer.batch_counts.numpy()[0], counts)
  probs = counts[counts > 0] / counts.sum()
  np.testing.assert_allclose(float(layer.health()["perplexity"]),
                             np.exp(-(probs * np.log(probs)).sum()), rtol=1e-5)
  assert int(layer.codes_used()) == (counts > 0).sum()
  assert int(layer.dead_codes()) == 1000 - (counts > 0).sum()
  np.testing.assert_array_equal(out.codes.numpy()[mask, 0], index[mask])
  for _ in range(2):   # used two steps ago: no longer within the window of 2
    layer(z[:, :0], training=True)
  assert int(layer.codes_used()) == 0


def test_inference_and_a_frozen_layer_record_no_usage(cifar_patches):
  z = encoder_outputs(cifar_patches[:50], 4).astype(np.float32)
  layer = FiniteScalarQuantizer(LEVELS)
  layer(z)
  layer.trainable = False
  layer(z, training=True)
  assert int(layer.num_updates) == 0 and int(layer.codes_used()) == 0


def test_mirrored_replicas_record_the_usage_of_the_global_batch(cifar_patches,
                                                               mirrored_strategy):
  z = encoder_outputs(cifar_patches[:128], 4).astype(np.float32)
  single, mirrored = train_alone_and_mirrored(lambda: FiniteScalarQuantizer(LEVELS),
                                              mirrored_strategy, z)
  assert_replicas_hold(single, mirrored,
                       ("batch_counts", "last_used", "num_updates", "batch_perplexity"))


def test_4_to_the_16_codes_keep_no_per_code_state(cifar_patches):
  """2^32 codes: int64 indices (float64 reference), health from the batch's distinct
  codes, three scalars of state, and a training step's gradient."""
  levels = [4] * 16
  z = encoder_outputs(cifar_patches[:400], 16)
  layer = FiniteScalarQuantizer(levels)
  x = tf.constant(z.astype(np.float32))
  with tf.GradientTape() as tape:
    tape.watch(x)
    out = layer(x, training=True, return_codes=True)
    loss = tf.reduce_sum(tf.square(out.quantized))
  assert not layer.tracks_codes and out.codes.dtype == tf.int64
  assert sum(int(np.prod(w.shape)) for w in layer.weights) == 3
  quantized, index = reference(z, levels)
  agree = np.all(np.abs(out.quantized.numpy() - quantized) < 1e-6, axis=-1)
  np.testing.assert_array_equal(out.codes.numpy()[agree, 0], index[agree])
  assert index.max() >= 2 ** 31   # beyond int32
  np.testing.assert_allclose(layer.decode(out.codes).numpy()[agree], quantized[agree],
                             atol=1e-6)
  assert int(layer.codes_used()) == len(np.unique(out.codes.numpy()))
  assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))


def test_mixed_precision_rounds_in_float32(cifar_patches):
  # Keras casts the inputs to bfloat16 (as the encoder before it would give them);
  # bound and rounding then run in float32 on those values.
  z = tf.cast(tf.cast(encoder_outputs(cifar_patches[:200], 4), tf.bfloat16), tf.float32)
  plain = FiniteScalarQuantizer(LEVELS)(z, return_codes=True)
  mixed = FiniteScalarQuantizer(LEVELS, dtype="mixed_bfloat16")(z, return_codes=True)
  assert mixed.quantized.dtype == tf.bfloat16
  np.testing.assert_array_equal(mixed.codes.numpy(), plain.codes.numpy())
  np.testing.assert_array_equal(tf.cast(mixed.quantized, tf.float32).numpy(),
                                plain.quantized.numpy())   # grid values are exact


def test_keras_file_and_saved_model_round_trips(tmp_path, cifar_patches):
  check_round_trips(FiniteScalarQuantizer([7, 5, 5], name="fsq"), 3, cifar_patches, tmp_path)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(levels=[8, 1]), "levels"),
    (dict(levels=[]), "levels"),
    (dict(levels=8), "levels"),
    (dict(levels=[8.0, 5]), "levels"),
    (dict(levels=[8, 5], eps=0.0), "eps"),
    (dict(levels=[8, 5], usage_window=0), "usage_window"),
])
def test_bad_arguments_name_the_argument(kwargs, argument):
  with pytest.raises(ValueError, match=f"invalid {argument}="):
    FiniteScalarQuantizer(**kwargs)


def test_bad_inputs_are_refused_with_a_clear_message():
  layer = FiniteScalarQuantizer(LEVELS)
  with pytest.raises(ValueError, match=r"levels=\[8, 5, 5, 5\] needs a last dimension of 4, "
                                       r"got input shape \(2, 6\).*Dense\(4\)"):
    layer(np.zeros((2, 6), np.float32))
  with pytest.raises(ValueError, match="float inputs.*int32"):
    layer(np.zeros((2, 4), np.int32))
  with pytest.raises(ValueError, match="integer codes"):
    layer.decode(np.zeros((2,), np.float32))
