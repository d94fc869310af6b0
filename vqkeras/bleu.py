"""BLEU of detokenized translations (sacrebleu), with the signature that makes it comparable."""

import time

import sacrebleu


def corpus_bleu(hypotheses, references):
  """Corpus BLEU of detokenized hypotheses against one reference each (sacrebleu).

  Returns:
    (score, signature): the signature names the tokenization and settings, so
    scores can be compared across papers and tools.
  """
  metric = sacrebleu.metrics.BLEU()
  score = metric.corpus_score(list(hypotheses), [list(references)])
  return score.score, str(metric.get_signature())


def evaluate_bleu(translator, sources, references):
  """BLEU of a translator on parallel lines, with the decoding time.

  Returns:
    {"bleu", "bleu_signature", "sentences", "decode_seconds", "translations"}.
  """
  start = time.perf_counter()
  translations, _ = translator.translate(sources)
  seconds = time.perf_counter() - start
  score, signature = corpus_bleu(translations, references)
  return {"bleu": score, "bleu_signature": signature, "sentences": len(sources),
          "decode_seconds": seconds, "translations": translations}
