"""Lookup-free quantization (LFQ: Yu et al. 2023, MAGVIT-v2) and binary spherical
quantization (BSQ: Zhao et al. 2024).

Each of the d channels of a vector is quantized to its sign:

  LFQ:  q_i = sign(z_i)                           the corners of [-1, 1]^d
  BSQ:  u = z / ||z||,  q_i = sign(u_i) / sqrt(d)  the corners on the unit sphere

A code is its bit pattern, k = sum_i [q_i > 0] 2^i (channel 0 the lowest bit): 2^d
codes and no codebook to look up or learn. With C codebooks the input holds C groups of
d channels, each its own code (and under BSQ its own sphere): codes `[..., C]`. Gradients pass straight through (to z; under
BSQ to u, through the normalization).

Losses (`add_loss`; means over the valid positions of the global batch):

  commitment  beta ||x - sg[q]||^2 / d, x = z (LFQ) or u (BSQ)
  entropy     entropy_weight (mean_x H(p(.|x)) - diversity_weight H(mean_x p(.|x))),
              in training only; p(k|x) = softmax_k(-||x - c_k||^2 / T) over the corners.

The first entropy term makes each position sure of its code, the second spreads the
batch over all codes; the sum is negative when the batch spreads well (down to
-diversity_weight d log 2), which is intended. Every corner has the same norm, so p
factorizes over the bits, p(k|x) = prod_i p_i(b_i(k) | x_i) with
p_i(1 | x) = sigmoid(4 s x_i / T) (s the corners' scale), and the per-position entropy is
exactly sum_i H(p_i) for any d. The batch's entropy H(mean_x p) does not factorize:

  entropy="exact"       the 2^d-way average distribution, as a product of its two halves
                        of bits: mean_x p(h, l | x) = (1/N) P_h^T P_l, `[2^(d-d/2), N] x
                        [N, 2^(d/2)]`: memory N 2^(d/2) + 2^d, never an [N, 2^d] softmax.
  entropy="factorized"  BSQ's approximation sum_i H(mean_x p_i), an upper bound of the
                        exact value; memory N d, for any d.
  entropy="auto"        exact up to EXACT_ENTROPY_MAX_BITS bits, factorized above.

The batch's average distribution is summed over replicas: the entropy is the global
batch's, not a mean of the replicas'. With C codebooks both terms are means over them.
"""

import functools
import math

import keras
import numpy as np
import tensorflow as tf

from vqkeras import quantization
from vqkeras.distribute import global_mean, sum_over_replicas
from vqkeras.keras_compat import PerReplicaLosses
from vqkeras.layers import checks
from vqkeras.layers.bottleneck import Bottleneck

# The largest d whose batch entropy entropy="auto" computes exactly (2^18 codes: a
# 512 x 512 product of halves).
EXACT_ENTROPY_MAX_BITS = 18
ENTROPY_MODES = ("auto", "exact", "factorized")


