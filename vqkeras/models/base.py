"""What the trainer and the tools need of a model, written down once.

A vqkeras model is a `keras.Model` built from one hyper-parameter record and
registered for the record's class:

    @register_model(ImageVQVAEHParams)
    class ImageVQVAE(ImageModel):
      loss_unit = "subpixels"

      @classmethod
      def from_hparams(cls, hparams): ...
      @staticmethod
      def make_optimizer(hparams): ...
      def loss_and_weight(self, features, training=False): ...

Who calls what:
  vqkeras/run.py         model_class, from_hparams, make_optimizer
  vqkeras/trainer.py     loss_and_weight, loss_unit, training_stage, enter_training_stage
  vqkeras/evaluation.py  metric_sums, summaries; BLEU of a TranslationModel
  vqkeras/run.py,        code_layers: the bottleneck layers whose health is reported
    reporting.py
  bin/decode, bin/export TranslationModel.translate (and candidates), ImageModel.sample,
                         reconstruct, encode_images
"""

import keras
import tensorflow as tf


class Model(keras.Model):
  """A model the trainer trains: built from hyper-parameters, scored by a summed loss."""

  loss_unit = "examples"   # what loss_and_weight's weight counts, for the progress rates

  @classmethod
  def from_hparams(cls, hparams):
    """The model of a hyper-parameter record (its variables are created on first call)."""
    raise NotImplementedError(f"{cls.__name__} does not define from_hparams.")

  @staticmethod
  def make_optimizer(hparams):
    """The Keras optimizer the hyper-parameters ask for."""
    raise NotImplementedError("The model does not define make_optimizer.")

  def loss_and_weight(self, features, training=False):
    """(summed loss of the batch, its weight: the count of `loss_unit` it sums over).

    The trainer divides by the global batch's weight, so the gradient is the same on
    any number of replicas; the bottleneck's own losses are the layers' `losses`.
    """
    raise NotImplementedError(f"{type(self).__name__} does not define loss_and_weight.")

  def code_layers(self):
    """The layers of discrete codes whose health the trainer reports and evaluation
    measures (`vqkeras.layers.Bottleneck.code_layers` of the model's bottleneck);
    none for a model without one."""
    return []

  def metric_sums(self, features):
    """Evaluation metrics of a batch as {name: (sum, weight)}, reported as sum / weight
    over a split. By default the loss."""
    return {"loss": self.loss_and_weight(features, training=False)}

  def summaries(self, features):
    """For TensorBoard, from a batch: {"images": {name: uint8 [n, H, W, C]},
    "text": {name: [n] strings}}. By default none."""
    del features
    return {}

  def training_stage(self, step, train_steps):
    """The name of the stage `step` of a `train_steps` run belongs to, for a model trained
    in stages; None: one stage throughout."""
    del step, train_steps
    return None

  def enter_training_stage(self, stage):
    """Makes `stage` (a name from `training_stage`) the one the next steps train."""
    del stage


class TranslationModel(Model):
  """A model that translates token ids to token ids (BLEU, bin/decode, bin/export)."""

  loss_unit = "target_tokens"
  # The latent model decodes several candidates in one pass (`translate_candidates`);
  # the autoregressive one scores them (`candidate_log_likelihoods`), as a teacher.
  decodes_candidates = False
  scores_candidates = False

  def translate(self, inputs, beam_size=1, length_penalty=0.0, max_decode_length=None,
                xla_bucket=None):
    """Source ids `[batch, length]` to target ids `[batch, length']`, EOS-terminated and
    0-padded; each row the same whatever else is in the batch. xla_bucket: None, or b:
    the parallel passes (the encoder, a latent model's decoder) compiled by XLA, one
    program per shape (translate.Search's xla pads the sources to multiples of b); a
    search stays a graph loop."""
    raise NotImplementedError(f"{type(self).__name__} does not define translate.")

  def check_search(self, beam_size, candidate_codes):
    """Raises ValueError, naming the fix, unless the model searches this way (called by
    `translate.Search.check` before tracing and by models that refuse in `translate`).
    Every model takes beam_size >= 1 and the candidate codes translate.Search names."""
    del beam_size, candidate_codes


class ImageModel(Model):
  """A model of images with a discrete code grid (bin/decode images, bin/export)."""

  loss_unit = "subpixels"

  def encode_images(self, images):
    """Codes of uint8 images `[batch, H, W, C]`."""
    raise NotImplementedError(f"{type(self).__name__} does not define encode_images.")

  def decode_codes(self, codes):
    """uint8 images from codes."""
    raise NotImplementedError(f"{type(self).__name__} does not define decode_codes.")

  def reconstruct(self, images):
    """uint8 images `[batch, H, W, 3]` decoded from their own codes."""
    return self.decode_codes(self.encode_images(images))

  def sample(self, num_samples, temperature=1.0, seed=(0, 0)):
    """New uint8 images drawn from the model."""
    raise NotImplementedError(f"{type(self).__name__} does not sample.")


MODELS = {}   # hyper-parameter class -> model class


def register_model(hparams_class):
  """Class decorator: the model built from hyper-parameter records of `hparams_class`."""
  def register(cls):
    if hparams_class in MODELS:
      raise ValueError(f"{hparams_class.__name__} has a model already: "
                       f"{MODELS[hparams_class].__name__}.")
    MODELS[hparams_class] = cls
    return cls
  return register


def model_class(hparams):
  """The model class registered for the class of `hparams` (or the nearest base class)."""
  for cls in type(hparams).__mro__:
    if cls in MODELS:
      return MODELS[cls]
  raise ValueError(f"No model is registered for hyper-parameters of the class "
                   f"{type(hparams).__name__}; classes with a model: "
                   f"{', '.join(sorted(cls.__name__ for cls in MODELS))}.")


def xla_stage(function, xla):
  """`function` compiled by XLA when `xla` (one program per input shape: the callers pad
  to buckets), else `function` itself: one parallel pass of a translation (an encoder, a
  latent model's decoder). Called while tracing (translate.translate_ids under tf.function):
  an eager call would compile anew each time."""
  return tf.function(function, jit_compile=True) if xla else function
