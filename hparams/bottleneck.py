"""The discrete bottleneck's hyper-parameters and the table of its kinds, shared by every
family that has one.

A family adds the codebook's size in its own terms (`codebook_size` and `num_blocks`
for images, `bottleneck_bits` for translation, as in Tensor2Tensor) and builds the
layer with `vqkeras.models.bottleneck.bottleneck_from_hparams`, which calls the
builder a kind's row names. Adding a kind: its layer (a `vqkeras.layers.Bottleneck`),
a row here and its builder there.
"""

import dataclasses
import math
from typing import Optional

from vqkeras.hparams_lib import HParams, check


@dataclasses.dataclass(frozen=True)
class BottleneckKind:
  """A row of the table of bottleneck kinds (`BOTTLENECKS`), free of TensorFlow."""
  name: str              # the value of the `bottleneck` hyper-parameter
  title: str             # how tables and plots name it
  builder: str           # its function in vqkeras/models/bottleneck.py
  # What a position's num_blocks codes are, and how the latent depth must relate to them:
  # "divides" (num_blocks divides the depth: codebook blocks), "any" (levels of the whole
  # vector), "fsq_levels" (num_blocks groups of one channel per level), "levels" (stages
  # of the whole vector, one channel per level), "bits" (num_blocks groups of log2(K)
  # channels, K a power of two), "one" (a single code: num_blocks must be 1).
  depth: str
  # K: "codebook_size" (the family's size) or "fsq_levels" (their product).
  codebook: str = "codebook_size"
  # Why the translation family's latent predictor cannot take it (None: it can).
  not_for_translation: Optional[str] = None

  def check_codes(self, num_blocks, depth, fsq_levels, codebook_size):
    """Raises HParamsError unless `num_blocks` codes of `codebook_size` fit latents of
    `depth`."""
    if self.depth == "divides":
      check(depth % num_blocks == 0, "num_blocks", num_blocks,
            f"a divisor of the latent depth {depth} under bottleneck={self.name}")
    elif self.depth == "fsq_levels":
      groups = num_blocks * len(fsq_levels)
      check(depth == groups, "latent_depth", depth,
            f"num_blocks x the number of fsq_levels = {groups} under bottleneck={self.name}")
    elif self.depth == "levels":
      check(depth == len(fsq_levels), "latent_depth", depth,
            f"the number of fsq_levels = {len(fsq_levels)} under bottleneck={self.name}")
    elif self.depth == "bits":
      bits = codebook_size.bit_length() - 1
      check(codebook_size == 2 ** bits, "codebook_size", codebook_size,
            f"a power of two under bottleneck={self.name} (2^bits codes)")
      check(depth == num_blocks * bits, "latent_depth", depth,
            f"num_blocks x log2(codebook_size) = {num_blocks * bits} under "
            f"bottleneck={self.name}")
    elif self.depth == "one":
      check(num_blocks == 1, "num_blocks", num_blocks,
            f"1 under bottleneck={self.name} (one code per position)")

  def codebook_size(self, size, fsq_levels):
    """K of this kind: `size`, or the product of fsq_levels."""
    return math.prod(fsq_levels) if self.codebook == "fsq_levels" else size


_VQ = dict(builder="vector_quantizer", depth="divides")
KINDS = (
    BottleneckKind("gradient", "VQ-VAE (gradient)", **_VQ),
    BottleneckKind("ema", "VQ-VAE (hard EM)", **_VQ),
    BottleneckKind("soft_em", "VQ-VAE with EM", **_VQ),
    BottleneckKind("rvq", "residual VQ", "residual_vector_quantizer", "any",
                   not_for_translation="the latent predictor predicts one code per latent; "
                   "rvq gives one per level"),
    BottleneckKind("fsq", "FSQ", "finite_scalar_quantizer", "fsq_levels",
                   codebook="fsq_levels"),
    BottleneckKind("gumbel", "Gumbel-softmax", "gumbel_softmax_quantizer", "one"),
    BottleneckKind("lfq", "LFQ", "lookup_free_quantizer", "bits"),
    BottleneckKind("bsq", "BSQ", "lookup_free_quantizer", "bits"),
    BottleneckKind("simvq", "SimVQ", "simvq", "divides"),
    BottleneckKind("rfsq", "residual FSQ", "residual_finite_scalar_quantizer", "levels",
                   codebook="fsq_levels",
                   not_for_translation="the latent predictor predicts one code per latent; "
                   "rfsq gives one per stage"),
)
BOTTLENECKS = {kind.name: kind for kind in KINDS}


@dataclasses.dataclass(frozen=True)
class BottleneckHParams(HParams):
  """The bottleneck and its settings (docs/papers.md sections 1 and 2).

  A family's codes per position (num_blocks) are a VectorQuantizer's codebook blocks,
  a residual quantizer's levels, or FSQ's groups of channels.
  """
  ADDED_FIELDS = {**HParams.ADDED_FIELDS, "fsq_levels": "8x5x5x5", "groups": 1,
                  "entropy_weight": 0.1, "orthogonal_weight": 0.0}
  # "gradient" (VQ-VAE), "ema" (hard EM) or "soft_em": VectorQuantizer's update rules;
  # "rvq": residual VQ, its levels EMA codebooks; "fsq": finite scalar quantization;
  # "gumbel": the Gumbel-softmax relaxation (one code per position, tau = temperature);
  # "lfq" / "bsq": lookup-free / binary spherical quantization (2^bits codes, sign bits);
  # "simvq": a frozen random basis times a learned map, by gradient; "rfsq": residual FSQ,
  # num_blocks stages.
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
  groups: int = 1                    # rvq: slices of channels, each its own levels
  entropy_weight: float = 0.1        # lfq, bsq: the weight of the entropy loss
  orthogonal_weight: float = 0.0     # gradient, simvq: orthogonal regularization

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
    check(self.groups >= 1 and (self.groups == 1 or self.bottleneck == "rvq"), "groups",
          self.groups, "1, or a positive integer under bottleneck=rvq")
    check(self.entropy_weight >= 0.0, "entropy_weight", self.entropy_weight, "a float >= 0")
    check(self.orthogonal_weight == 0.0 or (self.orthogonal_weight > 0.0 and
                                            self.bottleneck in ("gradient", "simvq")),
          "orthogonal_weight", self.orthogonal_weight,
          "0, or a float > 0 under bottleneck=gradient or simvq (a codebook trained by "
          "gradient)")
    check(not (self.restart_dead_codes and self.bottleneck == "simvq"), "restart_dead_codes",
          self.restart_dead_codes, "false under bottleneck=simvq (a restart would move the "
          "frozen basis, not the codes)")
    levels = self.fsq_levels.split("x")
    check(all(level.isdigit() and int(level) >= 2 for level in levels), "fsq_levels",
          self.fsq_levels, "integers of at least 2 separated by x, e.g. 8x5x5x5")

  @property
  def bottleneck_kind(self):
    """The table's row of `bottleneck`."""
    return BOTTLENECKS[self.bottleneck]

  @property
  def fsq_level_list(self):
    """fsq_levels as integers."""
    return [int(level) for level in self.fsq_levels.split("x")]
