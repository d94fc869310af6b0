"""Residual finite scalar quantization: FSQ (Mentzer et al. 2023) on the residual, Q
stages, each on a finer grid, as vector-quantize-pytorch's `ResidualFSQ`.

Stage i quantizes the residual scaled up by (L - 1)^i per channel (L its levels) and
scales its grid point back down, so each stage's grid is L - 1 times finer than the one
before it:

  r_1 = z,   q_i = FSQ(r_i (L - 1)^i) / (L - 1)^i,   r_{i+1} = r_i - sg[q_i],
  z_q = sum_i q_i

Each stage passes its gradient through its own bound and rounding (FSQ's straight-through
estimator) to the input.
"""

import functools

import keras
import numpy as np
import tensorflow as tf

from vqkeras.layers import checks
from vqkeras.layers.bottleneck import Bottleneck
from vqkeras.layers.finite_scalar_quantizer import FiniteScalarQuantizer


@keras.saving.register_keras_serializable(package="vqkeras")
class ResidualFiniteScalarQuantizer(Bottleneck):
  """Q stages of FSQ on the residual, codes `[..., Q]`, K = prod(levels) per stage.

  Args:
    levels: the values of each channel, integers >= 2, one per input channel (as
      `FiniteScalarQuantizer`'s).
    num_quantizers: Q, the stages, at least 1.
    eps: FSQ's bound margin, in (0, 1).
    usage_window: W of every stage's health metrics.
    **kwargs: `keras.layers.Layer` arguments (name, dtype, ...).

  Call arguments:
    inputs: float `[..., len(levels)]`.
    training: bool; True records every stage's code usage.
    mask: optional bool `[...]`; False positions are left out of the usage.
    return_codes: if True, return a `Quantized` record: quantized, codes `[..., Q]`,
      samples: the codes `[..., Q, 1]`.

  Returns:
    z_q, same shape as `inputs`, in the layer's compute dtype; or the record above.
  """

  def __init__(self, levels, num_quantizers, eps=1e-3, usage_window=100, **kwargs):
    super().__init__(**kwargs)
    _check(isinstance(num_quantizers, int) and num_quantizers >= 1, "num_quantizers",
           num_quantizers, "an integer of at least 1")
    # The stages compute in float32: the residuals and the sum stay exact.
    self.stages = [FiniteScalarQuantizer(levels, eps=eps, usage_window=usage_window,
                                         name=f"stage_{i}", dtype="float32")
                   for i in range(num_quantizers)]
    self.levels = self.stages[0].levels
    self.num_quantizers = num_quantizers
    self.eps = float(eps)
    self.usage_window = usage_window
    self.codebook_size = self.stages[0].codebook_size
    self.depth = len(self.levels)
    # Stage i's grid spacing relative to the first: (L - 1)^-i per channel.
    self.scales = [(np.asarray(self.levels, np.float64) - 1.0) ** -i
                   for i in range(num_quantizers)]
    self.scales = [scale.astype(np.float32) for scale in self.scales]

  @property
  def codes_per_position(self):
    """Q: one code per stage."""
    return self.num_quantizers

  @property
  def num_updates(self):
    """Training steps of the first stage."""
    return self.stages[0].num_updates

  def code_layers(self):
    """The stages, which hold the health state."""
    return list(self.stages)

  def build(self, input_shape):
    for stage in self.stages:
      stage.build(input_shape)

  def call(self, inputs, training=None, mask=None, return_codes=False):
    x = tf.cast(checks.float_inputs(self.name, inputs), tf.float32)
    residual, total, codes = x, tf.zeros_like(x), []
    for stage, scale in zip(self.stages, self.scales):
      out = stage(residual / scale, training=training, mask=mask, return_codes=True)
      quantized = out.quantized * scale
      residual -= tf.stop_gradient(quantized)
      total += quantized
      codes.append(out.codes)
    outputs = tf.cast(total, self.compute_dtype)
    return self.quantized(outputs, tf.concat(codes, axis=-1), return_codes=return_codes)

  def encode(self, inputs):
    """The codes `[..., Q]` of float `[..., len(levels)]` inputs."""
    residual = tf.cast(checks.float_inputs(self.name, inputs), tf.float32)
    codes = []
    for stage, scale in zip(self.stages, self.scales):
      stage_codes = stage.encode(residual / scale)
      residual -= stage.decode(stage_codes) * scale
      codes.append(stage_codes)
    return tf.concat(codes, axis=-1)

  def decode(self, codes):
    """The sum of the stages' grid points of int codes `[..., Q]`: float32 `[..., d]`."""
    codes = checks.position_codes(self.name, codes, self.num_quantizers, "num_quantizers")
    return tf.add_n([stage.decode(codes[..., i:i + 1]) * scale
                     for i, (stage, scale) in enumerate(zip(self.stages, self.scales))])

  def get_config(self):
    config = super().get_config()
    config.update({"levels": self.levels, "num_quantizers": self.num_quantizers,
                   "eps": self.eps, "usage_window": self.usage_window})
    return config


_check = functools.partial(checks.check_argument, "ResidualFiniteScalarQuantizer")
