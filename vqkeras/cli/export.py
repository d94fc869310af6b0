"""Exports the latest checkpoint in --model_dir as a SavedModel for TensorFlow Serving.

  bin/export --problem=translate_ende_multi30k --hparams=vq_em_small --data_dir=D \
      --model_dir=M --export_dir=E [--decode_hparams="beam_size=1"]
  bin/export ... --decode_hparams=num_candidates=4 --teacher_dir=T   # both models in one

writes E/<training step>/ (see vqkeras/export.py for the signatures). Serve it with
  docker run -p 8501:8501 -v E:/models/ende -e MODEL_NAME=ende tensorflow/serving
"""

import sys

from vqkeras import decoding
from vqkeras.cli import flags
from vqkeras.cli import runs

FLAGS = flags.FLAGS


def serving_module(trained, options):
  """The signatures for the trained model: translation or images."""
  from vqkeras import export  # pylint: disable=import-outside-toplevel
  from vqkeras import models  # pylint: disable=import-outside-toplevel
  from vqkeras.translate import Search  # pylint: disable=import-outside-toplevel
  model = trained.model
  if isinstance(model, models.TranslationModel):
    return export.TranslationServing(model, trained.tokenizer(),
                                     Search.of(options, flags.teacher()))
  if isinstance(model, models.ImageModel):
    return export.ImageServing(model, trained.problem.image_shape)
  raise ValueError(f"The {type(model).__name__} model of --hparams={FLAGS.hparams} has no "
                   f"serving signatures.")


def main(argv):
  del argv
  from vqkeras import export  # pylint: disable=import-outside-toplevel
  if not FLAGS.export_dir:
    raise ValueError("--export_dir is required: TF Serving's model base path, e.g. "
                     "--export_dir=exports/ende.")
  trained = runs.trained_run()
  options = decoding.decode_hparams(trained.hparams, FLAGS.decode_hparams)
  serving = serving_module(trained, options)
  try:
    path = export.export(serving, FLAGS.export_dir, trained.step)
  except FileExistsError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  print(f"exported {path} with signatures: {', '.join(sorted(serving.signatures()))}")


def run():
  runs.define_run_flags()
  define = flags.flags
  define.DEFINE_string("export_dir", None, "TF Serving's model base path; the model goes to "
                       "EXPORT_DIR/<training step>/.")
  flags.define_decode_flags("of the served translations, fixed in the export")
  flags.run_tool(main)


if __name__ == "__main__":
  run()
