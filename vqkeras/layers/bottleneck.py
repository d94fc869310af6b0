"""What every discrete bottleneck of vqkeras is, written down once.

A bottleneck replaces each input vector `[..., D]` by a vector of its codes and passes
gradients back to the input (straight through, or as its kind does). Every kind
(`VectorQuantizer`, `ResidualVectorQuantizer`, `FiniteScalarQuantizer`,
`GumbelSoftmaxQuantizer`, `ProjectedBottleneck`) is a `Bottleneck`:

    codebook_size        K, the codes of each of a position's codes
    codes_per_position   C, the codes of one position (codebook blocks, residual
                         levels, FSQ groups; 1 for most)
    encode(x)            int32 codes `[..., C]` of float inputs `[..., D]`, no state change
                         (int64 when K exceeds int32: `codes_dtype`)
    decode(codes)        float32 vectors `[..., D]` of int codes `[..., C]`
    call(x, training=None, mask=None, return_codes=False)
                         the quantized tensor `[..., D]` in the compute dtype; with
                         return_codes a `Quantized` record, the same fields for every kind
    code_layers()        the layers that hold health state (`CodeUsage`: perplexity,
                         codes used, dead codes): the layer itself, or its parts
    compute_mask         the input's mask passes through

A mask (Keras masking or `mask=`) keeps positions out of a bottleneck's statistics,
losses and health. Statistics are summed over replicas inside the step, so a
mirrored run holds the state one device would on the global batch.

Adding a kind: a layer file that subclasses `Bottleneck` (its guarantees tested as
the others'), and a row of `vqkeras/hparams/bottleneck.py`'s table with its builder in
`vqkeras/models/bottleneck.py` for the models to offer it.
"""

from typing import NamedTuple

import keras
import tensorflow as tf

from vqkeras.layers.code_usage import CodeUsage


class Quantized(NamedTuple):
  """What a bottleneck gives with `return_codes=True`."""
  quantized: tf.Tensor   # [..., D] the output, gradients to the inputs, compute dtype
  codes: tf.Tensor       # [..., C] int32, each position's codes (the nearest, argmax, ...)
  # [..., C, m] int32: the codes a latent predictor learns, m soft-EM draws per code in
  # training; the codes themselves (m = 1) for the kinds that draw none.
  samples: tf.Tensor


class Bottleneck(CodeUsage, keras.layers.Layer):
  """The base layer of every discrete bottleneck (see the module docstring).

  A subclass sets `codebook_size` and defines `codes_per_position`, `encode`, `decode`
  and `call`; a layer with codes of its own builds its health state with
  `build_usage((C, K))` (CodeUsage), a layer of parts returns them from `code_layers`.
  """

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.supports_masking = True

  @property
  def codes_per_position(self):
    """C, the codes of one position."""
    raise NotImplementedError(f"{type(self).__name__} does not define codes_per_position.")

  def encode(self, inputs):
    """Int codes `[..., C]` of float inputs `[..., D]`, without state changes."""
    raise NotImplementedError(f"{type(self).__name__} does not define encode.")

  def decode(self, codes):
    """Float32 vectors `[..., D]` of int codes `[..., C]`."""
    raise NotImplementedError(f"{type(self).__name__} does not define decode.")

  @property
  def codes_dtype(self):
    """The dtype of the codes: int32, or int64 when K exceeds int32 (FSQ and LFQ can)."""
    return tf.int32 if self.codebook_size <= 2**31 - 1 else tf.int64

  def code_layers(self):
    """The layers whose codes' health is reported (each a `CodeUsage`)."""
    return [self]

  def quantized(self, outputs, codes, samples=None, return_codes=True):
    """The call's result: `outputs`, or with return_codes the `Quantized` record
    (samples: the codes, m = 1, when None)."""
    if not return_codes:
      return outputs
    return Quantized(outputs, codes, codes[..., None] if samples is None else samples)

  def output_spec(self, inputs, return_codes, samples_per_code=1):
    """compute_output_spec of a bottleneck whose output has the input's shape."""
    quantized = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
    if not return_codes:
      return quantized
    codes = tuple(inputs.shape[:-1]) + (self.codes_per_position,)
    dtype = self.codes_dtype.name
    return Quantized(quantized, keras.KerasTensor(codes, dtype=dtype),
                     keras.KerasTensor(codes + (samples_per_code,), dtype=dtype))

  def compute_output_spec(self, inputs, training=None, mask=None, return_codes=False):
    return self.output_spec(inputs, return_codes)

  def compute_mask(self, inputs, mask=None):
    return mask
