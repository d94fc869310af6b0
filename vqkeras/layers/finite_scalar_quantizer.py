"""Finite scalar quantization (Mentzer et al. 2023, "FSQ: VQ-VAE made simple").

Each of the d channels of a vector is bounded to L_i values and rounded to the
nearest one; the implicit codebook is the grid of all prod(L_i) combinations. There
is no codebook to learn, no auxiliary loss and no codebook collapse; gradients pass
the rounding straight through.

  z_bounded = tanh(z + tan(o / h)) * h - o,   h = (L - 1)(1 - eps) / 2,
                                              o = 1/2 for even L, else 0
  z_q = round(z_bounded) / floor(L / 2)       in [-1, 1]

as in the paper's appendix code (the shift centres even levels; atanh would map z = 0
exactly to 0 but has no value for L = 2). A code's index counts in mixed radix:
sum_i digit_i prod_{j<i} L_j, digit_i = z_q,i floor(L_i / 2) + floor(L_i / 2).
"""

import functools
import math

import keras
import numpy as np
import tensorflow as tf

from vqkeras.layers import checks
from vqkeras.layers.bottleneck import Bottleneck


@keras.saving.register_keras_serializable(package="vqkeras")
class FiniteScalarQuantizer(Bottleneck):
  """Bounds and rounds each channel to its levels, with straight-through gradients.

  Args:
    levels: the number of values of each channel, integers >= 2, one per input
      channel; e.g. [8, 5, 5, 5] (1000 codes) or [8, 8, 8, 5, 5, 5] (64000), the
      paper's choices for 2^10 and 2^16 codes.
    eps: how far inside the outermost levels the bound stays, in (0, 1).
    num_codebooks: C, if given: the input holds C groups of len(levels) channels, each
      quantized on the grid alone, and a position has C codes `[..., C]` (as
      `VectorQuantizer`'s blocks). None: one group, codes `[..., 1]`.
    usage_window: W, the training steps over which a code counts as used in the
      health metrics (as in `VectorQuantizer`). Above `MAX_TRACKED_CODES` codes
      (C x K; e.g. levels [4] * 16, 2^32 codes) the layer keeps no per-code state: the
      health is the last training batch's distinct codes (`CodeUsage`).
    **kwargs: `keras.layers.Layer` arguments (name, dtype, ...).

  Call arguments:
    inputs: float `[..., d]` with d = len(levels), or C * len(levels) with
      num_codebooks = C (project to d channels first, e.g. with a Dense layer).
    training: bool; True records the codes' usage (the health metrics).
    mask: optional bool `[...]`; False positions are left out of the usage.
    return_codes: if True, return a `Quantized` record: quantized `[..., d]`, codes
      int32 `[..., C]` (C = 1 without num_codebooks; int64 above 2^31 - 1 codes), samples:
      the codes `[..., C, 1]`.

  Returns:
    the quantized tensor in [-1, 1], same shape as `inputs`, in the layer's compute
    dtype; or the record above.
  """

  def __init__(self, levels, eps=1e-3, num_codebooks=None, usage_window=100, **kwargs):
    super().__init__(**kwargs)
    levels = list(levels) if isinstance(levels, (list, tuple)) else levels
    _check(isinstance(levels, list) and levels and
           all(isinstance(l, (int, np.integer)) and l >= 2 for l in levels),
           "levels", levels, "a non-empty list of integers of at least 2, e.g. [8, 5, 5, 5]")
    _check(0.0 < eps < 1.0, "eps", eps, "a float in (0, 1)")
    _check(num_codebooks is None or (isinstance(num_codebooks, int) and num_codebooks >= 1),
           "num_codebooks", num_codebooks, "None or a positive integer")
    _check(isinstance(usage_window, int) and usage_window >= 1, "usage_window",
           usage_window, "an integer of at least 1")
    self.levels = [int(l) for l in levels]
    self.eps = float(eps)
    self.usage_window = usage_window
    self.num_codebooks = num_codebooks
    self.codebook_size = math.prod(self.levels)
    self.group_depth = len(self.levels)
    self.depth = self.group_depth * self.codes_per_position
    # The grid's constants, per channel.
    levels_f = np.asarray(self.levels, np.float64)
    self._half_l = ((levels_f - 1.0) * (1.0 - self.eps) / 2.0).astype(np.float32)
    self._offset = np.where(levels_f % 2 == 0, 0.5, 0.0).astype(np.float32)
    self._shift = np.tan(self._offset / self._half_l).astype(np.float32)
    self._half_width = (np.asarray(self.levels) // 2).astype(np.float32)
    self._basis = np.cumprod([1] + self.levels[:-1]).astype(self.codes_dtype.as_numpy_dtype)
    self.create_usage_metrics()

  @property
  def codes_per_position(self):
    """C: the groups of channels (num_codebooks, or 1)."""
    return self.num_codebooks or 1

  def build(self, input_shape):
    self._check_depth(input_shape)
    self.build_usage((self.codes_per_position, self.codebook_size))

  # The grid.

  def bound(self, inputs):
    """Each channel squashed into (-L/2, L/2), float32 `[..., len(levels)]`."""
    return tf.tanh(tf.cast(inputs, tf.float32) + self._shift) * self._half_l - self._offset

  def round_to_grid(self, bounded):
    """The nearest grid point of bounded values, in [-1, 1], with the gradient of the
    identity (straight-through)."""
    rounded = bounded + tf.stop_gradient(tf.round(bounded) - bounded)
    return rounded / self._half_width

  def codes_to_indices(self, quantized):
    """Codes `[..., d]` (values in [-1, 1] on the grid) to their indices, `[...]` of
    codes_dtype."""
    digits = tf.cast(tf.round(tf.cast(quantized, tf.float32) * self._half_width +
                              self._half_width), self.codes_dtype)
    return tf.reduce_sum(digits * self._basis, axis=-1)

  def indices_to_codes(self, indices):
    """Indices int `[...]` to their codes, float32 `[..., d]` in [-1, 1]."""
    indices = checks.integer_codes(self.name, indices)
    digits = ((tf.cast(indices, self.codes_dtype)[..., None] // self._basis) %
              tf.constant(self.levels, self.codes_dtype))
    return (tf.cast(digits, tf.float32) - self._half_width) / self._half_width

  @property
  def codebook(self):
    """Every code vector, `[K, d]` float32, row i the code of index i."""
    return self.indices_to_codes(tf.range(self.codebook_size))

  def encode(self, inputs):
    """The code indices of float `[..., d]` inputs: `[..., C]` of codes_dtype."""
    groups = self._groups(self._checked_inputs(inputs))
    return self.codes_to_indices(self.round_to_grid(self.bound(groups)))

  def decode(self, codes):
    """The code vectors of int `[..., C]` indices: float32 `[..., d]`."""
    codes = checks.position_codes(self.name, codes, self.codes_per_position,
                                  note=" (num_codebooks, or 1)")
    return self._ungrouped(self.indices_to_codes(codes))

  # The forward pass.

  def call(self, inputs, training=None, mask=None, return_codes=False):
    training = bool(training) and self.trainable
    x = self._checked_inputs(inputs)
    quantized = self.round_to_grid(self.bound(self._groups(x)))
    indices = self.codes_to_indices(tf.stop_gradient(quantized))   # [..., C]
    self.code_health(indices, mask, training)
    outputs = tf.cast(self._ungrouped(quantized), self.compute_dtype)
    return self.quantized(outputs, indices, return_codes=return_codes)

  def _groups(self, x):
    """`[..., C * len(levels)]` to `[..., C, len(levels)]`."""
    return tf.reshape(x, tf.concat([tf.shape(x)[:-1],
                                    [self.codes_per_position, self.group_depth]], 0))

  def _ungrouped(self, vectors):
    """`[..., C, len(levels)]` back to `[..., C * len(levels)]`."""
    return tf.reshape(vectors, tf.concat([tf.shape(vectors)[:-2], [self.depth]], 0))

  def _checked_inputs(self, inputs):
    x = checks.float_inputs(self.name, inputs)
    self._check_depth(x.shape)
    return x

  def _check_depth(self, shape):
    groups = f" x num_codebooks={self.num_codebooks}" if self.num_codebooks else ""
    checks.channels(self.name, shape, self.depth, "level", f"levels={self.levels}{groups}")

  def get_config(self):
    config = super().get_config()
    config.update({"levels": self.levels, "eps": self.eps, "num_codebooks": self.num_codebooks,
                   "usage_window": self.usage_window})
    return config


_check = functools.partial(checks.check_argument, "FiniteScalarQuantizer")
