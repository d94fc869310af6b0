"""ResidualVectorQuantizer against float64 NumPy residual quantization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import numpy_reference as ref
from replicas import per_replica
from round_trip import check_round_trips
from vqkeras.layers import ResidualVectorQuantizer


def codebooks_of(cifar_patches, levels, size, seed=0):
  """Level i's codebook: patches scaled by 0.5^i (residuals shrink level by level)."""
  rng = np.random.default_rng(seed)
  return [cifar_patches[rng.choice(len(cifar_patches), size, replace=False)] * 0.5 ** i
          for i in range(levels)]


class LevelCodebook(keras.initializers.Initializer):
  """Each level's codebook from a list, in creation order (level_0 first)."""

  def __init__(self, codebooks):
    self.codebooks, self.calls = codebooks, 0

  def __call__(self, shape, dtype=None):
    value = self.codebooks[self.calls][None]
    self.calls += 1
    return tf.constant(value, dtype)


def residual_reference(x, codebooks):
  """Codes [N, Q] and the quantized sum [N, D], float64."""
  residual, total, codes = x.astype(np.float64), 0.0, []
  for codebook in codebooks:
    c = ref.nearest(residual, codebook.astype(np.float64))
    codes.append(c)
    total = total + codebook[c]
    residual = residual - codebook[c]
  return np.stack(codes, 1), total


def make_layer(codebooks, **kwargs):
  layer = ResidualVectorQuantizer(len(codebooks[0]), len(codebooks),
                                  codebook_initializer=LevelCodebook(codebooks), **kwargs)
  layer.build((None, codebooks[0].shape[1]))
  return layer


def test_each_level_quantizes_the_residual_of_the_levels_before(cifar_patches):
  codebooks = codebooks_of(cifar_patches, 3, 16)
  layer = make_layer(codebooks)
  x = cifar_patches[:200]
  codes, total = residual_reference(x, codebooks)
  out = layer(x, return_codes=True)
  np.testing.assert_array_equal(out.codes.numpy(), codes)
  np.testing.assert_allclose(out.quantized.numpy(), total, atol=1e-5)
  np.testing.assert_allclose(layer.decode(codes).numpy(), total, atol=1e-5)
  # Fewer levels: the first ones' codes and their partial sum.
  two = layer(x, num_levels=2, return_codes=True)
  np.testing.assert_array_equal(two.codes.numpy(), codes[:, :2])
  np.testing.assert_array_equal(layer.encode(x).numpy(), codes)
  np.testing.assert_array_equal(layer.encode(x, num_levels=2).numpy(), codes[:, :2])
  np.testing.assert_allclose(layer.decode(codes[:, :2]).numpy(),
                             codebooks[0][codes[:, 0]] + codebooks[1][codes[:, 1]], atol=1e-5)
  # Each level is closer than the one before: the residual error shrinks.
  errors = [np.square(x - layer.decode(codes[:, :n]).numpy()).sum() for n in (1, 2, 3)]
  assert errors[0] > errors[1] > errors[2]


def test_groups_quantize_their_slices_of_channels_alone(cifar_patches):
  """groups = 2: each half of the 48 channels through its own 3 levels (float64
  reference per group), codes [..., 2 * 3] group after group, decode back; the levels'
  names keep one checkpoint path each."""
  halves = [codebooks_of(cifar_patches, 3, 16, seed) for seed in (0, 1)]
  codebooks = [[c[:, 24 * g:24 * (g + 1)] for c in halves[g]] for g in range(2)]
  layer = ResidualVectorQuantizer(16, 3, groups=2, codebook_initializer=LevelCodebook(
      codebooks[0] + codebooks[1]))
  layer.build((None, 48))
  x = cifar_patches[:200]
  references = [residual_reference(x[:, 24 * g:24 * (g + 1)], codebooks[g]) for g in range(2)]
  out = layer(x, return_codes=True)
  assert layer.codes_per_position == 6
  np.testing.assert_array_equal(out.codes.numpy(),
                                np.concatenate([codes for codes, _ in references], 1))
  total = np.concatenate([total for _, total in references], 1)
  np.testing.assert_allclose(out.quantized.numpy(), total, atol=1e-5)
  np.testing.assert_allclose(layer.decode(out.codes).numpy(), total, atol=1e-5)
  np.testing.assert_array_equal(layer.encode(x).numpy(), out.codes.numpy())
  assert [level.name for level in layer.levels] == [
      f"group_{g}_level_{i}" for g in range(2) for i in range(3)]
  with pytest.raises(ValueError, match="invalid groups=5.*divisor of the input depth 48"):
    ResidualVectorQuantizer(16, 3, groups=5).build((None, 48))


