"""latent-GLAT (Bao et al. 2022): a fully parallel translator with one discrete code per
target token (docs/papers.md section 5).

Training reads the source and the target:
  1. a Transformer encoder reads the source; a classifier over the offset of the target
     length from the source length reads its mean (`LengthPredictor`, as GLAT);
  2. each target token's embedding, without its position, is projected, standardized and
     quantized (an EMA codebook of K = 64 by default): one code per token, a word class
     (CNAT, Bao et al. 2021);
  3. the latent predictor, a Transformer decoder without a causal mask attending to the
     source, reads the source embeddings copied uniformly to the target's length and
     predicts every code at once (`CodePredictor`). It learns by glancing: a first pass
     predicts; ceil(ratio x wrong) random positions then read their gold code's
     embedding, and the second pass learns the others;
  4. the decoder reads the same copied embeddings with code vectors mixed in through a
     learned gate (`CodeGate`) and predicts every token at once. Its codes are the
     predictor's first-pass codes, gold only where the predictor glanced (latent-GLAT's
     mixing: codes are a hint it can use, not a crutch); it glances at its tokens too.
Translation: the encoder, the length, one predictor pass, one decoder pass; with
num_candidates = l, the l likeliest lengths decoded in one batch and the best kept.

Each row depends on its own source and length only (masks everywhere, copy positions
per row), so a translation is the same in any batch and under any padding.
"""

from typing import NamedTuple

import keras
import tensorflow as tf

from vqkeras import beam_search
from vqkeras.hparams.translation import LatentGlatHParams
from vqkeras.layers import BatchStandardization
from vqkeras.models.base import register_model, xla_stage
from vqkeras.models.bottleneck import bottleneck_from_hparams
from vqkeras.models.glancing import annealed_ratio, glancing_mask
from vqkeras.models.latent_transformer import end_at_eos, pick_best
from vqkeras.models.transformer import (EncoderDecoder, decoder_stack,
                                        sequence_log_likelihood, smoothed_cross_entropy,
                                        timing_signal)
from vqkeras.tokenizer import EOS_ID, PAD_ID, real_lengths


def uniform_copy_positions(source_lengths, target_lengths, length):
  """The source position each target position reads, `[batch, length]` int32: position t
  of a target of T tokens reads round(t (S - 1) / (T - 1)) of its source of S (GLAT's
  uniform copy; fairseq's `_uniform_assignment`); past T, clipped to S - 1.

  Args:
    source_lengths, target_lengths: `[batch]` int, the real tokens of each row.
    length: the padded target length.
  """
  t = tf.cast(tf.range(length), tf.float32)[None]
  source = tf.cast(source_lengths, tf.float32)[:, None]
  target = tf.cast(target_lengths, tf.float32)[:, None]
  positions = tf.round(t * (source - 1.0) / tf.maximum(target - 1.0, 1.0))
  return tf.cast(tf.clip_by_value(positions, 0.0, source - 1.0), tf.int32)


class LengthPredictor(keras.layers.Layer):
  """p(target length | source): a classifier over the offset T - S in
  [-max_offset, max_offset] reading the mean of the source encoding (GLAT, Qian et al.
  2021; Mask-Predict predicts the length itself).

  Args:
    max_offset: the widest offset told apart; wider ones are clipped.
  """

  def __init__(self, max_offset, **kwargs):
    super().__init__(**kwargs)
    self.max_offset = max_offset
    self.head = keras.layers.Dense(2 * max_offset + 1, name="head")

  def call(self, memory, memory_mask):
    """Logits `[batch, 2 max_offset + 1]` (float32) of the offsets, from the encoder output
    `[batch, S, hidden]` and its mask `[batch, S]`."""
    real = tf.cast(memory_mask, memory.dtype)[:, :, None]
    mean = tf.reduce_sum(memory * real, axis=1) / tf.maximum(tf.reduce_sum(real, axis=1), 1.0)
    return tf.cast(self.head(mean), tf.float32)

  def targets(self, source_lengths, target_lengths):
    """The class `[batch]` of each row's clipped offset."""
    offsets = tf.clip_by_value(target_lengths - source_lengths, -self.max_offset,
                               self.max_offset)
    return offsets + self.max_offset

  def lengths(self, logits, source_lengths, k, max_length):
    """The k likeliest lengths `[batch, k]` in [2, max_length] (a token and EOS: a
    translation is never empty), most likely first, and their log-probabilities
    `[batch, k]`."""
    log_probs, classes = tf.math.top_k(tf.nn.log_softmax(logits), k)
    lengths = source_lengths[:, None] + classes - self.max_offset
    return tf.clip_by_value(lengths, min(2, max_length), max_length), log_probs


