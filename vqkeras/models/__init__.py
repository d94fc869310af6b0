"""Models built on the vqkeras bottleneck."""

from vqkeras.models.image_vqvae import ImageVQVAE
from vqkeras.models.transformer import Transformer
