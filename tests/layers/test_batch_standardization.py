"""BatchStandardization against float64 NumPy moments of the real positions."""

import keras
import numpy as np
import tensorflow as tf

from vqkeras.layers import BatchStandardization


def masked_batch(cifar_patches):
  """CIFAR patches as `[4, 6, 48]` with a shared offset (a mean large against the
  spread) and ragged lengths."""
  x = cifar_patches[:24].reshape(4, 6, 48).astype(np.float32) + 100.0
  mask = np.arange(6)[None] < np.array([6, 2, 5, 1])[:, None]
  return x, mask


def test_training_standardizes_each_feature_over_the_real_positions(cifar_patches):
  x, mask = masked_batch(cifar_patches)
  layer = BatchStandardization(momentum=0.9, epsilon=1e-3)
  y = layer(x, training=True, mask=mask).numpy()
  real = x[mask].astype(np.float64)
  mean, variance = real.mean(axis=0), real.var(axis=0)
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(variance + 1e-3), rtol=1e-4, atol=1e-4)
  # Padding (here: large values) does not move the moments.
  padded = np.where(mask[..., None], x, 1e4).astype(np.float32)
  np.testing.assert_allclose(BatchStandardization()(padded, training=True, mask=mask)[mask],
                             y[mask], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * mean, rtol=1e-5)
  np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * variance, rtol=1e-5)


def test_inference_uses_the_moving_averages(cifar_patches):
  x, mask = masked_batch(cifar_patches)
  layer = BatchStandardization(momentum=0.5, epsilon=0.0)
  for _ in range(40):   # the moving averages converge to the batch's moments
    layer(x, training=True, mask=mask)
  real = x[mask].astype(np.float64)
  shifted = x[:1] * 2.0   # one other batch: inference must not use its moments
  np.testing.assert_allclose(layer(shifted).numpy(),
                             (shifted - real.mean(0)) / real.std(0), rtol=1e-3, atol=1e-3)


def test_a_frozen_layer_uses_and_keeps_its_moving_averages(cifar_patches):
  x, mask = masked_batch(cifar_patches)
  layer = BatchStandardization(momentum=0.5, epsilon=0.0)
  layer(x, training=True, mask=mask)
  mean, variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
  layer.trainable = False
  y = layer(x, training=True, mask=mask).numpy()
  np.testing.assert_array_equal(layer.moving_mean.numpy(), mean)
  np.testing.assert_array_equal(layer.moving_variance.numpy(), variance)
  np.testing.assert_allclose(y, (x - mean.astype(np.float64)) / np.sqrt(variance), rtol=1e-4)


def test_mirrored_replicas_standardize_with_the_global_moments(cifar_patches,
                                                               mirrored_strategy):
  # Keras' BatchNormalization would use each replica's own moments under a mask.
  x, mask = masked_batch(cifar_patches)
  with mirrored_strategy.scope():
    layer = BatchStandardization()
    layer.build(x.shape)
  halves = mirrored_strategy.experimental_distribute_values_from_function(
      lambda context: (x[2 * context.replica_id_in_sync_group:][:2],
                       mask[2 * context.replica_id_in_sync_group:][:2]))

  @tf.function
  def step(inputs):
    return mirrored_strategy.run(lambda x, m: layer(x, training=True, mask=m), args=inputs)

  got = np.concatenate([part.numpy() for part in
                        mirrored_strategy.experimental_local_results(step(halves))])
  want = BatchStandardization()(x, training=True, mask=mask).numpy()
  np.testing.assert_allclose(got[mask], want[mask], rtol=1e-3, atol=1e-3)   # float32 sums
  copies = [v.numpy() for v in layer.moving_mean.value.values]
  np.testing.assert_array_equal(copies[0], copies[1])


def test_serializes_with_its_moving_averages(cifar_patches, tmp_path):
  x, mask = masked_batch(cifar_patches)
  inputs = keras.Input((6, 48))
  model = keras.Model(inputs, BatchStandardization(momentum=0.7, name="norm")(inputs))
  model.get_layer("norm")(x, training=True, mask=mask)
  model.save(tmp_path / "model.keras")
  loaded = keras.models.load_model(tmp_path / "model.keras")
  assert loaded.get_layer("norm").momentum == 0.7
  np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
  assert not np.allclose(model(x).numpy(), x)
