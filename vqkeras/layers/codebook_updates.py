"""How a VectorQuantizer learns its codebook: one small class per update rule.

A rule is built with its own parameters (`EMAUpdate(decay, epsilon)`), creates and owns
its own state (the EMA statistics, as Sonnet's EMA quantizer owns its moving averages),
and is told the codebook and the batch's statistics; it never reads the layer:
  build         creates the rule's variables beside the codebook
  e_step        the codes a batch's vectors take: the nearest, or m samples (soft EM)
  code_vectors  the codebook the output reads (the differentiable one, for a gradient)
  extra_losses  beyond the commitment loss (VQ-VAE's codebook loss)
  m_step        the codebook update of a training step, from the global batch's statistics
  restarted     the rule's bookkeeping when codes restart on encoder outputs
A new rule is one subclass here and one entry in UPDATES.
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
  samples_per_position = 1     # m, the codes the output averages

  @classmethod
  def of(cls, decay, epsilon, num_samples, temperature):
    """The rule with those of the VectorQuantizer's settings it takes."""
    del decay, epsilon, num_samples, temperature
    return cls()

  def build(self, add_weight, codebook):
    """Creates the rule's variables with `add_weight` (the layer's, so that they live in
    its checkpoint) beside the `[B, K, d]` codebook variable; returns them by name (the
    layer keeps them under these names, the paths of recorded checkpoints)."""
    del add_weight, codebook
    return {}

  def e_step(self, x_blocks, codebook, training, seed, max_rows):
    """The codes of `[B, N, d]` vectors given the `[B, K, d]` code vectors.

    seed: the stateless seed of this step's draws; max_rows: the most vectors whose
    distances to every code are held at once."""
    del training, seed
    codes = quantization.nearest_codes(x_blocks, codebook, max_rows)
    return EStep(codes, codes[..., None], quantization.hard_assignments(codes), False)

  def code_vectors(self, codebook, differentiable_codebook):
    """The code vectors the output reads: the codebook without gradient, or the one the
    optimizer moves."""
    del differentiable_codebook
    return codebook

  def extra_losses(self, x, quantized, mean_square):
    """The rule's losses beside the commitment loss (the gradient rule: the codebook
    loss ||sg[x] - e||^2), given `mean_square(a, b)`, the masked mean."""
    del x, quantized, mean_square
    return []

  def m_step(self, codebook, statistics):
    """Updates the `codebook` variable from the global batch's "counts" `[B, K]` and
    "sums" `[B, K, d]`."""
    del codebook, statistics

  def restarted(self, dead, vectors):
    """`dead` `[B, K]` codes now sit on `vectors` `[B, K, d]`."""
    del dead, vectors


class GradientUpdate(CodebookUpdate):
  """VQ-VAE: the optimizer moves the codebook by the codebook loss ||sg[z_e] - e||^2."""

  trainable_codebook = True

  def code_vectors(self, codebook, differentiable_codebook):
    del codebook
    return differentiable_codebook   # the codebook loss reaches the codes

  def extra_losses(self, x, quantized, mean_square):
    """The rule's losses beside the commitment loss (the gradient rule: the codebook
    loss ||sg[x] - e||^2), given `mean_square(a, b)`, the masked mean."""
    return [mean_square(tf.stop_gradient(x), quantized)]


class EMAUpdate(CodebookUpdate):
  """Online hard EM: each code is the running mean of the vectors nearest to it
  (VQ-VAE appendix A.1, as in the Roy et al. reference code).

  Args:
    decay: lambda of the running counts and sums.
    epsilon: Laplace smoothing of the counts.
  """

  needs_sums = True

  def __init__(self, decay, epsilon):
    self.decay, self.epsilon = decay, epsilon
    self.ema_count = self.ema_sum = None

  @classmethod
  def of(cls, decay, epsilon, num_samples, temperature):
    del num_samples, temperature
    return cls(decay, epsilon)

  def build(self, add_weight, codebook):
    shape = tuple(codebook.shape)
    self.ema_count = add_weight(name="ema_count", shape=shape[:2], dtype="float32",
                                autocast=False, initializer="zeros", trainable=False)
    # The running sums start at the initial codebook, as in the reference code.
    self.ema_sum = add_weight(name="ema_sum", shape=shape, dtype="float32", autocast=False,
                              initializer="zeros", trainable=False)
    self.ema_sum.assign(codebook)
    return {"ema_count": self.ema_count, "ema_sum": self.ema_sum}

  def m_step(self, codebook, statistics):
    new_count, new_sum, new_codebook, updated = quantization.ema_codebook_update(
        self.ema_count, self.ema_sum, statistics["counts"], statistics["sums"],
        self.decay, self.epsilon)
    self.ema_count.assign(new_count)
    self.ema_sum.assign(new_sum)
    codebook.assign(tf.where(updated[:, None, None], new_codebook, codebook))

  def restarted(self, dead, vectors):
    # A restarted code weighs as one assigned vector in the running statistics.
    self.ema_count.assign(tf.where(dead, 1.0, self.ema_count))
    self.ema_sum.assign(tf.where(dead[..., None], vectors, self.ema_sum))


class SoftEMUpdate(EMAUpdate):
  """Monte-Carlo soft EM: in training m codes are drawn per vector from
  softmax(-||z - e||^2 / T), the output is their mean code vector and each draw
  weighs 1/m in the EMA M-step.

  Args:
    decay, epsilon: as EMAUpdate's.
    num_samples: m.
    temperature: T.
  """

  def __init__(self, decay, epsilon, num_samples, temperature):
    super().__init__(decay, epsilon)
    self.samples_per_position = num_samples
    self.temperature = temperature

  @classmethod
  def of(cls, decay, epsilon, num_samples, temperature):
    return cls(decay, epsilon, num_samples, temperature)

  def e_step(self, x_blocks, codebook, training, seed, max_rows):
    if not training:
      return super().e_step(x_blocks, codebook, training, seed, max_rows)
    samples, codes = quantization.sample_codes(
        x_blocks, codebook, self.samples_per_position, self.temperature, seed, max_rows)
    return EStep(codes, samples,
                 quantization.soft_assignments(samples, codes, codebook.shape[1]), True)


# The rules by their names in the papers ("hard_em" is the EMA rule's other name).
UPDATES = {"gradient": GradientUpdate, "ema": EMAUpdate, "hard_em": EMAUpdate,
           "soft_em": SoftEMUpdate}