class CodePredictor(keras.layers.Layer):
  """p(c_t | source) of every target position at once: a Transformer decoder without a
  causal mask, attending to the source encoding, over the copied source embeddings (or,
  where glancing gives them, the embeddings of the gold codes).

  Args:
    codebook_size: K.
    hparams: Transformer sizes (predictor_layers or num_layers, hidden_size, filter_size,
      num_heads, dropout).
  """

  def __init__(self, codebook_size, hparams, **kwargs):
    super().__init__(**kwargs)
    self.codebook_size = codebook_size
    self.hidden_size = hparams.hidden_size
    self.code_embedding = keras.layers.Embedding(codebook_size, hparams.hidden_size,
                                                 name="code_embedding")
    self.decoder = decoder_stack(hparams, causal=False, name="decoder",
                                 num_layers=hparams.predictor_layers)   # 0: num_layers
    self.head = keras.layers.Dense(codebook_size, name="head")

  def build(self, copied_shape):
    # The code embeddings are read only where glancing gives gold codes (in training); a
    # model built by an evaluation pass must hold them too.
    self.code_embedding.build((None, None))
    self.built = True

  def call(self, copied, mask, memory, memory_mask, gold=None, glanced=None, training=False):
    """Code logits `[batch, T, K]` (float32).

    Args:
      copied: `[batch, T, hidden]` the copied source embeddings, without positions.
      mask: `[batch, T]` bool, True at the target's real positions.
      gold, glanced: `[batch, T]` gold codes and where the input is their embedding.
    """
    x = copied
    if glanced is not None:
      x = tf.where(glanced[:, :, None], tf.cast(self.code_embedding(gold), x.dtype), x)
    x += tf.cast(timing_signal(tf.shape(x)[1], self.hidden_size)[None], x.dtype)
    y = self.decoder(x, mask, memory=memory, memory_mask=memory_mask, training=training)
    return tf.cast(self.head(y), tf.float32)


class CodeGate(keras.layers.Layer):
  """x + g * z with the gate g = sigmoid(W [x; z] + b) `[..., hidden]`: code vectors z
  mixed into the decoder's inputs x as far as the model finds them useful."""

  def __init__(self, hidden_size, **kwargs):
    super().__init__(**kwargs)
    self.gate = keras.layers.Dense(hidden_size, activation="sigmoid", name="gate")

  def call(self, x, z):
    return x + self.gate(tf.concat([x, z], axis=-1)) * z


class LengthPrediction(NamedTuple):
  """`LatentGlat.predict_lengths`: every candidate a row, k rows per sentence."""
  lengths: tf.Tensor       # [batch * k] the candidate lengths
  log_probs: tf.Tensor     # [batch, k] their log-probabilities
  memory: tf.Tensor        # [batch * k, S, hidden] the source encoding, repeated
  memory_mask: tf.Tensor   # [batch * k, S]


class CodePrediction(NamedTuple):
  """`LatentGlat.predict_codes`: every candidate a row, k rows per sentence."""
  codes: tf.Tensor             # [batch * k, T] the predictor's argmax codes
  code_log_probs: tf.Tensor    # [batch * k] their summed log-probabilities
  lengths: tf.Tensor           # [batch * k] the candidate lengths
  length_log_probs: tf.Tensor  # [batch, k] their log-probabilities
  copied: tf.Tensor            # [batch * k, T, hidden] the copied source embeddings
  mask: tf.Tensor              # [batch * k, T] True within each length
  memory: tf.Tensor            # [batch * k, S, hidden] the source encoding, repeated
  memory_mask: tf.Tensor       # [batch * k, S]


