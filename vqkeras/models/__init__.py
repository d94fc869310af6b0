"""Models built on the vqkeras bottleneck."""

from vqkeras.models.image_vqvae import ImageVQVAE
from vqkeras.models.transformer import Transformer
from vqkeras.models.latent_transformer import LatentTransformer
