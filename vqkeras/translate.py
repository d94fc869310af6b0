"""Translating text with a trained model.

`Translator` turns lines of text into lines of text with a model's
`translate(source ids, beam_size, length_penalty, max_decode_length)`:
tokenization, batches of similar lengths, detokenization (BLEU: vqkeras.bleu).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from vqkeras.decoding import CANDIDATE_CODES
from vqkeras.models.base import TranslationModel
from vqkeras.tokenizer import EOS_ID, PAD_ID


@dataclasses.dataclass(frozen=True)
class Truncation:
  """An input longer than the model's maximum: line index, its tokens and those translated."""
  line: int
  tokens: int
  kept: int

  def __str__(self):
    return (f"line {self.line + 1}: {self.tokens} tokens, translated the first {self.kept} "
            f"(the model's max_length)")


def source_ids(tokenizer, text, max_length):
  """Source ids `[batch, length]` of `[batch]` strings, each cut to max_length tokens
  (keeping its final EOS); and the number of tokens before the cut `[batch]`.

  Bytes that are not UTF-8 become U+FFFD first, so that they cannot fail a batch.
  """
  text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace")
  ids = tokenizer.tokenize(text)
  lengths = tf.cast(ids.row_lengths(), tf.int32)
  cut = tf.concat([ids[:, :max_length - 1], tf.fill([ids.nrows(), 1], EOS_ID)], axis=1)
  cut = cut.to_tensor(default_value=PAD_ID)
  # A row that fits keeps its own EOS; the appended one falls outside the mask.
  kept = tf.minimum(lengths, max_length)
  cut = tf.where(tf.sequence_mask(kept, tf.shape(cut)[1]), cut, PAD_ID)
  return cut[:, :tf.reduce_max(kept)], lengths


# The latent models under XLA: sources (and latent-GLAT's decoding lengths) are padded to
# multiples of this many tokens, batches to powers of two rows, so that one compiled program
# serves a bucket.
XLA_BUCKET = 8


@dataclasses.dataclass(frozen=True)
class Search:
  """How a model translates: its search and, for a latent model, its candidates.

  beam_size: of the model's search (tokens for the Transformer, codes for the paper's
    latent model; latent-GLAT searches nothing: 1).
  length_penalty: alpha of the beam score and of the candidates' score.
  num_candidates: latent models: translations decoded at once, the best kept.
  teacher: the Transformer that scores the candidates; None: the model itself.
  candidate_codes: the paper's latent model: how its candidates' codes are searched
    (`LatentTransformer.translate_candidates`).
  xla: sources (and latent-GLAT's decoding lengths) padded to multiples of XLA_BUCKET
    tokens, batches to powers of two rows (`xla_buckets`), and every parallel pass compiled
    by XLA, one program per padded shape: the encoder and a latent model's decoder; the
    searches (the Transformer's tokens, the paper's model's codes) stay graph loops between.
    The tokens do not change: no row reads another's padding.
  """
  beam_size: int = 1
  length_penalty: float = 0.0
  num_candidates: int = 1
  teacher: object = None
  candidate_codes: str = "beam"
  xla: bool = False

  @classmethod
  def of(cls, options, teacher=None):
    """The search of `decoding.DecodeHParams` options and a teacher."""
    return cls(options.beam_size, options.length_penalty, options.num_candidates, teacher,
               options.candidate_codes, options.xla)

  def check(self, model):
    """Raises ValueError unless the model can translate this way."""
    if self.candidate_codes not in CANDIDATE_CODES:
      raise ValueError(f"candidate_codes={self.candidate_codes!r}: choose one of "
                       f"{', '.join(CANDIDATE_CODES)}.")
    if self.num_candidates > 1 and not model.decodes_candidates:
      raise ValueError(f"num_candidates={self.num_candidates}: only the latent models decode "
                       f"several candidates; the {type(model).__name__} searches with "
                       f"beam_size.")
    model.check_search(self.beam_size, self.candidate_codes)
    teacher = self.teacher
    if teacher is not None:
      if self.num_candidates == 1:
        raise ValueError("A teacher scores candidates: give num_candidates > 1 in "
                         "--decode_hparams, e.g. num_candidates=4, or drop --teacher_dir.")
      if not (isinstance(teacher, TranslationModel) and teacher.scores_candidates):
        raise ValueError(f"The teacher must be an autoregressive Transformer run, not a "
                         f"{type(teacher).__name__}.")
      if teacher.hparams.vocab_size != model.hparams.vocab_size:
        raise ValueError(f"The teacher's vocabulary has {teacher.hparams.vocab_size} pieces, "
                         f"the model's {model.hparams.vocab_size}: they must share the "
                         f"vocabulary.")


