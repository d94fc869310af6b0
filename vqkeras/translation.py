"""Translating text with a trained model, and scoring it with BLEU.

`Translator` turns lines of text into lines of text with a model's
`translate(source ids, beam_size, length_penalty, max_decode_length)`:
tokenization, batches of similar lengths, detokenization. `bleu` scores
detokenized output with sacrebleu and reports its signature.
"""

import dataclasses
import time

import numpy as np
import sacrebleu
import tensorflow as tf

from vqkeras.tokenizer import EOS_ID


@dataclasses.dataclass(frozen=True)
class Truncation:
  """An input longer than the model's maximum: line index, its tokens and those translated."""
  line: int
  tokens: int
  kept: int

  def __str__(self):
    return (f"line {self.line + 1}: {self.tokens} tokens, translated the first {self.kept} "
            f"(the model's max_length)")


class Translator:
  """Lines of source text to lines of translations.

  Args:
    model: a model with `translate` and `hparams.max_length`.
    tokenizer: the problem's `Tokenizer`.
    beam_size: of the model's search (tokens for the Transformer, codes for the
      latent model).
    length_penalty: alpha of the beam score.
    batch_size: sentences per batch; sentences are batched by length.
  """

  def __init__(self, model, tokenizer, beam_size=1, length_penalty=0.0, batch_size=64):
    self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
    self.max_length = model.hparams.max_length

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def translate_ids(source_ids):
      return tokenizer.detokenize(model.translate(source_ids, beam_size, length_penalty))

    self.translate_ids = translate_ids

  def source_ids(self, lines):
    """Token ids of lines, cut to max_length (keeping the final EOS); and the cuts made.

    Returns:
      (a list of int32 arrays, one per line, each ending with EOS; [Truncation]).
    """
    ragged = self.tokenizer.tokenize(tf.constant(lines, tf.string))
    ids, truncations = [], []
    for index, row in enumerate(ragged.to_list()):
      row = np.asarray(row, np.int32)
      if len(row) > self.max_length:
        truncations.append(Truncation(index, len(row) - 1, self.max_length - 1))
        row = np.concatenate([row[:self.max_length - 1], [EOS_ID]]).astype(np.int32)
      ids.append(row)
    return ids, truncations

  def translate(self, lines):
    """Translations of `lines` (str), one per line; and the [Truncation]s of over-long lines.

    Empty or blank lines translate to empty lines without running the model.
    """
    lines = [line.strip() for line in lines]
    outputs = [""] * len(lines)
    nonempty = [i for i, line in enumerate(lines) if line]
    if not nonempty:
      return outputs, []
    ids, truncations = self.source_ids([lines[i] for i in nonempty])
    truncations = [dataclasses.replace(t, line=nonempty[t.line]) for t in truncations]
    # Similar lengths in a batch: less padding, shorter searches.
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), self.batch_size):
      batch = order[start:start + self.batch_size]
      padded = np.zeros([len(batch), max(len(ids[i]) for i in batch)], np.int32)
      for row, i in enumerate(batch):
        padded[row, :len(ids[i])] = ids[i]
      for i, text in zip(batch, self.translate_ids(padded).numpy()):
        outputs[nonempty[i]] = text.decode("utf-8", errors="replace")
    return outputs, truncations


def bleu(hypotheses, references):
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
  score, signature = bleu(translations, references)
  return {"bleu": score, "bleu_signature": signature, "sentences": len(sources),
          "decode_seconds": seconds, "translations": translations}
