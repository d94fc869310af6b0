"""SavedModel export for TensorFlow Serving.

`export` writes `export_dir/<version>/`, the integer version directory TF
Serving watches, with signatures that run wholly in the TF graph: only
TensorFlow core ops and TensorFlow Text's SentencePiece ops, so a server (or a
process that imports only tensorflow and tensorflow_text) loads and runs them
with no code of ours.

Translation models:
  serving_default  inputs: string `[batch]` raw UTF-8 sentences
                   -> outputs: string `[batch]` translations
  translate_ids    inputs: int32 `[batch, length]` token ids (EOS-ended, 0-padded)
                   -> outputs: int32 `[batch, length]` ids
  The beam size, length penalty and candidates are fixed when exporting
  (--decode_hparams); with --teacher_dir the teacher that scores the candidates is
  exported with the model.
Image models:
  sample           num_images: int32 `[]`, seed: int32 `[2]`, temperature: float32 `[]`
                   -> images: uint8 `[num_images, H, W, 3]`
  encode           images: uint8 `[batch, H, W, 3]` -> codes: int32 `[batch, h, w, B]`
  decode           codes: int32 `[batch, h, w, B]` -> images: uint8 `[batch, H, W, 3]`
  serving_default is `encode`.
"""

import pathlib
import shutil

import tensorflow as tf

from vqkeras.translate import Search, translate_ids, translate_text


def _variables_of(model):
  """The model's variables, for the SavedModel to hold. The Keras model itself is
  not tracked: saving it would also trace Keras' own default signature of its call."""
  return [getattr(variable, "value", variable) for variable in model.variables]


class TranslationServing(tf.Module):
  """The serving signatures of a translation model and its tokenizer.

  Args:
    model: a `TranslationModel`.
    tokenizer: the problem's `Tokenizer`.
    search: how every request is translated (`translate.Search`); its teacher, if any,
      is saved beside the model.
  """

  def __init__(self, model, tokenizer, search=Search()):
    super().__init__(name="translation")
    search.check(model)
    self.model_variables = _variables_of(model)
    self.teacher_variables = [] if search.teacher is None else _variables_of(search.teacher)
    self.translate = tf.function(
        lambda inputs: {"outputs": translate_text(model, tokenizer, inputs, search)},
        input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    self.translate_ids = tf.function(
        lambda inputs: {"outputs": translate_ids(model, inputs, search)},
        input_signature=[tf.TensorSpec([None, None], tf.int32, name="inputs")])

  def signatures(self):
    """The SavedModel's signatures by name."""
    return {"serving_default": self.translate, "translate_ids": self.translate_ids}


class ImageServing(tf.Module):
  """The serving signatures of an image VQ-VAE: sample, encode and decode.

  Args:
    model: an `ImageVQVAE` (with a prior, for `sample`).
    image_shape: (H, W, 3) of the images it was trained on.
  """

  def __init__(self, model, image_shape):
    super().__init__(name="images")
    self.model_variables = _variables_of(model)
    self.has_prior = model.prior is not None
    codes_shape = model.encode_images(tf.zeros((1,) + tuple(image_shape), tf.uint8)).shape[1:]
    image_spec = tf.TensorSpec([None, *image_shape], tf.uint8, name="images")
    codes_spec = tf.TensorSpec([None, *codes_shape], tf.int32, name="codes")
    # The specs fix the dtypes; EnsureShape refuses other shapes at run time too (a
    # client's tensor is not checked against the signature's shape otherwise).
    self.encode = tf.function(
        lambda images: {"codes": model.encode_images(tf.ensure_shape(images, image_spec.shape))},
        input_signature=[image_spec])
    self.decode = tf.function(
        lambda codes: {"images": model.decode_codes(tf.ensure_shape(codes, codes_spec.shape))},
        input_signature=[codes_spec])
    self.sample = tf.function(
        lambda num_images, seed, temperature: {
            "images": model.sample(num_images, temperature, seed)},
        input_signature=[tf.TensorSpec([], tf.int32, name="num_images"),
                         tf.TensorSpec([2], tf.int32, name="seed"),
                         tf.TensorSpec([], tf.float32, name="temperature")])

  def signatures(self):
    """The SavedModel's signatures by name."""
    signatures = {"serving_default": self.encode, "encode": self.encode, "decode": self.decode}
    if self.has_prior:
      signatures["sample"] = self.sample
    return signatures


def export(serving, export_dir, version):
  """Writes `serving`'s signatures as a SavedModel in `export_dir/<version>/`.

  The model is written beside it first and renamed into place, so that a
  server watching export_dir never loads a half-written version.

  Returns:
    the version directory.

  Raises:
    FileExistsError: that version exists (an export is never overwritten).
  """
  export_dir = pathlib.Path(export_dir)
  final = export_dir / str(int(version))
  if final.exists():
    raise FileExistsError(f"{final} exists: versions are never overwritten. Train further "
                          f"(the version is the training step) or use another --export_dir.")
  partial = export_dir / f".{int(version)}.partial"
  shutil.rmtree(partial, ignore_errors=True)
  export_dir.mkdir(parents=True, exist_ok=True)
  tf.saved_model.save(serving, str(partial), signatures=serving.signatures())
  partial.rename(final)
  return final
