"""The training step shared by bin/train, the benchmarks and the examples.

A model provides `loss_and_weight(features, training)` returning (sum of its per-element
losses, number of elements); the bottleneck adds its own losses with
`add_loss`. The step divides the sum by the element count of the *global*
batch, so that the gradient summed over replicas is the gradient of the global
mean, and weights the auxiliary losses (per-replica means) by 1/replicas.
"""

import tensorflow as tf


def _global_sum(value):
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return value
  return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def replica_loss(model, features, training):
  """This replica's share of the global loss, and its parts for logging.

  Returns:
    (loss to differentiate, {"loss": main loss, "auxiliary": sum of add_loss terms}),
    the logged parts as global-batch means.
  """
  total, weight = model.loss_and_weight(features, training=training)
  replicas = tf.distribute.get_replica_context().num_replicas_in_sync \
      if tf.distribute.get_replica_context() else 1
  main = total / tf.maximum(_global_sum(weight), 1.0)
  auxiliary = tf.add_n(model.losses) if model.losses else tf.constant(0.0)
  loss = main + auxiliary / replicas
  return loss, {"loss": _global_sum(main), "auxiliary": _global_sum(auxiliary) / replicas}


def make_train_step(model, optimizer, input_signature=None):
  """A tf.function running one optimizer step on one batch per replica.

  Args:
    model: a Keras model with `loss_and_weight(features, training)`.
    optimizer: a Keras optimizer.
    input_signature: the features' TensorSpecs; with None dimensions the step
      is traced once for every batch shape (token batches vary in shape).

  Returns:
    step(features) -> {"loss", "auxiliary"} scalars (under a strategy, call it
    inside strategy.run).
  """
  def step(features):
    with tf.GradientTape() as tape:
      loss, parts = replica_loss(model, features, training=True)
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(gradients, model.trainable_variables)
    return parts

  if input_signature is None:
    return tf.function(step)
  return tf.function(step, input_signature=[input_signature])


def feature_signature(dataset):
  """TensorSpecs of a dataset's elements with the batch dimension left open.

  Dimensions the dataset leaves open (token lengths) stay open too, so the step
  is traced once, not once per batch shape.
  """
  return tf.nest.map_structure(
      lambda spec: tf.TensorSpec([None] + spec.shape.as_list()[1:], spec.dtype),
      dataset.element_spec)