def test_the_encoder_gets_the_gradient_straight_through_and_each_level_its_loss(cifar_patches):
  codebooks = codebooks_of(cifar_patches, 2, 8)
  layer = make_layer(codebooks, beta=0.25)
  x = tf.constant(cifar_patches[:64])
  weights = np.random.default_rng(1).normal(size=x.shape)
  with tf.GradientTape() as tape:
    tape.watch(x)
    out = tf.reduce_sum(layer(x, training=True) * weights)
  np.testing.assert_allclose(tape.gradient(out, x).numpy(), weights, rtol=1e-6)
  codes, _ = residual_reference(cifar_patches[:64], codebooks)
  residual = cifar_patches[:64].astype(np.float64)
  expected = []
  for i, codebook in enumerate(codebooks):
    expected.append(0.25 * np.mean(np.square(residual - codebook[codes[:, i]])))
    residual = residual - codebook[codes[:, i]]
  np.testing.assert_allclose([float(v) for v in layer.losses], expected, rtol=1e-4)


def test_the_rotation_trick_turns_the_input_onto_the_sum_of_its_codes(cifar_patches):
  codebooks = codebooks_of(cifar_patches, 3, 16, seed=4)
  layer = make_layer(codebooks, beta=0.0, rotation_trick=True)
  x = tf.constant(cifar_patches[:60])
  g = np.random.default_rng(5).normal(size=(60, 48))
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x)
    loss = tf.reduce_sum(y * tf.constant(g, tf.float32))
  _, total = residual_reference(cifar_patches[:60], codebooks)
  np.testing.assert_allclose(y.numpy(), total, atol=1e-5)
  np.testing.assert_allclose(tape.gradient(loss, x).numpy(),
                             ref.rotation_trick_gradient(cifar_patches[:60], total, g),
                             rtol=1e-4, atol=1e-5)


def test_ema_levels_learn_their_residuals(cifar_patches):
  """Every level takes its EMA M-step on its own residual: with decay 0 and a full batch
  each codebook is the mean of the residuals assigned to each code (Lloyd's step)."""
  codebooks = codebooks_of(cifar_patches, 2, 8)
  layer = make_layer(codebooks, update="ema", decay=0.0, epsilon=1e-9)
  x = cifar_patches[:512]
  codes, _ = residual_reference(x, codebooks)
  layer(x, training=True)
  residual = x.astype(np.float64)
  for i, codebook in enumerate(codebooks):
    used = np.unique(codes[:, i])
    means = np.stack([residual[codes[:, i] == c].mean(0) for c in used])
    np.testing.assert_allclose(layer.level(i).codebook.numpy()[used], means, atol=1e-4)
    residual = residual - codebook[codes[:, i]]


def test_quantizer_dropout_trains_each_example_on_its_first_levels(cifar_patches):
  codebooks = codebooks_of(cifar_patches, 4, 16)
  layer = make_layer(codebooks, quantizer_dropout=1.0, seed=3)
  x = cifar_patches[:256]
  codes, _ = residual_reference(x, codebooks)
  # The partial sums of the codebooks before the step's EMA update moves them.
  partial = np.cumsum([codebooks[i][codes[:, i]] for i in range(4)], axis=0)       # [4, N, D]
  out = layer(x, training=True).numpy()
  matches = np.all(np.abs(partial - out[None]) < 1e-5, axis=-1)                     # [4, N]
  assert matches.any(axis=0).all()                  # every example is some partial sum
  uses = matches.argmax(axis=0) + 1
  assert set(uses.tolist()) == {1, 2, 3, 4}         # n drawn in [1, Q]
  # The last level counted only the examples that used it.
  last = np.bincount(codes[uses == 4, 3], minlength=16)
  np.testing.assert_array_equal(layer.level(3).batch_counts.numpy()[0], last)
  # Outside training every example takes every level.
  np.testing.assert_allclose(layer(x).numpy(), layer.decode(layer.encode(x)).numpy(),
                             atol=1e-5)


def test_a_shared_codebook_serves_every_level(cifar_patches):
  codebooks = codebooks_of(cifar_patches, 1, 32)
  layer = make_layer(codebooks * 3, shared_codebook=True)
  assert len(layer.levels) == 1
  x = cifar_patches[:100]
  codes, total = residual_reference(x, codebooks * 3)
  out = layer(x, return_codes=True)
  np.testing.assert_array_equal(out.codes.numpy(), codes)
  np.testing.assert_allclose(out.quantized.numpy(), total, atol=1e-5)


