"""Hyper-parameters of the CIFAR-10 VQ-VAE with a Transformer prior over its codes.

Full sizes from van den Oord et al. 2017 (docs/papers.md section 1): 256 channels,
8 x 8 latents with 10 codebooks per position, Adam 2e-4, batch 128, 250k steps.
"""

import dataclasses

from vqkeras import registry
from vqkeras.hparams.bottleneck import BottleneckHParams
from vqkeras.hparams_lib import check

PRIOR_FACTORIZATIONS = ("positions", "raster")


@dataclasses.dataclass(frozen=True)
class ImageVQVAEHParams(BottleneckHParams):
  """Autoencoder, codebook size, pixel likelihood, latent prior and optimization.

  The bottleneck's update rule and settings are BottleneckHParams' fields.
  """
  ADDED_FIELDS = {**BottleneckHParams.ADDED_FIELDS, "prior_factorization": "raster",
                  "prior_block_layers": 1, "pixel_likelihood": "categorical",
                  "num_mixtures": 10}
  # Autoencoder.
  channels: int = 256                # width of the encoder and decoder convolutions
  latent_depth: int = 320            # D, depth of a latent position before slicing
  # Codebook (the rest of the bottleneck: BottleneckHParams).
  codebook_size: int = 512           # K codes per block (VQ) or level (rvq); FSQ: fsq_levels
  # Codes per position: codebooks (VQ, the paper's 8 x 8 x 10), levels (rvq), groups of
  # channels (fsq); 1 for gumbel.
  num_blocks: int = 10
  # Latent prior over the code grid (vqkeras.models.latent_prior): "positions", a
  # Transformer over the H*W positions and one over each position's B codes; "raster",
  # one over all H*W*B codes (the same factorization; its attention over 640 codes
  # does not fit in memory at the paper's sizes).
  prior_factorization: str = "positions"
  prior_hidden_size: int = 512
  prior_filter_size: int = 2048
  prior_num_layers: int = 6          # layers of the position Transformer
  # Layers of the block Transformer ("positions"). It reads H*W*B codes, as many as the
  # raster Transformer: each of its layers holds ~2 GB for the backward pass at batch 128.
  prior_block_layers: int = 1
  prior_num_heads: int = 8
  prior_dropout: float = 0.1         # the prior trains jointly with the autoencoder
  # Pixel likelihood (vqkeras.models.pixel_likelihood): "categorical", 256 values per
  # sub-pixel (3 x 256 output channels), or "logistic_mixture", num_mixtures discretized
  # logistics per sub-pixel (3 x 3 x num_mixtures channels; PixelCNN++).
  pixel_likelihood: str = "categorical"
  num_mixtures: int = 10
  # Optimization.
  batch_size: int = 128              # images per step, global over all replicas
  learning_rate: float = 2e-4
  train_steps: int = 250000
  # Sampling.
  sample_temperature: float = 1.0

  def validate(self):
    super().validate()
    check(self.pixel_likelihood in ("categorical", "logistic_mixture"), "pixel_likelihood",
          self.pixel_likelihood, "categorical or logistic_mixture")
    check(self.prior_factorization in PRIOR_FACTORIZATIONS, "prior_factorization",
          self.prior_factorization, " or ".join(PRIOR_FACTORIZATIONS))
    self.bottleneck_kind.check_codes(self.num_blocks, self.latent_depth, self.fsq_level_list,
                                     self.codebook_size)
    check(self.prior_hidden_size % self.prior_num_heads == 0, "prior_num_heads",
          self.prior_num_heads, f"a divisor of prior_hidden_size={self.prior_hidden_size}")
    for name in ("channels", "codebook_size", "batch_size", "train_steps", "num_mixtures",
                 "prior_num_layers", "prior_block_layers"):
      check(getattr(self, name) >= 1, name, getattr(self, name), "a positive integer")


