"""The discrete bottleneck's hyper-parameters, shared by every family that has one.

A family adds the codebook's size in its own terms (`codebook_size` and `num_blocks`
for images, `bottleneck_bits` for translation, as in Tensor2Tensor) and builds the
layer with `vqkeras.models.bottleneck.bottleneck_from_hparams`.
"""

import dataclasses

from vqkeras.hparams_lib import HParams, check

# The update rules of `vqkeras.layers.VectorQuantizer` (codebook_updates.UPDATES without
# its alias), named here without importing TensorFlow; tests/test_registry.py keeps the two
# lists equal.
UPDATE_RULES = ("gradient", "ema", "soft_em")
# Every bottleneck: a VectorQuantizer with one of the rules, residual VQ with EMA levels,
# finite scalar quantization or the Gumbel-softmax relaxation
# (vqkeras.models.bottleneck.bottleneck_from_hparams).
BOTTLENECKS = UPDATE_RULES + ("rvq", "fsq", "gumbel")


@dataclasses.dataclass(frozen=True)
class BottleneckHParams(HParams):
  """The bottleneck and its settings (docs/papers.md sections 1 and 2).

  A family's codes per position (num_blocks) are a VectorQuantizer's codebook blocks,
  a residual quantizer's levels, or FSQ's groups of channels.
  """
  ADDED_FIELDS = {**HParams.ADDED_FIELDS, "fsq_levels": "8x5x5x5"}
  # "gradient" (VQ-VAE), "ema" (hard EM) or "soft_em": VectorQuantizer's update rules;
  # "rvq": residual VQ, its levels EMA codebooks; "fsq": finite scalar quantization;
  # "gumbel": the Gumbel-softmax relaxation (one code per position, tau = temperature).
  bottleneck: str = "soft_em"
  num_samples: int = 10              # m = n_s, soft-EM samples per position
  decay: float = 0.99                # EMA decay lambda
  epsilon: float = 1e-5              # Laplace smoothing of the counts
  beta: float = 0.25                 # commitment loss weight
  temperature: float = 1.0           # soft EM's T of softmax(-||z - e||^2 / T); gumbel's tau
  # Codes start on latents of the first batch; codes unused for 100 steps move onto
  # latents of the batch.
  restart_dead_codes: bool = False
  # FSQ: the levels of the channels of a group, "x"-separated (8x5x5x5: 1000 codes).
  fsq_levels: str = "8x5x5x5"

  def validate(self):
    super().validate()
    check(self.bottleneck in BOTTLENECKS, "bottleneck", self.bottleneck,
          " or ".join(BOTTLENECKS))
    check(self.num_samples >= 1, "num_samples", self.num_samples, "a positive integer")
    # The layers check these too, for their direct users; here a run is refused before
    # its directory is touched.
    check(0.0 <= self.decay < 1.0, "decay", self.decay, "a float in [0, 1)")
    check(self.epsilon > 0.0, "epsilon", self.epsilon, "a float > 0")
    check(self.beta >= 0.0, "beta", self.beta, "a float >= 0")
    check(self.temperature > 0.0, "temperature", self.temperature, "a float > 0")
    levels = self.fsq_levels.split("x")
    check(all(level.isdigit() and int(level) >= 2 for level in levels), "fsq_levels",
          self.fsq_levels, "integers of at least 2 separated by x, e.g. 8x5x5x5")

  @property
  def fsq_level_list(self):
    """fsq_levels as integers."""
    return [int(level) for level in self.fsq_levels.split("x")]