@register_model(LatentGlatHParams)
class LatentGlat(EncoderDecoder):
  """Fully parallel translation through a code per target token (module docstring).

  Call: {"inputs": `[batch, S]`, "targets": `[batch, T]`} to token logits `[batch, T,
  vocab]` decoded from the predictor's codes at the target's length (as translation
  decodes them, but at the gold length).
  """

  decodes_candidates = True   # translate: the num_candidates likeliest lengths at once

  def __init__(self, hparams, **kwargs):
    super().__init__(hparams, **kwargs)
    self.length_predictor = LengthPredictor(hparams.max_length_offset, name="length_predictor")
    self.latent_encoder = keras.layers.Dense(hparams.hidden_size, name="latent_encoder")
    # Unit-scale latents over the batch: they cannot all meet on one code.
    self.latent_norm = BatchStandardization(momentum=0.9, name="latent_norm")
    self.quantizer = bottleneck_from_hparams(hparams, hparams.codebook_size,
                                             depth=hparams.hidden_size)
    self.latent_predictor = CodePredictor(hparams.codebook_size, hparams,
                                          name="latent_predictor")
    self.code_gate = CodeGate(hparams.hidden_size, name="code_gate")
    self.decoder = decoder_stack(hparams, causal=False,
                                 num_layers=hparams.decoder_layers)   # 0: num_layers

  def build(self, input_shape=None):
    """Nothing to create here: the sublayers build on the first batch."""
    self.built = True

  def code_layers(self):
    return self.quantizer.code_layers()

  def glancing_ratio(self):
    """glancing_ratio falling linearly to glancing_final_ratio over train_steps (counted
    by the bottleneck's training steps)."""
    hparams = self.hparams
    return annealed_ratio(hparams.glancing_ratio, hparams.glancing_final_ratio,
                          self.quantizer.num_updates, hparams.train_steps)

  # The pieces, in the order of the module docstring.

  def quantize_targets(self, targets, training=False):
    """The code of each target token `[batch, T]` (0 at padding) and its straight-through
    code vector `[batch, T, hidden]`: the token's embedding without its position,
    projected and standardized over the batch's real tokens, through the bottleneck."""
    mask = tf.not_equal(targets, PAD_ID)
    x = self.latent_encoder(self.embedding(targets, positions=False))
    x = self.latent_norm(x, training=training, mask=mask)
    out = self.quantizer(x, training=training, mask=mask, return_codes=True)
    codes = tf.where(mask, tf.cast(out.codes[:, :, 0], tf.int32), 0)
    return codes, out.quantized

  def copy_source(self, inputs, target_lengths, length):
    """The source embeddings (without positions) copied uniformly to each row's target
    length, `[batch, length, hidden]`; 0 past it."""
    source_lengths = real_lengths(inputs)
    positions = uniform_copy_positions(source_lengths, target_lengths, length)
    copied = tf.gather(self.embedding(inputs, positions=False), positions, batch_dims=1)
    in_use = tf.sequence_mask(target_lengths, length)[:, :, None]
    return tf.where(in_use, copied, tf.zeros_like(copied))

  def code_vectors(self, codes):
    """The code vectors `[batch, T, hidden]` the decoder reads for codes `[batch, T]`."""
    return tf.cast(self.quantizer.decode(codes[:, :, None]), self.compute_dtype)

  def decode(self, copied, code_vectors, mask, memory, memory_mask, gold=None, glanced=None,
             training=False):
    """Token logits `[batch, T, vocab]` of every position at once: the copied embeddings
    with the code vectors gated in, or the gold tokens' embeddings where `glanced`."""
    x = self.code_gate(copied, tf.cast(code_vectors, copied.dtype))
    if glanced is not None:
      x = tf.where(glanced[:, :, None], self.embedding(gold, positions=False), x)
    x += tf.cast(timing_signal(tf.shape(x)[1], self.hparams.hidden_size)[None], x.dtype)
    x = self.input_dropout(x, training=training)
    y = self.decoder(x, mask, memory=memory, memory_mask=memory_mask, training=training)
    return self.embedding.logits(y)

  # Training.

  def length_loss(self, inputs, targets, memory, memory_mask):
    """The length classifier's cross-entropy of each row times its target tokens (so it
    weighs per token, as the other terms do), summed; float32."""
    source_lengths = real_lengths(inputs)
    target_lengths = real_lengths(targets)
    logits = self.length_predictor(memory, memory_mask)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        self.length_predictor.targets(source_lengths, target_lengths), logits)
    return tf.reduce_sum(losses * tf.cast(target_lengths, tf.float32))

  def loss_and_weight(self, features, training=False):
    """(token + code + weighted length cross-entropies, target tokens).

    In training both passes glance (module docstring) and each loss is taken on the
    positions not glanced at; in evaluation the decoder reads the predictor's codes,
    as translation gives them, at the gold length.
    """
    inputs, targets = features["inputs"], features["targets"]
    memory, memory_mask = self.encode(inputs, training)
    mask = tf.not_equal(targets, PAD_ID)
    lengths = real_lengths(targets)
    gold_codes, gold_vectors = self.quantize_targets(targets, training)
    copied = self.copy_source(inputs, lengths, tf.shape(targets)[1])
    code_logits = self.latent_predictor(copied, mask, memory, memory_mask, training=training)
    predicted = tf.stop_gradient(tf.argmax(code_logits, axis=-1, output_type=tf.int32))
    code_glanced = token_glanced = None
    vectors = self.code_vectors(predicted)
    if training:
      ratio = self.glancing_ratio()
      code_glanced = glancing_mask(tf.not_equal(predicted, gold_codes), mask, ratio,
                                   tf.random.uniform(tf.shape(predicted)))
      code_logits = self.latent_predictor(copied, mask, memory, memory_mask, gold_codes,
                                          code_glanced, training=training)
      vectors = tf.where(code_glanced[:, :, None], tf.cast(gold_vectors, vectors.dtype),
                         vectors)
      first = self.decode(copied, vectors, mask, memory, memory_mask, training=training)
      first = tf.stop_gradient(tf.argmax(first, axis=-1, output_type=tf.int32))
      token_glanced = glancing_mask(tf.not_equal(first, targets), mask, ratio,
                                    tf.random.uniform(tf.shape(first)))
    logits = self.decode(copied, vectors, mask, memory, memory_mask, targets, token_glanced,
                         training=training)
    if token_glanced is not None:
      targets = tf.where(token_glanced, PAD_ID, targets)   # the loss skips PAD
    token_loss, _ = smoothed_cross_entropy(logits, targets, self.hparams.label_smoothing)
    code_weights = mask if code_glanced is None else mask & ~code_glanced
    code_loss = code_cross_entropy(code_logits, gold_codes, code_weights)
    length_loss = self.length_loss(inputs, features["targets"], memory, memory_mask)
    return (token_loss + code_loss + self.hparams.length_loss_weight * length_loss,
            tf.reduce_sum(tf.cast(mask, tf.float32)))

  def call(self, features, training=False):
    """Token logits `[batch, T, vocab]` from the predictor's codes at the gold length."""
    inputs, targets = features["inputs"], features["targets"]
    memory, memory_mask = self.encode(inputs, training)
    mask = tf.not_equal(targets, PAD_ID)
    lengths = real_lengths(targets)
    copied = self.copy_source(inputs, lengths, tf.shape(targets)[1])
    codes = tf.argmax(self.latent_predictor(copied, mask, memory, memory_mask),
                      axis=-1, output_type=tf.int32)
    return self.decode(copied, self.code_vectors(codes), mask, memory, memory_mask)

  def metric_sums(self, features):
    """Evaluation metrics as (sum, weight), named as the paper's model names them (a latent
    is a token here): the loss; the latent predictor's NLL per target token and the share
    of tokens whose code it ranks first; the share of sentences whose length the classifier
    ranks first; the token NLL decoded from the predictor's codes and from the targets' own
    codes (the reconstruction, the ceiling of a perfect predictor); all at the gold length."""
    inputs, targets = features["inputs"], features["targets"]
    memory, memory_mask = self.encode(inputs)
    mask = tf.not_equal(targets, PAD_ID)
    weights = tf.cast(mask, tf.float32)
    lengths = real_lengths(targets)
    gold_codes, gold_vectors = self.quantize_targets(targets)
    copied = self.copy_source(inputs, lengths, tf.shape(targets)[1])
    code_logits = self.latent_predictor(copied, mask, memory, memory_mask)
    predicted = tf.argmax(code_logits, axis=-1, output_type=tf.int32)
    right_codes = tf.cast(tf.equal(predicted, gold_codes), tf.float32) * weights
    source_lengths = real_lengths(inputs)
    length_classes = tf.argmax(self.length_predictor(memory, memory_mask), axis=-1,
                               output_type=tf.int32)
    right_lengths = tf.equal(length_classes,
                             self.length_predictor.targets(source_lengths, lengths))
    sums = {"loss": self.loss_and_weight(features),
            "latent_accuracy": (tf.reduce_sum(right_codes), tf.reduce_sum(weights)),
            "latent_nll_per_latent": (code_cross_entropy(code_logits, gold_codes, mask),
                                      tf.reduce_sum(weights)),
            "length_accuracy": (tf.reduce_sum(tf.cast(right_lengths, tf.float32)),
                                tf.cast(tf.shape(targets)[0], tf.float32))}
    for name, vectors in (("nll_per_token", self.code_vectors(predicted)),
                          ("reconstruction_nll_per_token", gold_vectors)):
      logits = self.decode(copied, vectors, mask, memory, memory_mask)
      sums[name] = (-tf.reduce_sum(sequence_log_likelihood(logits, targets)),
                    tf.reduce_sum(weights))
    return sums

  # Translation.

  def reconstruct(self, inputs, targets, max_decode_length=None):
    """Target ids decoded from the targets' own codes at their own length, as `translate`
    decodes predicted ones: the translation of a perfect latent and length predictor
    (bench/bench_translation.py reports it beside `translate`'s BLEU)."""
    max_decode_length = max_decode_length or self.hparams.max_length
    memory, memory_mask = self.encode(inputs)
    targets = targets[:, :max_decode_length]
    mask = tf.not_equal(targets, PAD_ID)
    lengths = real_lengths(targets)
    codes, _ = self.quantize_targets(targets)
    copied = self.copy_source(inputs, lengths, tf.shape(targets)[1])
    logits = self.decode(copied, self.code_vectors(codes), mask, memory, memory_mask)
    return self.tokens_of(logits, lengths)

  def translate(self, inputs, beam_size=1, length_penalty=0.0, max_decode_length=None,
                num_candidates=1, scorer=None, candidate_codes="beam", xla_bucket=None):
    """Target ids `[batch, length]` of source ids `[batch, S]`: the length, the codes and
    the tokens, each in one parallel pass.

    Args:
      beam_size: 1 (nothing is searched; `num_candidates` gives candidates).
      length_penalty: alpha of the candidates' score / ((5 + tokens) / 6)^alpha.
      max_decode_length: at most this many tokens (default: max_length).
      num_candidates: l > 1 decodes the l likeliest lengths in one batch and keeps the
        best-scored translation (`translate_candidates`).
      scorer: the candidates' score (`translate_candidates`); None: the model's own.
      candidate_codes: "beam" only: the candidates are lengths.
      xla_bucket: None, or b: both passes compiled by XLA, the decoder's at the longest
        predicted length rounded up to a multiple of b (translate.Search's xla), so that
        one program serves every length of a bucket. The tokens are the same: no position
        reads another row's padding.

    Returns:
      ids ending with EOS, then padding; each row the same whatever else is in the batch.
    """
    self.check_search(beam_size, candidate_codes)
    max_decode_length = max_decode_length or self.hparams.max_length
    ids, scores = self.translate_candidates(inputs, num_candidates, max_decode_length, scorer,
                                            xla_bucket)
    if num_candidates == 1:
      return ids[:, 0]
    return pick_best(ids, scores, length_penalty)

  def check_search(self, beam_size, candidate_codes):
    """latent-GLAT searches nothing: beam_size 1, and its candidates are lengths."""
    if beam_size != 1:
      raise ValueError(f"beam_size={beam_size}: latent-GLAT decodes every token at once and "
                       f"searches nothing; use beam_size=1 and num_candidates=k for its k "
                       f"likeliest lengths.")
    if candidate_codes != "beam":
      raise ValueError(f"candidate_codes={candidate_codes}: latent-GLAT's candidates are its "
                       f"likeliest lengths, it searches no codes; drop candidate_codes.")

  def translate_candidates(self, inputs, num_candidates, max_decode_length, scorer=None,
                           xla_bucket=None):
    """The translations at the num_candidates likeliest lengths, decoded in one batch, and
    their scores.

    Args:
      scorer: None scores a candidate by the model itself, log p(length | source) +
        log p(codes | source) + log p(tokens | codes, source) of its own argmax codes and
        tokens; or a function of (source ids `[batch, S]`, candidate ids `[batch, k, T]`)
        to log-likelihoods `[batch, k]`, e.g. an autoregressive teacher's.
      xla_bucket: as in `translate`.

    Returns:
      (ids `[batch, k, T]`, scores `[batch, k]`).
    """
    lengths = xla_stage(lambda x: self.predict_lengths(x, num_candidates, max_decode_length),
                        xla_bucket)(inputs)
    mask = candidate_mask(lengths.lengths, max_decode_length, xla_bucket)
    return xla_stage(lambda x, lengths, mask: self.decode_candidates(x, lengths, mask, scorer),
                     xla_bucket)(inputs, lengths, mask)

  def decode_candidates(self, inputs, lengths, mask, scorer=None):
    """The codes and tokens of every candidate of `predict_lengths` at the positions of
    `mask` `[batch * k, T]`, and their scores (`translate_candidates`): (ids `[batch, k,
    T]`, scores `[batch, k]`)."""
    p = self.predict_codes_at(inputs, lengths, mask)
    logits = self.decode(p.copied, self.code_vectors(p.codes), p.mask, p.memory, p.memory_mask)
    flat_ids = self.tokens_of(logits, p.lengths)
    batch_size, k = tf.shape(inputs)[0], tf.shape(lengths.log_probs)[1]
    ids = tf.reshape(flat_ids, [batch_size, k, -1])
    if scorer is not None:
      return ids, tf.cast(scorer(inputs, ids), tf.float32)
    own = sequence_log_likelihood(logits, flat_ids) + p.code_log_probs
    return ids, p.length_log_probs + tf.reshape(own, [batch_size, k])

  def predict_lengths(self, inputs, num_candidates, max_decode_length):
    """The encoder and the length classifier: a LengthPrediction of the num_candidates
    likeliest lengths of each sentence, k rows per sentence."""
    memory, memory_mask = self.encode(inputs)
    lengths, log_probs = self.length_predictor.lengths(
        self.length_predictor(memory, memory_mask), real_lengths(inputs), num_candidates,
        max_decode_length)
    memory, memory_mask = beam_search.tile_beams((memory, memory_mask), num_candidates)
    return LengthPrediction(tf.reshape(lengths, [-1]), log_probs, memory, memory_mask)

  def predict_codes_at(self, inputs, lengths, mask):
    """One latent predictor pass over the candidates of `predict_lengths` at the positions
    of `mask` `[batch * k, T]`: a CodePrediction."""
    inputs_k = beam_search.tile_beams(inputs, tf.shape(lengths.log_probs)[1])
    copied = self.copy_source(inputs_k, lengths.lengths, tf.shape(mask)[1])
    code_log_probs = tf.nn.log_softmax(self.latent_predictor(copied, mask, lengths.memory,
                                                             lengths.memory_mask))
    codes = tf.argmax(code_log_probs, axis=-1, output_type=tf.int32)
    best = tf.reduce_sum(tf.reduce_max(code_log_probs, axis=-1) * tf.cast(mask, tf.float32),
                         axis=1)
    return CodePrediction(codes, best, lengths.lengths, lengths.log_probs, copied, mask,
                          lengths.memory, lengths.memory_mask)

  def predict_codes(self, inputs, num_candidates, max_decode_length):
    """What translation does before the decoder (the lengths, then the codes at the
    longest): a CodePrediction whose rows are the batch's candidates, k per sentence."""
    lengths = self.predict_lengths(inputs, num_candidates, max_decode_length)
    return self.predict_codes_at(inputs, lengths,
                                 candidate_mask(lengths.lengths, max_decode_length))

  def tokens_of(self, logits, lengths):
    """The most likely token (PAD ruled out) of every position in `lengths`, EOS at the
    last one, padding after the first EOS: `[batch, T]`."""
    ids = tf.argmax(beam_search.forbid(tf.cast(logits, tf.float32), PAD_ID), axis=-1,
                    output_type=tf.int32)
    last = tf.equal(tf.range(tf.shape(ids)[1])[None], lengths[:, None] - 1)
    return end_at_eos(tf.where(last, EOS_ID, ids), lengths)


def candidate_mask(lengths, max_decode_length, bucket=None):
  """`[batch * k, T]` True within each candidate's length `[batch * k]`; T the longest
  length, or with `bucket` rounded up to a multiple of it (at most max_decode_length)."""
  length = tf.maximum(tf.reduce_max(lengths), 1)   # an empty batch's max is INT_MIN
  if bucket:
    length = tf.minimum(-(-length // bucket) * bucket, max_decode_length)
  return tf.sequence_mask(lengths, length)


def code_cross_entropy(logits, codes, weights):
  """sum of -log softmax(logits `[batch, T, K]`)[codes `[batch, T]`] over the positions
  where `weights` `[batch, T]` (bool or float) hold."""
  losses = tf.nn.sparse_softmax_cross_entropy_with_logits(codes, tf.cast(logits, tf.float32))
  return tf.reduce_sum(losses * tf.cast(weights, tf.float32))
