"""Latency of the exported translation model against decoding in Python, in one run.

Exports a trained run (bin/export's code) to a temporary directory, loads the
SavedModel as TF Serving would (tf.saved_model.load), and times its
serving_default signature against vqkeras' Python decoding (Translator, as
bin/decode runs it) on the same batches of Multi30k validation sentences, at
batch 1 and batch 64. The export must not be slower.

  python bench/bench_export.py --data_dir=D --model_dir=runs/vq_em_nc3
"""

import argparse
import pathlib
import tempfile
import time

from vqkeras import startup

startup.quiet()   # before TensorFlow loads

import tensorflow as tf
import tensorflow_text  # noqa: F401  pylint: disable=unused-import  (the SentencePiece ops)

from vqkeras import decoding
from vqkeras import export
from vqkeras import translate
from vqkeras.files import read_lines
from vqkeras.run import Run

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def batches_of(lines, size):
  return [lines[i:i + size] for i in range(0, len(lines), size)]


def seconds_per_sentence(translate, batches, rounds):
  """Best of `rounds` passes over the batches, per sentence, after a warm-up pass."""
  for batch in batches[:2]:
    translate(batch)
  best = float("inf")
  for _ in range(rounds):
    start = time.perf_counter()
    for batch in batches:
      translate(batch)
    best = min(best, time.perf_counter() - start)
  return best / sum(len(b) for b in batches)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--raw_dir", default=str(SHARED / "multi30k"))
  parser.add_argument("--decode_hparams", default="")
  parser.add_argument("--batch1_sentences", type=int, default=100)
  parser.add_argument("--batch64_sentences", type=int, default=1014)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()

  run = Run.from_model_dir(args.model_dir, args.data_dir, args.raw_dir, log=lambda _: None)
  options = decoding.decode_hparams(run.hparams, args.decode_hparams)
  tokenizer = run.tokenizer()
  search = translate.Search.of(options)
  translator = translate.Translator(run.model, tokenizer, search, batch_size=10**9)
  serving = export.TranslationServing(run.model, tokenizer, search)
  sources = read_lines(pathlib.Path(args.raw_dir) / "val.en.gz")
  with tempfile.TemporaryDirectory() as export_dir:
    path = export.export(serving, export_dir, run.step)
    served = tf.saved_model.load(str(path)).signatures["serving_default"]

    def python(batch):
      return translator.translate(batch)[0]

    def exported(batch):
      return [s.decode() for s in served(inputs=tf.constant(batch))["outputs"].numpy()]

    print(f"{run.config.hparams} at step {run.step}, beam_size={options.beam_size}")
    print(f"{'batch':>5s} {'python ms/sentence':>19s} {'export ms/sentence':>19s} "
          f"{'python/export':>13s}")
    for size, count in ((1, args.batch1_sentences), (64, args.batch64_sentences)):
      batches = batches_of(sources[:count], size)
      same = all(python(b) == exported(b) for b in batches[:3])
      ours = seconds_per_sentence(python, batches, args.rounds)
      theirs = seconds_per_sentence(exported, batches, args.rounds)
      print(f"{size:5d} {1000 * ours:19.2f} {1000 * theirs:19.2f} {ours / theirs:12.2f}x"
            f"{'' if same else '  (outputs differ!)'}")


if __name__ == "__main__":
  main()
