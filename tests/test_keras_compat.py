"""The private Keras calls of vqkeras/keras_compat.py still do what vqkeras needs of them.

These fail when a Keras release renames or changes one of them.
"""

import keras
import tensorflow as tf

from vqkeras import distribute
from vqkeras.keras_compat import PerReplicaLosses


class AddsItsInputSum(PerReplicaLosses, keras.layers.Layer):
  """Adds the sum of its input as a loss; returns the input."""

  def call(self, x):
    self.add_loss(tf.reduce_sum(x))
    return x


class Outer(keras.Model):

  def __init__(self):
    super().__init__()
    self.inner = keras.Sequential([keras.layers.Dense(4), AddsItsInputSum(name="lossy")])

  def call(self, x):
    return self.inner(x)


def test_per_replica_losses_are_read_through_the_model_and_cleared_at_each_call():
  model = Outer()
  model(tf.zeros([1, 3]))
  model.inner.layers[1](tf.constant([[1.0, 2.0]]))   # called directly: its own loss, 3
  assert [float(loss) for loss in model.losses] == [3.0]
  model.inner.layers[1](tf.constant([[5.0]]))         # a new call clears the last one's
  assert [float(loss) for loss in model.losses] == [5.0]


def test_in_a_stateless_scope_the_scope_collects_the_losses():
  layer = AddsItsInputSum()
  layer(tf.constant([1.0]))
  with keras.StatelessScope(collect_losses=True) as scope:
    layer(tf.constant([2.0, 4.0]))
    assert [float(loss) for loss in layer.losses] == [6.0]
  assert [float(loss) for loss in scope.losses] == [6.0]


def test_each_replica_reads_its_own_losses(mirrored_strategy):
  with mirrored_strategy.scope():
    layer = AddsItsInputSum()

  @tf.function
  def step():
    def replica_step():
      value = tf.cast(distribute.replica_id(), tf.float32) + 1.0
      layer(tf.reshape(value, [1]))
      # A cross-replica sum between adding and reading: the other replica's thread
      # runs its call (and Keras' clearing of losses) in between.
      tf.distribute.get_replica_context().all_reduce("sum", value)
      return tf.add_n(layer.losses), len(layer.losses)
    return mirrored_strategy.run(replica_step)

  losses, counts = step()
  assert [float(v) for v in mirrored_strategy.experimental_local_results(losses)] == [1.0, 2.0]
  assert counts == 1
