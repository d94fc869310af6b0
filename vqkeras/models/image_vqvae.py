"""The VQ-VAE image autoencoder of van den Oord et al. 2017 (docs/papers.md section 1)."""

import math

import keras
import tensorflow as tf

from vqkeras.hparams.image_vqvae import ImageVQVAEHParams
from vqkeras.input_pipeline import scale_images
from vqkeras.models.base import ImageModel, register_model
from vqkeras.models.bottleneck import bottleneck_from_hparams
from vqkeras.models.latent_prior import LatentPrior, RasterPrior
from vqkeras.models.pixel_likelihood import CategoricalPixels, pixel_likelihood


class ResidualBlock(keras.layers.Layer):
  """x + conv1x1(relu(conv3x3(relu(x)))), the paper's residual block."""

  def __init__(self, channels, hidden_channels, **kwargs):
    super().__init__(**kwargs)
    self.channels = channels
    self.hidden_channels = hidden_channels
    self.conv3x3 = keras.layers.Conv2D(hidden_channels, 3, padding="same")
    self.conv1x1 = keras.layers.Conv2D(channels, 1)

  def build(self, input_shape):
    self.conv3x3.build(input_shape)
    self.conv1x1.build(tuple(input_shape[:-1]) + (self.hidden_channels,))

  def call(self, x):
    h = keras.ops.relu(self.conv3x3(keras.ops.relu(x)))
    # The 1x1 convolution's bias is added after the skip connection. As conv1x1(h) + x,
    # TensorFlow's Grappler remapper fuses the convolution, its bias, the sum and the
    # next ReLU into one op while the next block's skip connection still reads the sum,
    # fails ("remapper failed: ... fanout ... exist for missing node") and leaves the
    # whole step unoptimized. The same weights and values; steps measured as fast.
    return (x + keras.ops.conv(h, self.conv1x1.kernel)) + self.conv1x1.bias

  def get_config(self):
    return {**super().get_config(), "channels": self.channels,
            "hidden_channels": self.hidden_channels}


def image_encoder(channels, latent_depth, name="encoder"):
  """Two stride-2 4x4 convolutions, two residual blocks: [B, H, W, 3] to [B, H/4, W/4, depth]."""
  return keras.Sequential([
      keras.layers.Conv2D(channels, 4, strides=2, padding="same", activation="relu"),
      keras.layers.Conv2D(channels, 4, strides=2, padding="same"),
      ResidualBlock(channels, channels),
      ResidualBlock(channels, channels),
      keras.layers.ReLU(),
      keras.layers.Conv2D(latent_depth, 1),
  ], name=name)


def image_decoder(channels, output_channels, name="decoder"):
  """The mirror of `image_encoder`: two residual blocks, two stride-2 4x4 transposed convolutions."""
  return keras.Sequential([
      keras.layers.Conv2D(channels, 3, padding="same"),
      ResidualBlock(channels, channels),
      ResidualBlock(channels, channels),
      keras.layers.ReLU(),
      keras.layers.Conv2DTranspose(channels, 4, strides=2, padding="same", activation="relu"),
      keras.layers.Conv2DTranspose(output_channels, 4, strides=2, padding="same"),
  ], name=name)


LN2 = math.log(2.0)


