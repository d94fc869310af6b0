"""How a VectorQuantizer learns its codebook: one small class per update rule.

The layer holds one rule (`VectorQuantizer.rule`) and asks it where the rules differ:
  build         the state the rule keeps beside the codebook (the EMA statistics)
  e_step        the codes a batch's vectors take: the nearest, or m samples (soft EM)
  code_vectors  the codebook the output reads (the variable itself, for a gradient)
  extra_losses  beyond the commitment loss (VQ-VAE's codebook loss)
  m_step        the codebook update of a training step, from the global batch's statistics
  restarted     the rule's bookkeeping when dead codes restart on encoder outputs
Every method takes the layer, whose arguments (num_samples, decay, ...) and variables
the rule reads. A new rule is one subclass here and one entry in UPDATES.
"""

from typing import NamedTuple

import tensorflow as tf

from vqkeras import quantization


class EStep(NamedTuple):
  """The codes of a batch of vectors `[B, N, d]` (B codebook blocks, N vectors)."""
  codes: tf.Tensor         # [B, N] int32, the nearest codes
  samples: tf.Tensor       # [B, N, m] int32, the codes the output averages (m = 1: nearest)
  assignments: object      # quantization's assignments of the samples (hard or soft)
  sampled: bool            # whether samples differ from the nearest codes


class CodebookUpdate:
  """The rule of a codebook that nothing moves but its subclasses' M-steps."""

  trainable_codebook = False   # the optimizer moves the codebook
  needs_sums = False           # the M-step needs the sums of the vectors of each code

  def samples_per_position(self, layer):
    del layer
    return 1

  def build(self, layer, shape):
    del layer, shape

  def e_step(self, layer, x_blocks, codebook, training):
    del training
    codes = quantization.nearest_codes(x_blocks, codebook, layer.max_rows())
    return EStep(codes, codes[..., None], quantization.hard_assignments(codes), False)

  def code_vectors(self, layer, codebook):
    del layer
    return codebook

  def extra_losses(self, x, quantized, mean_square):
    del x, quantized, mean_square
    return []

  def m_step(self, layer, statistics):
    del layer, statistics

  def restarted(self, layer, dead, vectors):
    del layer, dead, vectors


class GradientUpdate(CodebookUpdate):
  """VQ-VAE: the optimizer moves the codebook by the codebook loss ||sg[z_e] - e||^2."""

  trainable_codebook = True

  def code_vectors(self, layer, codebook):
    del codebook
    # Differentiable: the codebook loss reaches the codes.
    return layer.code_vectors_of(layer.embeddings)

  def extra_losses(self, x, quantized, mean_square):
    return [mean_square(tf.stop_gradient(x), quantized)]


class EMAUpdate(CodebookUpdate):
  """Online hard EM: each code is the running mean of the vectors nearest to it
  (VQ-VAE appendix A.1, as in the Roy et al. reference code)."""

  needs_sums = True

  def build(self, layer, shape):
    layer.ema_count = layer.add_weight(
        name="ema_count", shape=shape[:2], dtype="float32", autocast=False,
        initializer="zeros", trainable=False)
    # The running sums start at the initial codebook, as in the reference code.
    layer.ema_sum = layer.add_weight(
        name="ema_sum", shape=shape, dtype="float32", autocast=False,
        initializer="zeros", trainable=False)
    layer.ema_sum.assign(layer.embeddings)

  def m_step(self, layer, statistics):
    new_count, new_sum, new_codebook, updated = quantization.ema_codebook_update(
        layer.ema_count, layer.ema_sum, statistics["counts"], statistics["sums"],
        layer.decay, layer.epsilon)
    layer.ema_count.assign(new_count)
    layer.ema_sum.assign(new_sum)
    layer.embeddings.assign(tf.where(updated[:, None, None], new_codebook, layer.embeddings))

  def restarted(self, layer, dead, vectors):
    # A restarted code weighs as one assigned vector in the running statistics.
    layer.ema_count.assign(tf.where(dead, 1.0, layer.ema_count))
    layer.ema_sum.assign(tf.where(dead[..., None], vectors, layer.ema_sum))


class SoftEMUpdate(EMAUpdate):
  """Monte-Carlo soft EM: in training m codes are drawn per vector from
  softmax(-||z - e||^2 / T), the output is their mean code vector and each draw
  weighs 1/m in the EMA M-step."""

  def samples_per_position(self, layer):
    return layer.num_samples

  def e_step(self, layer, x_blocks, codebook, training):
    if not training:
      return super().e_step(layer, x_blocks, codebook, training)
    samples, codes = quantization.sample_codes(
        x_blocks, codebook, layer.num_samples, layer.temperature, layer.step_seed(salt=0),
        layer.max_rows())
    return EStep(codes, samples,
                 quantization.soft_assignments(samples, codes, layer.codebook_size), True)


# The rules by their names in the papers ("hard_em" is the EMA rule's other name).
UPDATES = {"gradient": GradientUpdate, "ema": EMAUpdate, "hard_em": EMAUpdate,
           "soft_em": SoftEMUpdate}
