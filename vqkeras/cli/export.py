"""Exports the latest checkpoint in --model_dir as a SavedModel for TensorFlow Serving.

  bin/export --problem=translate_ende_multi30k --hparams=vq_em_small --data_dir=D \
      --model_dir=M --export_dir=E [--decode_hparams="beam_size=1"]
  bin/export ... --decode_hparams=num_candidates=4 --teacher_dir=T   # both models in one

writes E/<training step>/ (see vqkeras/export.py for the signatures). Serve it with
  docker run -p 8501:8501 -v E:/models/ende -e MODEL_NAME=ende tensorflow/serving
"""

import sys

from vqkeras import beam_search
from vqkeras.cli import flags
from vqkeras.cli import train

FLAGS = flags.FLAGS


def serving_module(trainer, options):
  """The signatures for the trained model: translation or images."""
  from vqkeras import export  # pylint: disable=import-outside-toplevel
  model = trainer.model
  if hasattr(model, "translate"):
    tokenizer = trainer.problem.tokenizer(FLAGS.data_dir, flags.raw_dir(), trainer.hparams)
    return export.TranslationServing(model, tokenizer, options.beam_size, options.length_penalty,
                                     options.num_candidates, flags.teacher())
  if hasattr(model, "encode_images"):
    return export.ImageServing(model, trainer.problem.image_shape)
  raise ValueError(f"The {type(model).__name__} model of --hparams={FLAGS.hparams} has no "
                   f"serving signatures.")


def main(argv):
  del argv
  from vqkeras import export  # pylint: disable=import-outside-toplevel
  if not FLAGS.hparams:
    raise ValueError("--hparams is required: the set the model in --model_dir was trained with.")
  if not FLAGS.export_dir:
    raise ValueError("--export_dir is required: TF Serving's model base path, e.g. "
                     "--export_dir=exports/ende.")
  trainer = train.make_trainer()
  if not trainer.manager.latest_checkpoint:
    raise FileNotFoundError(f"No checkpoint in {FLAGS.model_dir}/checkpoints; train first.")
  options = beam_search.decode_hparams(trainer.hparams, FLAGS.decode_hparams)
  trainer.restore()
  serving = serving_module(trainer, options)
  try:
    path = export.export(serving, FLAGS.export_dir, trainer.step)
  except FileExistsError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  print(f"exported {path} with signatures: {', '.join(sorted(serving.signatures()))}")


def run():
  train.define_flags()
  define = flags.flags
  define.DEFINE_string("export_dir", None, "TF Serving's model base path; the model goes to "
                       "EXPORT_DIR/<training step>/.")
  flags.define_decode_flags("of the served translations, fixed in the export")
  flags.run_tool(main)


if __name__ == "__main__":
  run()
