"""The training step shared by bin/train, the benchmarks and the examples.

A model provides `loss_and_weight(features, training)` returning (sum of its per-element
losses, number of elements); the bottleneck adds its own losses with
`add_loss`. The step divides the sum by the element count of the *global*
batch, so that the gradient summed over replicas is the gradient of the global
mean, and weights the auxiliary losses (per-replica means) by 1/replicas.
"""

import keras
import tensorflow as tf

from vqkeras.distribute import num_replicas, sum_over_replicas


def replica_loss(model, features, training):
  """This replica's share of the global loss, and its parts for logging.

  Returns:
    (loss to differentiate, parts): parts are global-batch values, the same on
    every replica: "loss" (main loss, mean over the global batch), "auxiliary"
    (the bottleneck's add_loss terms), "weight" (elements the loss averages
    over, e.g. target tokens) and "examples".
  """
  total, weight = model.loss_and_weight(features, training=training)
  global_weight = sum_over_replicas(weight)
  main = total / tf.maximum(global_weight, 1.0)
  auxiliary = tf.add_n(model.losses) / num_replicas() if model.losses else tf.constant(0.0)
  examples = tf.cast(tf.shape(tf.nest.flatten(features)[0])[0], tf.float32)
  logged = sum_over_replicas({"loss": main, "auxiliary": auxiliary, "examples": examples})
  return main + auxiliary, {**logged, "weight": global_weight}


def clip_by_global_norm(gradients, clip_norm, loss_scale=1.0):
  """This replica's gradients scaled so that their sum over replicas has a global norm of
  at most clip_norm; returns (gradients, the global norm before clipping).

  Keras' `global_clipnorm` clips each replica's share before the optimizer sums them:
  under tf.distribute that is not the clipping of the global batch's gradient. Here
  the norm is that of the summed gradient (one more all-reduce of the gradients when
  there are several replicas), and every replica scales by the same factor.
  `loss_scale` divides out mixed_float16's loss scaling from the norm. Sparse
  gradients (embedding lookups) become dense first: their slices may repeat a row,
  and the norm is the dense sum's.
  """
  gradients = [None if g is None else tf.convert_to_tensor(g) for g in gradients]
  total = sum_over_replicas(gradients) if num_replicas() > 1 else gradients
  norm = tf.linalg.global_norm([g for g in total if g is not None]) / loss_scale
  factor = clip_norm / tf.maximum(norm, clip_norm)
  return [None if g is None else g * tf.cast(factor, g.dtype) for g in gradients], norm


def train_step_fn(model, optimizer, clip_norm=0.0):
  """The per-replica training step, a plain function: features -> parts (see replica_loss).

  clip_norm > 0 clips the global batch's gradient to that global norm
  (`clip_by_global_norm`) and adds "gradient_norm" (before clipping) to the parts.
  """
  def step(features):
    with tf.GradientTape() as tape:
      loss, parts = replica_loss(model, features, training=True)
      scaled = optimizer.scale_loss(loss)   # loss scaling under mixed_float16, else as is
    gradients = tape.gradient(scaled, model.trainable_variables)
    if clip_norm > 0.0:
      loss_scale = (optimizer.dynamic_scale
                    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else 1.0)
      gradients, parts["gradient_norm"] = clip_by_global_norm(gradients, clip_norm, loss_scale)
    optimizer.apply(gradients, model.trainable_variables)
    return parts
  return step


def build(model, optimizer, features):
  """Creates the model's and the optimizer's variables from one batch, eagerly.

  A tf.function that creates variables at its first call is traced twice (once to
  create them, once to run them); a step on built variables is traced once, and for
  the latent model a trace costs about as much as a hundred steps of a small one.
  """
  model.loss_and_weight(features, training=False)
  optimizer.build(model.trainable_variables)


def make_train_step(model, optimizer, input_signature=None, clip_norm=0.0, jit_compile=False):
  """One optimizer step on one batch on one device, as a tf.function.

  Args:
    model: a Keras model with `loss_and_weight(features, training)`.
    optimizer: a Keras optimizer.
    input_signature: the features' TensorSpecs; with None dimensions the step
      is traced once, not for every batch shape (token batches vary in shape).
    clip_norm: > 0 clips the gradient to this global norm (see `train_step_fn`).
    jit_compile: compile the step with XLA (it then compiles once per batch shape).
  """
  step = train_step_fn(model, optimizer, clip_norm)
  signature = None if input_signature is None else [input_signature]
  return tf.function(step, input_signature=signature, jit_compile=jit_compile)


def feature_signature(dataset):
  """TensorSpecs of a dataset's elements with the batch dimension left open.

  Dimensions the dataset leaves open (token lengths) stay open too, so the step
  is traced once, not once per batch shape.
  """
  return tf.nest.map_structure(
      lambda spec: tf.TensorSpec([None] + spec.shape.as_list()[1:], spec.dtype),
      dataset.element_spec)
