"""A layer trained alone and as mirrored replicas on the shards of one batch."""

import numpy as np
import tensorflow as tf


def per_replica(strategy, array):
  """`array` split along its first axis into one shard per replica, a distributed value."""
  shards = np.split(array, strategy.num_replicas_in_sync)
  return strategy.experimental_distribute_values_from_function(
      lambda context: tf.constant(shards[context.replica_id_in_sync_group]))


def train_alone_and_mirrored(make_layer, strategy, inputs, mask=None):
  """(single, mirrored): a layer of `make_layer()` after one training call on the whole
  batch on one device, and another built in the strategy's scope after one training call
  on its replicas' shards (with the shards of `mask`, if given)."""
  single = make_layer()
  single(inputs, training=True, mask=mask)
  with strategy.scope():
    mirrored = make_layer()
    mirrored.build(inputs.shape)
  args = [per_replica(strategy, a) for a in (inputs, mask) if a is not None]

  @tf.function
  def step(*args):
    strategy.run(lambda x, mask=None: mirrored(x, training=True, mask=mask), args=args)

  step(*args)
  return single, mirrored


def assert_replicas_hold(single, mirrored, names):
  """Every replica's copy of each variable `names` of `mirrored` equals `single`'s."""
  for name in names:
    for value in getattr(mirrored, name).value.values:
      np.testing.assert_array_equal(value.numpy(), getattr(single, name).numpy(),
                                    err_msg=f"{mirrored.name}/{name}")
