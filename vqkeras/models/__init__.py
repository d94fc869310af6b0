"""Models built on the vqkeras bottleneck; the interface they share is models/base.py."""

from vqkeras.models.base import ImageModel, Model, TranslationModel, model_class
from vqkeras.models.image_vqvae import ImageVQVAE
from vqkeras.models.transformer import Transformer
from vqkeras.models.latent_transformer import LatentTransformer
from vqkeras.models.latent_glat import LatentGlat
