"""Evaluates the latest checkpoint in --model_dir on a split; the last line is JSON.

  bin/eval --problem=image_cifar10 --hparams=vq_em_cifar_small --data_dir=D --model_dir=M
  bin/eval --problem=translate_ende_multi30k --hparams=transformer_small --data_dir=D \
      --model_dir=M --decode_hparams="beam_size=4"

Translation models are scored with BLEU (sacrebleu, on detokenized text; the
signature is printed with the score).
"""

import json

from vqkeras import decoding
from vqkeras.cli import flags
from vqkeras.cli import runs

FLAGS = flags.FLAGS


def main(argv):
  del argv
  from vqkeras import evaluation  # pylint: disable=import-outside-toplevel
  trained = runs.trained_run()
  options = decoding.decode_hparams(trained.hparams, FLAGS.decode_hparams)
  metrics = evaluation.Evaluator(trained).evaluate(FLAGS.split, options, FLAGS.bleu_sentences,
                                                   flags.teacher())
  print(json.dumps(metrics))


def run():
  runs.define_run_flags()
  flags.flags.DEFINE_enum("split", "validation", ["train", "validation", "test"],
                          "The split to evaluate.")
  flags.define_decode_flags("of the BLEU translations")
  flags.flags.DEFINE_integer("bleu_sentences", None, "Score BLEU on the first N sentences of "
                             "the split only (default: all).")
  flags.run_tool(main)


if __name__ == "__main__":
  run()
