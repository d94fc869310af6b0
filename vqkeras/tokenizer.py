"""Subword vocabulary: SentencePiece, trained on the training text, applied in the TF graph.

The model file is trained once (`train_sentencepiece`) and cached in --data_dir.
`Tokenizer` runs it with tensorflow-text's SentencePiece op, so tokenization
happens inside tf.data with no Python per example, and the exported model can
carry the same op (a SavedModel with it loads with tensorflow and tensorflow_text).

Ids: 0 is padding, 1 end of sentence, 2 unknown; byte fallback spells any
character outside the vocabulary as bytes, so nothing is lost.
"""

import io
import os
import pathlib
import tempfile

import sentencepiece
import tensorflow as tf
import tensorflow_text

from vqkeras import files

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2


def real_lengths(ids):
  """The real (non-PAD) tokens of ids `[..., length]` along the last axis, int32 `[...]`."""
  return tf.reduce_sum(tf.cast(tf.not_equal(ids, PAD_ID), tf.int32), axis=-1)


# No NFKC: it rewrites characters such as the no-break space of real corpora, and
# detokenization must give back the text (runs of spaces are still collapsed). SentencePiece's
# "identity" rule set would do, but its model has an empty character map, and every load of
# it logs "precompiled_charsmap is empty" (also inside a served model). One rule that no text
# meets instead: the noncharacter U+FFFF becomes the replacement character U+FFFD.
NORMALIZATION_RULES = "FFFF\tFFFD\n"


def train_sentencepiece(sentences, vocab_size, path, max_sentences=1_000_000):
  """Trains a unigram SentencePiece model on `sentences` and writes it to `path`.

  Args:
    sentences: an iterable of str, the training text of both languages.
    vocab_size: the number of pieces, shared by source and target.
    path: where to write the model; written atomically, so an interrupted run
      leaves no half-written vocabulary.
    max_sentences: at most this many sentences (sampled) train the model.
  """
  model = io.BytesIO()
  with tempfile.TemporaryDirectory() as scratch:
    rules = pathlib.Path(scratch) / "normalization.tsv"
    rules.write_text(NORMALIZATION_RULES)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, byte_fallback=True,
        normalization_rule_tsv=str(rules),
        pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
        input_sentence_size=max_sentences, shuffle_input_sentence=True,
        hard_vocab_limit=False, num_threads=os.cpu_count() or 1, minloglevel=2)
  with files.atomic_write(path) as partial:
    partial.write_bytes(model.getvalue())


class Tokenizer(tf.Module):
  """Text to ids and back, in the TF graph.

  Args:
    model: the serialized SentencePiece model (bytes) or a path to it.
  """

  def __init__(self, model):
    super().__init__(name="tokenizer")
    if not isinstance(model, bytes):
      model = pathlib.Path(model).read_bytes()
    self.model = model
    self.vocab_size = sentencepiece.SentencePieceProcessor(model_proto=model).vocab_size()

  def _sentencepiece(self):
    # Made inside each traced function, never eagerly: an eager SentencePiece kernel
    # owns its model resource, and anything that clears TensorFlow's eager caches
    # (tf.random.set_seed, which Keras' set_random_seed calls) would delete it from
    # under the next call.
    return tensorflow_text.SentencepieceTokenizer(model=self.model, out_type=tf.int32,
                                                  add_eos=True)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def tokenize(self, text):
    """`[batch]` strings to `[batch, (length)]` int32 ids ending in EOS (a RaggedTensor)."""
    return self._sentencepiece().tokenize(text)

  @tf.function(reduce_retracing=True)
  def detokenize(self, ids):
    """`[batch, length]` ids (padded or ragged) to `[batch]` strings.

    Stops each row at its first EOS and skips padding, so decoder outputs
    detokenize as they are.
    """
    if not isinstance(ids, tf.RaggedTensor):
      ids = tf.convert_to_tensor(ids)
      ended = tf.cumsum(tf.cast(tf.equal(ids, EOS_ID), tf.int32), axis=-1, exclusive=True) > 0
      keep = ~ended & tf.not_equal(ids, EOS_ID) & tf.not_equal(ids, PAD_ID)
      ids = tf.ragged.boolean_mask(ids, keep)
    else:
      ids = tf.ragged.boolean_mask(ids, tf.not_equal(ids, EOS_ID) & tf.not_equal(ids, PAD_ID))
    return self._sentencepiece().detokenize(ids)
