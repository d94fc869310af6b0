"""The Gumbel-softmax bottleneck (Jang et al. 2017; Maddison et al. 2017): the other
discrete bottleneck Kaiser et al. 2018 and Tensor2Tensor compare the VQ bottleneck with.

Each input vector gives logits over K codes by a learned projection. In training a
relaxed one-hot sample y ~ RelaxedOneHotCategorical(tau, logits) (TensorFlow
Probability) weighs the code vectors, output = y . codebook; with straight_through the
forward pass uses the sample's hard one-hot and the gradient the relaxed one. Outside
training the output is the code vector of the argmax. The loss kl_weight * KL(q(z|x) ||
uniform) = kl_weight * (log K - H(q)) keeps the codes in use, as T2T's
`gumbel_softmax_discrete_bottleneck` does.
"""

import functools
import math

import keras
import tensorflow as tf

from vqkeras import quantization
from vqkeras.distribute import global_mean
from vqkeras.distributions import distributions
from vqkeras.keras_compat import PerReplicaLosses
from vqkeras.layers import checks
from vqkeras.layers.bottleneck import Bottleneck


@keras.saving.register_keras_serializable(package="vqkeras")
class GumbelSoftmaxQuantizer(PerReplicaLosses, Bottleneck):
  """A categorical bottleneck trained through the Gumbel-softmax relaxation.

  Args:
    codebook_size: K, the number of codes, at least 2.
    temperature: tau > 0 of the relaxed samples (lower: closer to one-hot).
    straight_through: if True, the forward pass uses the hard one-hot of each sample
      and the gradient the relaxed sample's; else the relaxed sample throughout.
    kl_weight: >= 0, the weight of KL(q(z|x) || uniform), a mean over valid positions.
    usage_window: W, the training steps over which a code counts as used (health).
    seed: int seed of the samples; drawn at random if None.
    **kwargs: `keras.layers.Layer` arguments (name, dtype, ...).

  Call arguments:
    inputs: float `[..., D]`.
    training: bool; True samples (and records the health); else the argmax code.
    mask: optional bool `[...]`; False positions are left out of the loss and health.
    return_codes: if True, return a `Quantized` record: quantized, codes int32
      `[..., 1]` (the argmax codes), samples: the codes `[..., 1, 1]`. The logits of
      q(z | x) are `logits(inputs)`.

  Returns:
    the code vectors `[..., D]` in the layer's compute dtype; or the record above.
  """

  codes_per_position = 1

  def __init__(self, codebook_size, temperature=1.0, straight_through=True, kl_weight=5e-4,
               usage_window=100, seed=None, **kwargs):
    super().__init__(**kwargs)
    _check(isinstance(codebook_size, int) and codebook_size >= 2, "codebook_size",
           codebook_size, "an integer of at least 2")
    _check(temperature > 0.0, "temperature", temperature, "a float > 0")
    _check(kl_weight >= 0.0, "kl_weight", kl_weight, "a float >= 0")
    _check(isinstance(usage_window, int) and usage_window >= 1, "usage_window",
           usage_window, "an integer of at least 1")
    self.codebook_size = codebook_size
    self.temperature = float(temperature)
    self.straight_through = bool(straight_through)
    self.kl_weight = float(kl_weight)
    self.usage_window = usage_window
    self.seed = checks.seed_or_random(seed)
    self.create_usage_metrics()

  def build(self, input_shape):
    self.depth = depth = checks.known_depth(self.name, input_shape)
    # Float32 as VectorQuantizer's codebook: the logits and the KL stay float32.
    self.to_logits = keras.layers.Dense(self.codebook_size, name="to_logits", dtype="float32")
    self.to_logits.build((None, depth))
    self.embeddings = self.add_weight(
        name="codebook", shape=(self.codebook_size, depth), dtype="float32", autocast=False,
        initializer=keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(depth),
                                                    seed=self.seed))
    self.build_usage((1, self.codebook_size))

  @property
  def codebook(self):
    """The code vectors, `[K, D]`."""
    return tf.convert_to_tensor(self.embeddings)

  def logits(self, inputs):
    """float32 `[..., K]` logits of q(z | x)."""
    return self.to_logits(self._checked_inputs(inputs))

  def encode(self, inputs):
    """The argmax codes of float `[..., D]` inputs: int32 `[..., 1]`."""
    return tf.argmax(self.logits(inputs), axis=-1, output_type=tf.int32)[..., None]

  def decode(self, codes):
    """The code vectors of int `[..., 1]` codes: float32 `[..., D]`."""
    codes = checks.position_codes(self.name, codes, 1)
    return tf.gather(self.codebook, tf.cast(codes[..., 0], tf.int32))

  def call(self, inputs, training=None, mask=None, return_codes=False):
    training = bool(training) and self.trainable
    logits = self.logits(inputs)
    codes = tf.argmax(logits, axis=-1, output_type=tf.int32)
    if training:
      weights = self.relaxed_sample(logits)
    else:
      weights = tf.one_hot(codes, self.codebook_size)
    quantized = tf.tensordot(weights, self.codebook, axes=1)
    valid = None if mask is None else tf.reshape(tf.cast(mask, tf.bool), [-1])
    if self.kl_weight:
      kl = math.log(self.codebook_size) - distributions().Categorical(logits=logits).entropy()
      self.add_loss(self.kl_weight * global_mean(tf.reshape(kl, [-1]), valid))
    self.code_health(codes[..., None], valid, training)
    outputs = tf.cast(quantized, self.compute_dtype)
    return self.quantized(outputs, codes[..., None], return_codes=return_codes)

  def relaxed_sample(self, logits):
    """A Gumbel-softmax sample `[..., K]` of each position (hard with straight_through,
    relaxed gradient); the draws differ per step and per replica."""
    sample = distributions().RelaxedOneHotCategorical(
        self.temperature, logits=logits).sample(seed=self.step_seed(salt=0))
    if not self.straight_through:
      return sample
    hard = tf.one_hot(tf.argmax(sample, axis=-1), self.codebook_size)
    return quantization.straight_through(sample, hard)

  def _checked_inputs(self, inputs):
    x = checks.float_inputs(self.name, inputs)
    if not self.built:
      self.build(x.shape)
    if x.shape[-1] != self.depth:
      raise ValueError(f"{self.name} was built for inputs of depth {self.depth}, got last "
                       f"dimension {x.shape[-1]} (input shape {x.shape}).")
    return tf.cast(x, tf.float32)

  def get_config(self):
    config = super().get_config()
    config.update({"codebook_size": self.codebook_size, "temperature": self.temperature,
                   "straight_through": self.straight_through, "kl_weight": self.kl_weight,
                   "usage_window": self.usage_window, "seed": self.seed})
    return config


_check = functools.partial(checks.check_argument, "GumbelSoftmaxQuantizer")
