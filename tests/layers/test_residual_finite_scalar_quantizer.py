"""ResidualFiniteScalarQuantizer against float64 NumPy FSQ stage by stage."""

import numpy as np
import pytest
import tensorflow as tf

from replicas import assert_replicas_hold, train_alone_and_mirrored
from round_trip import check_round_trips
from test_finite_scalar_quantizer import encoder_outputs, reference
from vqkeras.layers import ResidualFiniteScalarQuantizer

LEVELS = [8, 5, 5, 5]


def residual_reference(z, levels, num_quantizers):
  """Codes [N, Q] and the sum [N, d]: stage i quantizes r_i (L - 1)^i on the FSQ grid
  and scales the grid point back by (L - 1)^-i."""
  residual, total, codes = z.astype(np.float64), 0.0, []
  for i in range(num_quantizers):
    scale = (np.asarray(levels, np.float64) - 1.0) ** -i
    quantized, index = reference(residual / scale, levels)
    codes.append(index)
    total = total + quantized * scale
    residual = residual - quantized * scale
  return np.stack(codes, -1), total


def test_each_stage_quantizes_the_residual_on_a_finer_grid(cifar_patches):
  z = encoder_outputs(cifar_patches, 4)
  layer = ResidualFiniteScalarQuantizer(LEVELS, 3)
  out = layer(z.astype(np.float32), training=True, return_codes=True)
  codes, total = residual_reference(z, LEVELS, 3)
  # Inputs within float32 rounding of a grid boundary may go either way at some stage.
  agree = np.all(out.codes.numpy() == codes, axis=-1)
  assert agree.mean() > 0.99 and out.codes.shape[-1] == 3 == layer.codes_per_position
  np.testing.assert_allclose(out.quantized.numpy()[agree], total[agree], atol=1e-5)
  np.testing.assert_allclose(layer.decode(out.codes).numpy(), out.quantized.numpy(),
                             atol=1e-6)
  np.testing.assert_array_equal(layer.encode(z.astype(np.float32)).numpy(),
                                out.codes.numpy())
  # Inside the grid's range, three stages are far closer to z than the first alone.
  small = z * 0.2
  first = reference(small, LEVELS)[0]
  assert (np.mean((layer(small.astype(np.float32)).numpy() - small) ** 2) <
          0.05 * np.mean((first - small) ** 2))
  assert [stage.name for stage in layer.code_layers()] == ["stage_0", "stage_1", "stage_2"]
  assert all(int(stage.num_updates) == 1 for stage in layer.code_layers())   # one step


def test_the_gradient_passes_each_stage_straight_through_its_bound(cifar_patches):
  """d z_q / d z = sum_i FSQ_i's bound derivative at r_i (L - 1)^i (float64)."""
  z = encoder_outputs(cifar_patches[:100], 4)
  layer = ResidualFiniteScalarQuantizer(LEVELS, 2)
  x = tf.constant(z.astype(np.float32))
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = tf.reduce_sum(layer(x))
  levels = np.asarray(LEVELS, np.float64)
  half_l = (levels - 1) * (1 - 1e-3) / 2
  shift = np.tan(np.where(levels % 2 == 0, 0.5, 0.0) / half_l)
  half_width = np.floor(levels / 2)
  residual, want = z, 0.0
  for i in range(2):
    scale = (levels - 1) ** -i
    u = residual / scale
    want = want + (1 - np.tanh(u + shift) ** 2) * half_l / half_width
    residual = residual - reference(u, LEVELS)[0] * scale
  np.testing.assert_allclose(tape.gradient(y, x).numpy(), want, rtol=1e-4, atol=1e-6)


def test_mirrored_replicas_record_every_stage_on_the_global_batch(cifar_patches,
                                                                 mirrored_strategy):
  z = encoder_outputs(cifar_patches[:128], 4).astype(np.float32)
  single, mirrored = train_alone_and_mirrored(lambda: ResidualFiniteScalarQuantizer(LEVELS, 2),
                                              mirrored_strategy, z)
  for want, got in zip(single.code_layers(), mirrored.code_layers()):
    assert_replicas_hold(want, got, ("batch_counts", "last_used", "num_updates",
                                     "batch_perplexity"))


def test_mixed_precision_keeps_residuals_float32(cifar_patches):
  z = tf.cast(tf.cast(encoder_outputs(cifar_patches[:200], 4), tf.bfloat16), tf.float32)
  plain = ResidualFiniteScalarQuantizer(LEVELS, 2)(z, return_codes=True)
  mixed = ResidualFiniteScalarQuantizer(LEVELS, 2, dtype="mixed_bfloat16")(
      z, return_codes=True)
  assert mixed.quantized.dtype == tf.bfloat16
  np.testing.assert_array_equal(mixed.codes.numpy(), plain.codes.numpy())


def test_keras_file_and_saved_model_round_trips(tmp_path, cifar_patches):
  check_round_trips(ResidualFiniteScalarQuantizer([7, 5, 5], 2, name="rfsq"), 3,
                    cifar_patches, tmp_path)


def test_bad_arguments_and_codes_are_refused_with_a_clear_message():
  with pytest.raises(ValueError, match="invalid num_quantizers=0"):
    ResidualFiniteScalarQuantizer(LEVELS, 0)
  with pytest.raises(ValueError, match="invalid levels="):
    ResidualFiniteScalarQuantizer([8, 1], 2)
  layer = ResidualFiniteScalarQuantizer(LEVELS, 2)
  with pytest.raises(ValueError, match=r"codes of shape \[\.\.\., num_quantizers=2\]"):
    layer.decode(np.zeros((3, 1), np.int32))
  with pytest.raises(ValueError, match=r"needs a last dimension of 4"):
    layer(np.zeros((2, 6), np.float32))