# CPU sizes: the same changes serve every bottleneck.
SMALL = dict(channels=64, latent_depth=64, num_blocks=2, codebook_size=128,
             prior_hidden_size=128, prior_filter_size=512, prior_num_layers=2,
             prior_num_heads=4, batch_size=32, learning_rate=1e-3, train_steps=3000)
TINY = dict(channels=16, latent_depth=16, num_blocks=2, codebook_size=32, num_samples=4,
            prior_hidden_size=32, prior_filter_size=64, prior_num_layers=1,
            prior_num_heads=2, batch_size=16, learning_rate=2e-3, train_steps=100)


@registry.register_hparams
def vq_em_cifar():
  """Soft EM with m = 10 (Roy et al. 2018)."""
  return ImageVQVAEHParams()


@registry.register_hparams
def vq_ema_cifar():
  """Hard EM: the EMA codebook of VQ-VAE."""
  return vq_em_cifar().derive(bottleneck="ema")


@registry.register_hparams
def vq_gradient_cifar():
  """The VQ-VAE codebook loss."""
  return vq_em_cifar().derive(bottleneck="gradient")


@registry.register_hparams
def vq_em_cifar_small():
  """vq_em_cifar at CPU size (SMALL: 8 x 8 x 2 codes of 128, a 2-layer prior)."""
  return vq_em_cifar().derive(**SMALL)


@registry.register_hparams
def vq_ema_cifar_small():
  """vq_ema_cifar at CPU size (SMALL)."""
  return vq_ema_cifar().derive(**SMALL)


@registry.register_hparams
def vq_gradient_cifar_small():
  """vq_gradient_cifar at CPU size (SMALL)."""
  return vq_gradient_cifar().derive(**SMALL)


@registry.register_hparams
def vq_rvq_cifar_small():
  """Residual VQ: two EMA levels of 128 codes on the whole latent (RQ-VAE, SoundStream)."""
  return vq_ema_cifar_small().derive(bottleneck="rvq", restart_dead_codes=True)


@registry.register_hparams
def vq_fsq_cifar_small():
  """FSQ: two groups of three channels on the 8x6x5 grid (240 codes each; Mentzer et al.
  2023's levels for about 2^8 codes)."""
  return vq_em_cifar_small().derive(bottleneck="fsq", fsq_levels="8x6x5", latent_depth=6)


@registry.register_hparams
def vq_grvq_cifar_small():
  """Grouped residual VQ (HiFi-Codec): two halves of the channels, each two EMA levels of
  128 codes (four codes per position)."""
  return vq_rvq_cifar_small().derive(groups=2)


@registry.register_hparams
def vq_rfsq_cifar_small():
  """Residual FSQ: two stages of the 8x6x5 grid on three channels (240 codes each)."""
  return vq_em_cifar_small().derive(bottleneck="rfsq", fsq_levels="8x6x5", latent_depth=3)


@registry.register_hparams
def vq_lfq_cifar_small():
  """LFQ: two codes of 7 sign bits per position (128 codes each, as the VQ sets)."""
  return vq_em_cifar_small().derive(bottleneck="lfq", latent_depth=14)


@registry.register_hparams
def vq_bsq_cifar_small():
  """BSQ: LFQ's codes with each group of 7 channels on the unit sphere."""
  return vq_lfq_cifar_small().derive(bottleneck="bsq")


@registry.register_hparams
def vq_simvq_cifar_small():
  """SimVQ: the gradient codebook as a frozen random basis times a learned map."""
  return vq_gradient_cifar_small().derive(bottleneck="simvq")


@registry.register_hparams
def vq_em_cifar_tiny():
  """vq_em_cifar at test size (TINY)."""
  return vq_em_cifar().derive(**TINY)


@registry.register_hparams
def vq_ema_cifar_tiny():
  """vq_ema_cifar at test size (TINY)."""
  return vq_ema_cifar().derive(**TINY)


@registry.register_hparams
def vq_gradient_cifar_tiny():
  """vq_gradient_cifar at test size (TINY)."""
  return vq_gradient_cifar().derive(**TINY)