def translate_ids(model, ids, search=Search()):
  """The model's translation ids of source ids `[batch, length]` by `search`.

  Under `search.xla` the sources are padded to buckets (`xla_buckets`) and the model
  compiles its passes with XLA, its decoding length too rounded up to a multiple of
  XLA_BUCKET (`translate(..., xla_bucket=XLA_BUCKET)`): one program per bucket.
  """
  options = {}
  if search.num_candidates > 1:
    options = {"num_candidates": search.num_candidates,
               "scorer": None if search.teacher is None else
                         search.teacher.candidate_log_likelihoods,
               "candidate_codes": search.candidate_codes}
  if not search.xla:
    return model.translate(ids, search.beam_size, search.length_penalty, **options)
  batch_size = tf.shape(ids)[0]
  translated = model.translate(xla_buckets(ids), search.beam_size, search.length_penalty,
                               xla_bucket=XLA_BUCKET, **options)
  return translated[:batch_size]


def xla_buckets(ids):
  """Source ids `[batch, S]` padded for XLA: to a multiple of XLA_BUCKET tokens, and to a
  power of two rows by repeating the last sentence (its copies are translated and dropped),
  so that a server compiles a few programs per length bucket, not one per batch size."""
  ids = tf.pad(ids, [[0, 0], [0, -tf.shape(ids)[1] % XLA_BUCKET]])
  batch_size = tf.shape(ids)[0]
  sizes = 2 ** tf.range(31)
  rows = sizes[tf.reduce_sum(tf.cast(sizes < batch_size, tf.int32))]
  return tf.concat([ids, tf.repeat(ids[-1:], rows - batch_size, axis=0)], axis=0)


def translate_text(model, tokenizer, text, search=Search()):
  """Translations `[batch]` (strings) of sentences `[batch]`, all in the TF graph.

  Tokenization, the model's search (`translate_ids`) and detokenization; over-long
  sentences are translated up to the model's max_length; empty or blank sentences
  translate to empty strings. The exported serving signature and `Translator` both
  run this.
  """
  ids, _ = source_ids(tokenizer, text, model.hparams.max_length)
  translations = tokenizer.detokenize(translate_ids(model, ids, search))
  blank = tf.equal(tf.strings.length(tf.strings.strip(text)), 0)
  return tf.where(blank, "", translations)


class Translator:
  """Lines of source text to lines of translations, in batches of similar lengths.

  Args:
    model: a model with `translate` and `hparams.max_length`.
    tokenizer: the problem's `Tokenizer`.
    search: how the model translates (`Search`).
    batch_size: sentences per batch.
  """

  def __init__(self, model, tokenizer, search=Search(), batch_size=64):
    search.check(model)
    self.tokenizer, self.batch_size = tokenizer, batch_size
    self.max_length = model.hparams.max_length
    self.translate_batch = tf.function(
        lambda text: translate_text(model, tokenizer, text, search),
        input_signature=[tf.TensorSpec([None], tf.string)])

  def translate(self, lines, progress=None):
    """Translations of `lines` (str), one per line; and the [Truncation]s of over-long lines.

    Empty or blank lines translate to empty lines without running the model.
    progress: called with (sentences translated, sentences to translate) after each batch.
    """
    outputs = [""] * len(lines)
    nonempty = [i for i, line in enumerate(lines) if line.strip()]
    if not nonempty:
      return outputs, []
    text = tf.constant([lines[i] for i in nonempty])
    _, lengths = source_ids(self.tokenizer, text, self.max_length)
    lengths = lengths.numpy()
    truncations = [Truncation(nonempty[i], int(n) - 1, self.max_length - 1)
                   for i, n in enumerate(lengths) if n > self.max_length]
    # Similar lengths in a batch: less padding, shorter searches.
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), self.batch_size):
      batch = order[start:start + self.batch_size]
      for i, translated in zip(batch, self.translate_batch(tf.gather(text, batch)).numpy()):
        outputs[nonempty[i]] = translated.decode("utf-8", errors="replace")
      if progress:
        progress(start + len(batch), len(order))
    return outputs, truncations
