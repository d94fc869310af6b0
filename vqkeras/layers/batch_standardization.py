"""Standardization of each feature over the real positions of the global batch.

Keras' BatchNormalization computes masked moments per replica: given a mask it
ignores `synchronized=True`, so under `tf.distribute` each replica would scale its
own share of the batch differently. Here the moments are sums over the replicas,
and a step on N replicas equals the step on one device with the whole batch.

Standardizing each feature keeps the batch from meeting in one point, not from
lying on a few directions: features that become copies of one another (seen on
Multi30k: 55% of the latents' variance in one direction, from 17%, within 50
steps) leave the latents a line or a plane. The optional decorrelation loss
penalizes the features' correlations (VICReg's covariance term).
"""

import keras
import tensorflow as tf

from vqkeras.distribute import sum_over_replicas
from vqkeras.layers.replica_losses import ReplicaLocalLosses


@keras.saving.register_keras_serializable(package="vqkeras")
class BatchStandardization(ReplicaLocalLosses, keras.layers.Layer):
  """(x - mean) / sqrt(variance + epsilon), per feature, no learned scale or shift.

  Training uses the mean and variance of the batch's real positions (mask True),
  over every replica of the step, and updates their moving averages; inference
  uses the moving averages.

  Args:
    momentum: of the moving averages.
    epsilon: added to the variance.
    decorrelation: weight w >= 0 of the loss w / d * sum_{i != j} C_ij^2 added in
      training, where C is the `[d, d]` correlation matrix of the standardized
      features over the real positions of the global batch (Bardes et al. 2022,
      VICReg, the covariance term). 0 adds no loss.

  Call:
    inputs: `[..., depth]`.
    mask: optional bool `inputs.shape[:-1]`; False positions are left out of the
      moments (they are standardized all the same).
  """

  def __init__(self, momentum=0.99, epsilon=1e-3, decorrelation=0.0, **kwargs):
    super().__init__(**kwargs)
    if not decorrelation >= 0.0:
      raise ValueError(f"BatchStandardization: decorrelation must be a float >= 0 (the "
                       f"loss weight; 0 for none), got {decorrelation!r}.")
    self.momentum = float(momentum)
    self.epsilon = float(epsilon)
    self.decorrelation = float(decorrelation)
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
    if training:
      mean, variance = self.moments(x, mask)
      self.moving_mean.assign(self.momentum * self.moving_mean + (1 - self.momentum) * mean)
      self.moving_variance.assign(self.momentum * self.moving_variance +
                                  (1 - self.momentum) * variance)
    else:
      mean, variance = self.moving_mean, self.moving_variance
    y = (x - mean) * tf.math.rsqrt(variance + self.epsilon)
    if training and self.decorrelation > 0.0:
      self.add_loss(self.decorrelation * self.correlation_penalty(y, mask))
    return tf.cast(y, self.compute_dtype)

  @staticmethod
  def correlation_penalty(y, mask=None):
    """sum_{i != j} C_ij^2 / d of standardized features y `[..., d]`, C = E[y y^T] over the
    real positions of every replica.

    Differentiable through the cross-replica sum, whose gradient is the sum of the
    replicas' gradients: each replica adds the global value, which Keras weighs by
    1 / replicas.
    """
    y = tf.reshape(y, [-1, tf.shape(y)[-1]])
    weights = (tf.ones_like(y[:, :1]) if mask is None else
               tf.reshape(tf.cast(mask, tf.float32), [-1, 1]))
    count, products = sum_over_replicas((tf.reduce_sum(weights),
                                         tf.matmul(y * weights, y, transpose_a=True)))
    correlation = tf.math.divide_no_nan(products, count)
    off_diagonal = correlation - tf.linalg.diag(tf.linalg.diag_part(correlation))
    return tf.reduce_sum(tf.square(off_diagonal)) / tf.cast(tf.shape(y)[-1], tf.float32)

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
    config.update({"momentum": self.momentum, "epsilon": self.epsilon,
                   "decorrelation": self.decorrelation})
    return config
