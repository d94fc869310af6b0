"""The SentencePiece vocabulary: identity normalization without the empty character map."""

import sentencepiece
from sentencepiece import sentencepiece_model_pb2
import tensorflow as tf
import tensorflow_text

from conftest import multi30k_lines

# Characters that NFKC would rewrite (no-break space, ligature, fullwidth letter, superscript),
# and a run of spaces, which SentencePiece collapses under every rule set.
UNNORMALIZED = ["Ein Mann\u00a0fährt Rad.", "ﬁnf Ｂälle²", "zwei   Hunde"]


def identity_rules_model(model):
  """The same model under SentencePiece's own "identity" rules (the reference)."""
  proto = sentencepiece_model_pb2.ModelProto.FromString(model)
  proto.normalizer_spec.name = "identity"
  proto.normalizer_spec.precompiled_charsmap = b""
  return proto.SerializeToString()


def test_our_rules_tokenize_exactly_as_the_identity_rules(multi30k_tokenizer):
  ours = sentencepiece.SentencePieceProcessor(model_proto=multi30k_tokenizer.model)
  reference = sentencepiece.SentencePieceProcessor(
      model_proto=identity_rules_model(multi30k_tokenizer.model))
  sentences = multi30k_lines("train.en.gz") + multi30k_lines("train.de.gz") + UNNORMALIZED
  assert ours.encode(sentences) == reference.encode(sentences)
  assert ours.decode(ours.encode(UNNORMALIZED[:2])) == UNNORMALIZED[:2]   # nothing rewritten


def _load_in_tensorflow_text(model):
  tokenizer = tensorflow_text.SentencepieceTokenizer(model=model, out_type=tf.int32)
  return tokenizer.tokenize(tf.constant(["Ein Hund."])).numpy()


def test_loading_the_vocabulary_logs_nothing(multi30k_tokenizer, capfd):
  capfd.readouterr()
  _load_in_tensorflow_text(identity_rules_model(multi30k_tokenizer.model))
  # The reference logs the line (from C++, on file descriptor 2): the capture sees it.
  assert "precompiled_charsmap is empty" in capfd.readouterr().err
  _load_in_tensorflow_text(multi30k_tokenizer.model)
  assert "precompiled_charsmap" not in capfd.readouterr().err