@keras.saving.register_keras_serializable(package="vqkeras")
class LookupFreeQuantizer(PerReplicaLosses, Bottleneck):
  """Quantizes each channel to its sign: 2^num_bits codes without a codebook (LFQ), or
  with `spherical=True` on the unit sphere (BSQ). See the module docstring.

  Args:
    num_bits: d, the channels of a code and its bits, 1 to 62 (codes are int64 above 31
      bits).
    spherical: False: LFQ, codes in {-1, 1}^d. True: BSQ, the input is l2-normalized
      and the codes are in {-1/sqrt(d), 1/sqrt(d)}^d.
    entropy_weight: the weight of the entropy loss (0: none), >= 0.
    diversity_weight: gamma, the weight of the batch entropy inside it, >= 0.
    beta: the weight of the commitment loss, >= 0.
    temperature: T > 0 of p(k|x) = softmax(-||x - c_k||^2 / T); 0.01 is
      vector-quantize-pytorch's inverse temperature of 100.
    entropy: "auto", "exact" or "factorized": how the batch entropy is computed.
    num_codebooks: C, if given: the input holds C groups of d channels, each quantized
      alone, and a position has C codes `[..., C]` (as FSQ's num_codebooks). None: one.
    usage_window: W, the training steps over which a code counts as used (health;
      above `MAX_TRACKED_CODES` codes, the last batch's distinct codes).
    **kwargs: `keras.layers.Layer` arguments (name, dtype, ...).

  Call arguments:
    inputs: float `[..., C * num_bits]` (project other depths first, e.g. with a Dense).
    training: bool; True adds the entropy loss and records the codes' usage.
    mask: optional bool `[...]`; False positions are left out of the losses and health.
    return_codes: if True, return a `Quantized` record: quantized `[..., d]`, codes
      `[..., C]` (int32, int64 above 31 bits), samples: the codes `[..., C, 1]`.

  Returns:
    the quantized tensor with a straight-through gradient, same shape as `inputs`, in the
    layer's compute dtype; or the record above.
  """

  def __init__(self, num_bits, spherical=False, entropy_weight=0.1, diversity_weight=1.0,
               beta=0.25, temperature=0.01, entropy="auto", num_codebooks=None,
               usage_window=100, **kwargs):
    super().__init__(**kwargs)
    _check(isinstance(num_bits, (int, np.integer)) and 1 <= num_bits <= 62, "num_bits",
           num_bits, "an integer in [1, 62]")
    _check(entropy_weight >= 0.0, "entropy_weight", entropy_weight, "a float >= 0")
    _check(diversity_weight >= 0.0, "diversity_weight", diversity_weight, "a float >= 0")
    _check(beta >= 0.0, "beta", beta, "a float >= 0")
    _check(temperature > 0.0, "temperature", temperature, "a float > 0")
    _check(entropy in ENTROPY_MODES, "entropy", entropy, " or ".join(map(repr, ENTROPY_MODES)))
    _check(num_codebooks is None or (isinstance(num_codebooks, int) and num_codebooks >= 1),
           "num_codebooks", num_codebooks, "None or a positive integer")
    _check(isinstance(usage_window, int) and usage_window >= 1, "usage_window",
           usage_window, "an integer of at least 1")
    self.num_bits = int(num_bits)
    self.spherical = bool(spherical)
    self.entropy_weight = float(entropy_weight)
    self.diversity_weight = float(diversity_weight)
    self.beta = float(beta)
    self.temperature = float(temperature)
    self.entropy = entropy
    self.exact_entropy = (entropy == "exact" or
                          (entropy == "auto" and self.num_bits <= EXACT_ENTROPY_MAX_BITS))
    self.num_codebooks = num_codebooks
    self.usage_window = usage_window
    self.codebook_size = 2 ** self.num_bits
    self.depth = self.num_bits * self.codes_per_position
    # The corners' coordinate: 1 (LFQ) or 1/sqrt(d) (BSQ).
    self.scale = 1.0 / math.sqrt(self.num_bits) if self.spherical else 1.0
    self._basis = (2 ** np.arange(self.num_bits)).astype(self.codes_dtype.as_numpy_dtype)
    self.create_usage_metrics()

  @property
  def codes_per_position(self):
    """C: the codebooks (num_codebooks, or 1)."""
    return self.num_codebooks or 1

  def build(self, input_shape):
    self._check_depth(input_shape)
    self.build_usage((self.codes_per_position, self.codebook_size))

  # Codes.

  def bits_to_codes(self, bits):
    """Bits bool `[..., C, d]` to code indices `[..., C]` (codes_dtype)."""
    return tf.reduce_sum(tf.cast(bits, self.codes_dtype) * self._basis, axis=-1)

  def codes_to_vectors(self, codes):
    """Code indices int `[..., C]` to their corners, float32 `[..., C * d]`."""
    bits = (tf.cast(codes, self.codes_dtype)[..., None] // self._basis) % 2
    corners = tf.where(bits > 0, self.scale, -self.scale)
    return tf.reshape(corners, tf.concat([tf.shape(codes)[:-1], [self.depth]], 0))

  def encode(self, inputs):
    """The codes of float `[..., C * d]` inputs: `[..., C]` of codes_dtype."""
    return self.bits_to_codes(self._checked_inputs(inputs) > 0.0)

  def decode(self, codes):
    """The corners of int codes `[..., C]`: float32 `[..., C * d]`."""
    codes = checks.position_codes(self.name, codes, self.codes_per_position,
                                  note=" (num_codebooks, or 1)")
    return self.codes_to_vectors(codes)

  # The forward pass.

  def call(self, inputs, training=None, mask=None, return_codes=False):
    training = bool(training) and self.trainable
    x = self._checked_inputs(inputs)   # float32 [..., C, d]; unit vectors under BSQ
    bits = x > 0.0
    quantized = tf.where(bits, self.scale, -self.scale)
    valid = None if mask is None else tf.reshape(tf.cast(mask, tf.bool), [-1])
    groups = tf.reshape(x, [-1, self.codes_per_position, self.num_bits])   # [N, C, d]
    self.add_loss(self.beta * global_mean(
        tf.reduce_mean(tf.square(groups - tf.reshape(quantized, tf.shape(groups))), [1, 2]),
        valid))
    if training and self.entropy_weight > 0.0:
      self.add_loss(self.entropy_weight * self.entropy_loss(groups, valid))
    codes = self.bits_to_codes(bits)
    self.code_health(codes, mask, training)
    outputs = quantization.straight_through(x, quantized)
    outputs = tf.cast(tf.reshape(outputs, tf.shape(inputs)), self.compute_dtype)
    return self.quantized(outputs, codes, return_codes=return_codes)

  def entropy_loss(self, x, valid=None):
    """mean_x H(p(.|x)) - diversity_weight H(mean_x p(.|x)) of vectors `[N, C, d]` (unit
    vectors under BSQ), over the valid ones (`valid` bool `[N]` or None) of the global
    batch, both means over the C codebooks; the batch entropy exact or factorized as the
    layer computes it."""
    logits = 4.0 * self.scale * tf.transpose(x, [1, 0, 2]) / self.temperature   # [C, N, d]
    log_one, log_zero = tf.math.log_sigmoid(logits), tf.math.log_sigmoid(-logits)
    p_one = tf.exp(log_one)
    per_position = -tf.reduce_sum(p_one * log_one + tf.exp(log_zero) * log_zero,
                                  axis=-1)   # [C, N]
    weights = (tf.ones_like(per_position[0]) if valid is None
               else tf.cast(valid, per_position.dtype))
    count = tf.maximum(sum_over_replicas(tf.reduce_sum(weights)), 1.0)
    if self.exact_entropy:
      batch = exact_batch_entropy(log_one, log_zero, weights, count)
    else:
      batch = factorized_batch_entropy(p_one, weights, count)
    return (global_mean(tf.reduce_mean(per_position, axis=0), valid) -
            self.diversity_weight * tf.reduce_mean(batch))

  def _checked_inputs(self, inputs):
    """Float32 `[..., C, d]` (on the unit sphere under BSQ)."""
    x = tf.cast(checks.float_inputs(self.name, inputs), tf.float32)
    self._check_depth(x.shape)
    x = tf.reshape(x, tf.concat([tf.shape(x)[:-1], [self.codes_per_position,
                                                     self.num_bits]], 0))
    if self.spherical:
      x = tf.math.l2_normalize(x, axis=-1, epsilon=1e-12)
    return x

  def _check_depth(self, shape):
    codebooks = f" x num_codebooks={self.num_codebooks}" if self.num_codebooks else ""
    checks.channels(self.name, shape, self.depth, "bit",
                    f"num_bits={self.num_bits}{codebooks}")

  def get_config(self):
    config = super().get_config()
    config.update({"num_bits": self.num_bits, "spherical": self.spherical,
                   "entropy_weight": self.entropy_weight,
                   "diversity_weight": self.diversity_weight, "beta": self.beta,
                   "temperature": self.temperature, "entropy": self.entropy,
                   "num_codebooks": self.num_codebooks, "usage_window": self.usage_window})
    return config


def bit_patterns(num_bits):
  """The bits of the codes 0 .. 2^num_bits - 1, float32 `[2^num_bits, num_bits]`."""
  codes = np.arange(2 ** num_bits)[:, None]
  return tf.constant((codes >> np.arange(num_bits)) & 1, tf.float32)


def code_probabilities(log_one, log_zero):
  """p(k|x) of every code of the bits given, `[C, N, 2^b]`, from the bits'
  log-probabilities `[C, N, b]`: exp(sum_i b_i(k) log p_i(1) + (1 - b_i(k)) log p_i(0))."""
  patterns = bit_patterns(log_one.shape[-1])
  return tf.exp(tf.einsum("cnb,kb->cnk", log_one - log_zero, patterns) +
                tf.reduce_sum(log_zero, axis=-1, keepdims=True))


def exact_batch_entropy(log_one, log_zero, weights, count):
  """H(mean_x p(.|x)) over the 2^d codes of each of C codebooks `[C]`, the mean over the
  global batch's weighted rows (`weights` `[N]`, `count` their global sum): the low and
  the high half of the bits each give `[C, N, 2^half]` probabilities, and their weighted
  product is the `[C, 2^high, 2^low]` sum of the batch's distributions."""
  low = log_one.shape[-1] // 2
  p_low = code_probabilities(log_one[..., :low], log_zero[..., :low]) * weights[:, None]
  p_high = code_probabilities(log_one[..., low:], log_zero[..., low:])
  mean = sum_over_replicas(tf.matmul(p_high, p_low, transpose_a=True)) / count
  return -tf.reduce_sum(p_log_p(mean), axis=[1, 2])


def factorized_batch_entropy(p_one, weights, count):
  """sum_i H(mean_x p_i) `[C]`: the batch entropy of each bit alone, summed (BSQ's
  approximation; `p_one` `[C, N, d]` the bits' probabilities of 1)."""
  mean = sum_over_replicas(tf.reduce_sum(p_one * weights[:, None], axis=1)) / count
  return -tf.reduce_sum(p_log_p(mean) + p_log_p(1.0 - mean), axis=-1)


def p_log_p(p):
  """p log p, 0 at p = 0, with a finite gradient there (probabilities underflow to 0 at
  small temperatures)."""
  return p * tf.math.log(tf.maximum(p, 1e-30))


_check = functools.partial(checks.check_argument, "LookupFreeQuantizer")