@register_model(ImageVQVAEHParams)
class ImageVQVAE(ImageModel):
  """VQ-VAE over images with a discrete pixel likelihood and a Transformer prior over codes.

  The decoder gives a probability for each of a sub-pixel's 256 values (a categorical
  or a mixture of discretized logistics: vqkeras.models.pixel_likelihood), so the
  negative log-likelihood is in bits per dimension; the prior (vqkeras.models.latent_prior)
  models the codes, trained jointly on them (on the soft-EM draws under soft EM).
  bits/dim of the bound = reconstruction NLL + prior NLL of the codes, over
  H * W * 3 dimensions.

  Args:
    channels: width of the convolutions (256 in the paper).
    latent_depth: D, the depth of a latent position before quantization.
    quantizer: the bottleneck layer (`vqkeras.models.bottleneck`): a `VectorQuantizer`
      (its K codes per block and B blocks per latent position, the paper's
      "8 x 8 x 10", size the prior), a `ResidualVectorQuantizer` (K codes per level, Q
      levels) or a `FiniteScalarQuantizer` (K grid points per group, C groups).
    prior: dict of the prior's sizes (num_layers, hidden_size, filter_size,
      num_heads, dropout; block_layers for LatentPrior), or None for an
      autoencoder without a prior.
    prior_factorization: "positions" (`LatentPrior`) or "raster" (`RasterPrior`).
    likelihood: the pixel likelihood (`CategoricalPixels` by default, or
      `LogisticMixturePixels`), which sets the decoder's output channels.

  Call: uint8 images `[batch, H, W, 3]` to the log-probabilities of every value of
  every sub-pixel, `[batch, H, W, 3, 256]`.
  """

  def __init__(self, channels, latent_depth, quantizer, prior=None,
               prior_factorization="positions", likelihood=None):
    super().__init__()
    self.encoder = image_encoder(channels, latent_depth)
    self.quantizer = quantizer
    self.likelihood = likelihood or CategoricalPixels()
    self.decoder = image_decoder(channels, self.likelihood.output_channels)
    prior_class = {"positions": LatentPrior, "raster": RasterPrior}[prior_factorization]
    self.prior = (prior_class(quantizer.codebook_size, quantizer.codes_per_position, name="prior",
                              **prior) if prior else None)

  @classmethod
  def from_hparams(cls, hparams):
    prior = dict(num_layers=hparams.prior_num_layers, hidden_size=hparams.prior_hidden_size,
                 filter_size=hparams.prior_filter_size, num_heads=hparams.prior_num_heads,
                 dropout=hparams.prior_dropout)
    if hparams.prior_factorization == "positions":
      prior["block_layers"] = hparams.prior_block_layers
    quantizer = bottleneck_from_hparams(hparams, hparams.codebook_size, hparams.num_blocks)
    return cls(hparams.channels, hparams.latent_depth, quantizer, prior=prior,
               prior_factorization=hparams.prior_factorization,
               likelihood=pixel_likelihood(hparams.pixel_likelihood, hparams.num_mixtures))

  @staticmethod
  def make_optimizer(hparams):
    return keras.optimizers.Adam(hparams.learning_rate)

  def code_layers(self):
    return self.quantizer.code_layers()

  def call(self, images, training=False):
    quantized = self.quantizer(self.encoder(scale_images(images)), training=training)
    return self.likelihood.log_probs(self.decoder(quantized))

  def negative_log_likelihoods(self, images, training=False, squared_error=False):
    """Per image, in bits: reconstruction -log p(x | z_q(x)) and prior -log p(z); `[batch]` each.

    squared_error: also the squared error of the decoder's mean image, summed per image
    (for evaluation: its softmax over every sub-pixel's 256 values costs a training step
    two more tensors of the logits' size).
    """
    out = self.quantizer(self.encoder(scale_images(images)), training=training,
                         return_codes=True)
    outputs = self.decoder(out.quantized)
    result = {"reconstruction": self.likelihood.nll(outputs, images) / LN2}
    if self.prior is not None:
      # The soft-EM draws where the bottleneck has them, else the codes.
      result["prior"] = self.prior.negative_log_likelihood(
          out.codes, out.samples, training=training) / LN2
    if squared_error:
      mean = self.likelihood.mean(outputs)
      result["squared_error"] = tf.reduce_sum(
          tf.square(scale_images(mean) - scale_images(images)), axis=[1, 2, 3])
    return result

  def loss_and_weight(self, features, training=False):
    """(summed bits of reconstruction and prior, number of sub-pixels): the bits/dim bound."""
    images = features["image"]
    nll = self.negative_log_likelihoods(images, training)
    total = tf.reduce_sum(nll["reconstruction"]) + tf.reduce_sum(nll.get("prior", 0.0))
    return total, tf.cast(tf.size(images), tf.float32)

  def metric_sums(self, features):
    """Evaluation metrics as (sum, weight) pairs, to aggregate over a split."""
    images = features["image"]
    nll = self.negative_log_likelihoods(images, training=False, squared_error=True)
    dims = tf.cast(tf.size(images), tf.float32)
    sums = {"bits_per_dim_reconstruction": (tf.reduce_sum(nll["reconstruction"]), dims),
            "mse": (tf.reduce_sum(nll["squared_error"]), dims)}
    if "prior" in nll:
      sums["bits_per_dim_prior"] = (tf.reduce_sum(nll["prior"]), dims)
      sums["bits_per_dim_total"] = (tf.reduce_sum(nll["reconstruction"] + nll["prior"]), dims)
    return sums

  def decode_codes(self, codes):
    """uint8 images `[batch, H, W, 3]` (each sub-pixel's most likely value) from codes."""
    return self.likelihood.mode(self.decoder(self.quantizer.decode(codes)))

  def encode_images(self, images):
    """Codes `[batch, H/4, W/4, B]` of uint8 images."""
    return self.quantizer.encode(self.encoder(scale_images(images)))

  def sample(self, num_samples, temperature=1.0, seed=(0, 0)):
    """New uint8 images: codes drawn from the prior, decoded."""
    if self.prior is None:
      raise ValueError("This model has no prior to sample from.")
    return self.decode_codes(self.prior.sample(num_samples, temperature, seed))

  def summaries(self, features):
    """For TensorBoard: images beside their reconstructions, and samples from the prior."""
    images = features["image"][:8]
    summaries = {"images": {"reconstructions": tf.concat([images, self.reconstruct(images)],
                                                         axis=2)}}
    if self.prior is not None:
      summaries["images"]["samples"] = self.sample(8, seed=(1, 2))
    return summaries
