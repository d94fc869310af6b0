"""The VQ-VAE image autoencoder of van den Oord et al. 2017 (PAPERS.md section 1)."""

import keras
import tensorflow as tf

from vqkeras import registry
from vqkeras.layers import VectorQuantizer


class ResidualBlock(keras.layers.Layer):
  """x + conv1x1(relu(conv3x3(relu(x)))), the paper's residual block."""

  def __init__(self, channels, hidden_channels, **kwargs):
    super().__init__(**kwargs)
    self.channels = channels
    self.hidden_channels = hidden_channels
    self.conv3x3 = keras.layers.Conv2D(hidden_channels, 3, padding="same")
    self.conv1x1 = keras.layers.Conv2D(channels, 1)

  def call(self, x):
    return x + self.conv1x1(keras.ops.relu(self.conv3x3(keras.ops.relu(x))))

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


@registry.register_model("ImageVQVAEHParams")
class ImageVQVAE(keras.Model):
  """Encoder, vector-quantization bottleneck, decoder.

  Args:
    channels: width of the convolutions (256 in the paper).
    latent_depth: D, the depth of a latent position before quantization.
    codebook_size: K codes per block.
    num_blocks: codebooks per latent position (the paper's "8 x 8 x 10").
    output_channels: channels the decoder predicts per pixel (3 for a mean image;
      more for a likelihood's parameters).
    **quantizer_kwargs: further `VectorQuantizer` arguments (update, decay, ...).

  Call: images scaled to [-1, 1], `[batch, H, W, 3]`, to decoder outputs
  `[batch, H, W, output_channels]`. `encode` gives the codes `[batch, H/4, W/4, B]`.
  """

  def __init__(self, channels=256, latent_depth=64, codebook_size=512, num_blocks=1,
               output_channels=3, **quantizer_kwargs):
    super().__init__()
    self.encoder = image_encoder(channels, latent_depth)
    self.quantizer = VectorQuantizer(codebook_size, num_blocks=num_blocks,
                                     name="quantizer", **quantizer_kwargs)
    self.decoder = image_decoder(channels, output_channels)

  @classmethod
  def from_hparams(cls, hparams):
    return cls(hparams.channels, hparams.latent_depth, hparams.codebook_size,
               hparams.num_blocks, update=hparams.bottleneck, num_samples=hparams.num_samples,
               decay=hparams.decay, epsilon=hparams.epsilon, beta=hparams.beta,
               temperature=hparams.temperature, restart_dead_codes=hparams.restart_dead_codes)

  @staticmethod
  def make_optimizer(hparams):
    return keras.optimizers.Adam(hparams.learning_rate)

  def call(self, images, training=False):
    return self.decoder(self.quantizer(self.encoder(images), training=training))

  loss_unit = "subpixels"   # what loss_and_weight's weight counts

  def loss_and_weight(self, features, training=False):
    """(sum of squared reconstruction errors, number of sub-pixels) of features["inputs"]."""
    x = features["inputs"]
    error = tf.square(tf.cast(self(x, training=training), tf.float32) - x)
    return tf.reduce_sum(error), tf.cast(tf.size(error), tf.float32)

  def summaries(self, features):
    """For TensorBoard: images beside their reconstructions, side by side."""
    images = features["image"][:8]
    reconstructions = self(features["inputs"][:8], training=False)
    reconstructions = tf.cast(tf.clip_by_value(tf.round((reconstructions + 1.0) * 127.5), 0, 255),
                              tf.uint8)
    return {"images": {"reconstructions": tf.concat([images, reconstructions], axis=2)}}

  def encode(self, images):
    return self.quantizer.encode(self.encoder(images))

  def decode(self, codes):
    return self.decoder(self.quantizer.decode(codes))
