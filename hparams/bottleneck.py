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
BOTTLENECKS = ("gradient", "ema", "soft_em")


@dataclasses.dataclass(frozen=True)
class BottleneckHParams(HParams):
  """The update rule of the codebook and its settings (docs/papers.md sections 1 and 2)."""
  bottleneck: str = "soft_em"        # "gradient" (VQ-VAE), "ema" (hard EM) or "soft_em"
  num_samples: int = 10              # m = n_s, soft-EM samples per position
  decay: float = 0.99                # EMA decay lambda
  epsilon: float = 1e-5              # Laplace smoothing of the counts
  beta: float = 0.25                 # commitment loss weight
  temperature: float = 1.0           # soft EM samples from softmax(-||z - e||^2 / T)
  # Codes start on latents of the first batch; codes unused for 100 steps move onto
  # latents of the batch.
  restart_dead_codes: bool = False

  def validate(self):
    super().validate()
    check(self.bottleneck in BOTTLENECKS, "bottleneck", self.bottleneck,
          " or ".join(BOTTLENECKS))
    check(self.num_samples >= 1, "num_samples", self.num_samples, "a positive integer")
    # decay, epsilon, beta and temperature: VectorQuantizer checks their ranges, once.
