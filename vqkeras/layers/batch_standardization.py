"""Standardization of each feature over the real positions of the global batch.

Keras' BatchNormalization computes masked moments per replica: given a mask it
ignores `synchronized=True`, so under `tf.distribute` each replica would scale its
own share of the batch differently. Here the moments are sums over the replicas,
and a step on N replicas equals the step on one device with the whole batch.
"""

import keras
import tensorflow as tf

from vqkeras.distribute import sum_over_replicas


@keras.saving.register_keras_serializable(package="vqkeras")
class BatchStandardization(keras.layers.Layer):
  """(x - mean) / sqrt(variance + epsilon), per feature, no learned scale or shift.

  Training uses the mean and variance of the batch's real positions (mask True),
  over every replica of the step, and updates their moving averages; inference,
  and a frozen layer (`trainable=False`), use the moving averages.

  Args:
    momentum: of the moving averages.
    epsilon: added to the variance.

  Call:
    inputs: `[..., depth]`.
    mask: optional bool `inputs.shape[:-1]`; False positions are left out of the
      moments (they are standardized all the same).
  """

  def __init__(self, momentum=0.99, epsilon=1e-3, **kwargs):
    super().__init__(**kwargs)
    self.momentum = float(momentum)
    self.epsilon = float(epsilon)
    self.supports_masking = True

  def build(self, input_shape):
    depth = input_shape[-1]
    if depth is None:
      raise ValueError(f"{self.name}: the last dimension of the input must be known; "
                       f"got input shape {tuple(input_shape)}.")
    self.moving_mean = self.add_weight(name="moving_mean", shape=(depth,), dtype="float32",
                                       autocast=False, initializer="zeros", trainable=False)
    self.moving_variance = self.add_weight(name="moving_variance", shape=(depth,),
                                           dtype="float32", autocast=False,
                                           initializer="ones", trainable=False)

  def call(self, inputs, training=False, mask=None):
    x = tf.cast(inputs, tf.float32)
    if training and self.trainable:   # frozen, it runs as in inference (as BatchNormalization)
      mean, variance = self.moments(x, mask)
      self.moving_mean.assign(self.momentum * self.moving_mean + (1 - self.momentum) * mean)
      self.moving_variance.assign(self.momentum * self.moving_variance +
                                  (1 - self.momentum) * variance)
    else:
      mean, variance = self.moving_mean, self.moving_variance
    y = (x - mean) * tf.math.rsqrt(variance + self.epsilon)
    return tf.cast(y, self.compute_dtype)

  @staticmethod
  def moments(x, mask=None):
    """Mean and variance `[depth]` over the real positions of every replica (two passes:
    a mean large against the spread would cancel in E[x^2] - mean^2)."""
    x = tf.reshape(x, [-1, tf.shape(x)[-1]])
    weights = (tf.ones_like(x[:, :1]) if mask is None else
               tf.reshape(tf.cast(mask, tf.float32), [-1, 1]))
    count, total = sum_over_replicas((tf.reduce_sum(weights), tf.reduce_sum(x * weights, 0)))
    mean = tf.math.divide_no_nan(total, count)
    squares = sum_over_replicas(tf.reduce_sum(tf.square(x - mean) * weights, 0))
    return mean, tf.math.divide_no_nan(squares, count)

  def compute_output_spec(self, inputs, training=False, mask=None):
    return keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)

  def compute_mask(self, inputs, mask=None):
    return mask

  def get_config(self):
    config = super().get_config()
    config.update({"momentum": self.momentum, "epsilon": self.epsilon})
    return config