@pytest.mark.parametrize("groups", [1, 2])
def test_mirrored_replicas_train_as_one_device_on_the_global_batch(cifar_patches,
                                                                  mirrored_strategy, groups):
  batch = cifar_patches[:128]

  def train(strategy):
    with strategy.scope():
      layer = ResidualVectorQuantizer(16, 2, update="ema", decay=0.8, seed=5, groups=groups)
      layer.build((None, 48))

    @tf.function
    def step(x):
      strategy.run(lambda x: layer(x, training=True), args=(x,))

    for _ in range(3):
      step(per_replica(strategy, batch))
    return layer

  single = train(tf.distribute.OneDeviceStrategy("/cpu:0"))
  mirrored = train(mirrored_strategy)
  for a, b in zip(single.weights, mirrored.weights):
    for copy in b.value.values:
      np.testing.assert_allclose(copy.numpy(), a.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)


def test_mixed_precision_keeps_residuals_float32(cifar_patches):
  codebooks = codebooks_of(cifar_patches, 3, 16)
  plain = make_layer(codebooks)
  mixed = make_layer(codebooks, dtype="mixed_bfloat16")
  x = tf.cast(tf.cast(cifar_patches[:200], tf.bfloat16), tf.float32)
  out = mixed(x, return_codes=True)
  assert out.quantized.dtype == tf.bfloat16
  assert all(v.dtype == "float32" for v in mixed.weights if "int" not in v.dtype)
  np.testing.assert_array_equal(out.codes.numpy(), plain(x, return_codes=True).codes)


def test_keras_file_and_saved_model_round_trips(tmp_path, cifar_patches):
  check_round_trips(ResidualVectorQuantizer(16, 3, update="ema", quantizer_dropout=0.5, seed=2,
                                            name="rvq"), 8, cifar_patches, tmp_path)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(num_quantizers=0), "num_quantizers"),
    (dict(num_quantizers=2, quantizer_dropout=1.5), "quantizer_dropout"),
    (dict(num_quantizers=2, update="kmeans"), "update"),
])
def test_bad_arguments_name_the_argument(kwargs, argument):
  with pytest.raises(ValueError, match=f"invalid {argument}="):
    ResidualVectorQuantizer(8, **kwargs)


def test_bad_calls_are_refused_with_a_clear_message():
  layer = ResidualVectorQuantizer(8, 2)
  with pytest.raises(ValueError, match=r"num_levels=3; expected an integer in \[1, "
                                       r"num_quantizers=2\]"):
    layer(np.zeros((2, 4), np.float32), num_levels=3)
  with pytest.raises(ValueError, match="at most num_quantizers=2"):
    layer.decode(np.zeros((2, 3), np.int32))
  with pytest.raises(ValueError, match="integer codes"):
    layer.decode(np.zeros((2, 2), np.float32))


def test_levels_take_every_vector_quantizer_option(cifar_patches):
  """Cosine levels of two blocks each: level i quantizes the residual's unit slices
  (float64 reference), codes [..., Q * B] level after level, decode sums the levels."""
  x = cifar_patches[:200]
  depth = x.shape[1]
  rng = np.random.default_rng(3)
  codebooks = [rng.normal(size=(2, 16, depth // 2)) for _ in range(2)]

  class Blocks(keras.initializers.Initializer):
    calls = 0

    def __call__(self, shape, dtype=None):
      Blocks.calls += 1
      return tf.constant(codebooks[Blocks.calls - 1], dtype)

  layer = ResidualVectorQuantizer(16, 2, num_blocks=2, distance="cosine",
                                  codebook_initializer=Blocks())
  out = layer(x, return_codes=True)
  assert layer.codes_per_position == 4 and out.codes.shape == (200, 4)
  assert all(level.distance == "cosine" and level.num_blocks == 2 for level in layer.levels)
  residual, expected = x.astype(np.float64), []
  for codebook in codebooks:
    level_vectors = []
    for b in range(2):
      unit_codes = codebook[b] / np.linalg.norm(codebook[b], axis=1, keepdims=True)
      piece = residual[:, b * depth // 2:(b + 1) * depth // 2]
      piece = piece / np.linalg.norm(piece, axis=1, keepdims=True)
      codes = ref.nearest(piece, unit_codes)
      expected.append(codes)
      level_vectors.append(unit_codes[codes])
    residual = residual - np.concatenate(level_vectors, axis=1)
  codes = np.stack(expected, axis=1)
  agree = (out.codes.numpy() == codes).all(axis=1)
  assert agree.mean() > 0.99   # ties at float32 precision may go either way
  np.testing.assert_allclose(layer.decode(out.codes).numpy(), out.quantized.numpy(),
                             atol=1e-5)
  np.testing.assert_array_equal(layer.encode(x).numpy(), out.codes.numpy())
  config = layer.get_config()
  assert config["distance"] == "cosine" and config["num_blocks"] == 2
