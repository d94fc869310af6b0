"""Under MirroredStrategy the codebook statistics are summed over replicas every step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from replicas import per_replica
from vqkeras.layers import VectorQuantizer

GLOBAL_BATCH = 64


def build_model(update, restart):
  model = keras.Sequential([
      keras.layers.Dense(16, name="encoder"),
      VectorQuantizer(32, update=update, num_blocks=2, decay=0.9, seed=5, usage_window=2,
                      restart_dead_codes=restart, name="vq"),
      keras.layers.Dense(48, name="decoder"),
  ])
  model.build((None, 48))
  return model


def train(strategy, update, restart, initial_weights, batches):
  """A few SGD steps; the loss is the global-batch mean, so gradients sum over replicas."""
  with strategy.scope():
    model = build_model(update, restart)
    model.set_weights(initial_weights)
    optimizer = keras.optimizers.SGD(0.05)
    optimizer.build(model.trainable_variables)
  replicas = strategy.num_replicas_in_sync

  @tf.function
  def step(x):
    def replica_step(x):
      with tf.GradientTape() as tape:
        y = model(x, training=True)
        loss = (tf.reduce_sum(tf.reduce_mean(tf.square(y - x), axis=-1)) / GLOBAL_BATCH +
                tf.add_n(model.losses) / replicas)
      # Keras' optimizer sums the gradients over replicas itself.
      optimizer.apply(tape.gradient(loss, model.trainable_variables),
                      model.trainable_variables)
    strategy.run(replica_step, args=(x,))

  for batch in batches:
    step(per_replica(strategy, batch))
  return model


def local_values(variable):
  return [v.numpy() for v in variable.value.values] if hasattr(variable.value, "values") \
      else [variable.numpy()]


@pytest.mark.parametrize("update, restart", [("ema", False), ("gradient", False),
                                             ("ema", True)])
def test_mirrored_two_replicas_match_one_device_on_the_global_batch(
    cifar_patches, mirrored_strategy, update, restart):
  batches = [cifar_patches[GLOBAL_BATCH * i:GLOBAL_BATCH * (i + 1)] for i in range(4)]
  initial = build_model(update, restart).get_weights()
  single = train(tf.distribute.OneDeviceStrategy("/cpu:0"), update, restart, initial, batches)
  mirrored = train(mirrored_strategy, update, restart, initial, batches)
  vq = mirrored.get_layer("vq")
  for variable in vq.weights:
    copies = local_values(variable)
    assert len(copies) == 2, variable.path
    np.testing.assert_array_equal(copies[0], copies[1], err_msg=variable.path)
  for a, b in zip(single.weights, mirrored.weights):
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
  # The codebook moved: the test compares trained states, not initial ones.
  assert not np.allclose(vq.embeddings.numpy(), initial[2])


def test_mirrored_soft_em_replicas_hold_the_same_codebook(cifar_patches, mirrored_strategy):
  """Soft-EM draws differ per replica; the summed statistics keep the copies identical."""
  batches = [cifar_patches[GLOBAL_BATCH * i:GLOBAL_BATCH * (i + 1)] for i in range(3)]
  initial = build_model("soft_em", True).get_weights()
  mirrored = train(mirrored_strategy, "soft_em", True, initial, batches)
  for variable in mirrored.get_layer("vq").weights:
    copies = local_values(variable)
    assert len(copies) == 2
    np.testing.assert_array_equal(copies[0], copies[1], err_msg=variable.path)


def test_kmeans_init_on_replicas_equals_one_device_on_the_global_batch(cifar_patches,
                                                                       mirrored_strategy):
  x = cifar_patches[:256]
  single = VectorQuantizer(32, num_blocks=2, seed=6)
  single.kmeans_init(x, iterations=4)
  with mirrored_strategy.scope():
    mirrored = VectorQuantizer(32, num_blocks=2, seed=6)
    mirrored.build((None, 48))

  @tf.function
  def init(x):
    mirrored_strategy.run(lambda x: mirrored.kmeans_init(x, iterations=4), args=(x,))

  init(per_replica(mirrored_strategy, x))
  copies = local_values(mirrored.embeddings)
  np.testing.assert_array_equal(copies[0], copies[1])
  np.testing.assert_allclose(copies[0], single.embeddings.numpy(), atol=1e-5)
