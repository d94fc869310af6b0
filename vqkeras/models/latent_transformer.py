"""The non-autoregressive latent Transformer of Kaiser et al. 2018 with the discrete
bottleneck of Roy et al. 2018 (docs/papers.md section 2).

Training reads the source and the target:
  1. a Transformer encoder reads the source;
  2. the target embeddings, padded to a multiple of 2^n_c, are compressed 2^n_c
     times by residual convolutions and n_c stride-2 convolutions;
  3. the compressed latents pass the discrete bottleneck (`VectorQuantizer`:
     hard EM, soft EM or the VQ-VAE codebook loss; or FSQ on a projection of each
     latent, or the Gumbel-softmax relaxation: hparams `bottleneck`);
  4. the latent predictor, an autoregressive Transformer decoder attending to
     the source, learns the code sequence (soft targets under soft EM) and when
     it ends;
  5. the code embeddings are up-sampled 2^n_c times and a Transformer decoder
     attending to the source gives every target token at once.
Translation runs 1, 4 (the codes, one latent per 2^n_c tokens) and 5.

The latent sequence of a target of T tokens (EOS included) has ceil(T / 2^n_c)
positions; the latent predictor ends it with the STOP symbol, so translations
are as long as the predicted codes need, up to max_length, never truncated to
a length fixed in advance.
"""

import math
from typing import NamedTuple

import keras
import tensorflow as tf

from vqkeras import beam_search
from vqkeras import quantization
from vqkeras.hparams.translation import LatentTransformerHParams
from vqkeras.layers import BatchStandardization
from vqkeras.models.base import register_model, xla_stage
from vqkeras.models.bottleneck import bottleneck_from_hparams
from vqkeras.models.glancing import annealed_ratio, glancing_mask
from vqkeras.models.transformer import (EncoderDecoder, decoder_stack,
                                        sequence_log_likelihood, shift_right,
                                        smoothed_cross_entropy, timing_signal)
from vqkeras.tokenizer import EOS_ID, PAD_ID, real_lengths


class ResidualConv(keras.layers.Layer):
  """x + dropout(convs(layer_norm(x))): three kernel-3 convolutions, each after a ReLU
  (T2T's residual_conv: conv_block with first_relu).

  Each convolution reads 0 at padding positions (`mask` False): a kernel-3 convolution
  reads the next position, and at padding the layer norm gives its beta, so the last
  real positions of a sequence would depend on how far its batch pads it.
  """

  def __init__(self, hidden_size, dropout, kernel_size=3, **kwargs):
    super().__init__(**kwargs)
    self.norm = keras.layers.LayerNormalization(epsilon=1e-6)
    self.convs = [keras.layers.Conv1D(hidden_size, kernel_size, padding="same",
                                      name=f"conv_{i}") for i in range(3)]
    self.dropout = keras.layers.Dropout(dropout)

  def call(self, x, mask, training=False):
    """x `[batch, length, hidden]`; mask `[batch, length]` bool, True at real positions."""
    real = tf.cast(mask, x.dtype)[:, :, None]
    y = self.norm(x)
    for conv in self.convs:
      y = conv(tf.nn.relu(y) * real)
    return x + self.dropout(y, training=training)


class Compress(keras.layers.Layer):
  """`[batch, T, hidden]` to `[batch, T / 2^n_c, hidden]`: residual convolutions, then
  n_c stride-2 convolutions, each after a ReLU, each halving the length.

  As in T2T (conv_block with first_relu), the latents are the last convolution's
  linear output; a ReLU after it would leave half of every latent at 0.

  T must be a multiple of 2^n_c (`pad_to_multiple`). Every convolution reads 0 past
  the real positions of its level (ceil(tokens / 2^k)), so a sequence compresses alike
  in any batch.
  """

  def __init__(self, hidden_size, compression_steps, dropout, **kwargs):
    super().__init__(**kwargs)
    self.residual = [ResidualConv(hidden_size, dropout, name=f"residual_{i}")
                     for i in range(compression_steps)]
    self.halvings = [keras.layers.Conv1D(hidden_size, 2, strides=2, name=f"compress_{i}")
                     for i in range(compression_steps)]

  def call(self, x, tokens, training=False):
    """x `[batch, T, hidden]`; tokens `[batch]`, the real positions of each row."""
    for layer in self.residual:
      x = layer(x, tf.sequence_mask(tokens, tf.shape(x)[1]), training=training)
    for level, halve in enumerate(self.halvings):
      real = tf.sequence_mask(-(-tokens // 2 ** level), tf.shape(x)[1])
      x = halve(tf.nn.relu(x) * tf.cast(real, x.dtype)[:, :, None])
    return x


class Decompress(keras.layers.Layer):
  """`[batch, L, hidden]` to `[batch, L * 2^n_c, hidden]`: n_c times a residual
  convolution, then a 1x1 convolution to twice the width read as twice the length.

  The residual convolutions read 0 past each row's latents (times 2^k at level k).
  """

  def __init__(self, hidden_size, compression_steps, dropout, **kwargs):
    super().__init__(**kwargs)
    self.hidden_size = hidden_size
    self.residual = [ResidualConv(hidden_size, dropout, name=f"residual_{i}")
                     for i in range(compression_steps)]
    self.doublings = [keras.layers.Dense(2 * hidden_size, activation="relu" if i else None,
                                         name=f"decompress_{i}")
                      for i in range(compression_steps)]

  def call(self, x, lengths, training=False):
    """x `[batch, L, hidden]`; lengths `[batch]`, the latents in use of each row."""
    for level, (residual, double) in enumerate(zip(self.residual, self.doublings)):
      x = double(residual(x, tf.sequence_mask(lengths * 2 ** level, tf.shape(x)[1]),
                          training=training))
      x = tf.reshape(x, [tf.shape(x)[0], -1, self.hidden_size])
    return x


class LatentPredictor(keras.layers.Layer):
  """p(codes | source) = prod_l p(c_l | c_<l, source), ended by a STOP symbol.

  A causal Transformer decoder over the code sequence attending to the source
  encoder's output. Symbols: codes 0..K-1, STOP = K (predicted only) and
  START = K + 1 (the first input only).

  Args:
    codebook_size: K.
    hparams: Transformer sizes (predictor_layers or num_layers, hidden_size, filter_size,
      num_heads, dropout).
  """

  def __init__(self, codebook_size, hparams, **kwargs):
    super().__init__(**kwargs)
    self.codebook_size = codebook_size
    self.stop, self.start = codebook_size, codebook_size + 1
    self.supports_masking = True   # the bottleneck's codes carry its mask; nothing to do with it
    self.hidden_size = hparams.hidden_size
    self.symbol_embedding = keras.layers.Embedding(codebook_size + 2, hparams.hidden_size,
                                                   name="symbol_embedding")
    self.decoder = decoder_stack(hparams, name="decoder",
                                 num_layers=hparams.predictor_layers)   # 0: num_layers
    self.head = keras.layers.Dense(codebook_size + 1, name="head")

  def embed(self, symbols, start=0):
    """`[batch, length, m]` symbols to the mean of their embeddings plus positions.

    Under soft EM the input of a position is the mean embedding of its m
    sampled codes, as the decoder's input is their mean code vector.
    """
    x = tf.reduce_mean(self.symbol_embedding(symbols), axis=2)
    return x + tf.cast(timing_signal(tf.shape(symbols)[1], self.hidden_size, start)[None], x.dtype)

  def call(self, samples, memory, memory_mask, training=False):
    """Logits `[batch, L + 1, K + 1]` of every code and of the STOP after the last.

    samples: `[batch, L, m]` int codes (m = 1 for hard codes), teacher forcing.
    """
    start = tf.fill([tf.shape(samples)[0], 1, tf.shape(samples)[2]], self.start)
    x = self.embed(tf.concat([start, samples], axis=1))
    y = self.decoder(x, memory=memory, memory_mask=memory_mask, training=training)
    return self.head(y)

  def loss(self, samples, lengths, memory, memory_mask, training=False):
    """Cross-entropy summed per example `[batch]` of the codes and their STOP.

    samples: `[batch, L, m]`; lengths: `[batch]` latent positions in use (the rest padding).
    Under soft EM the target of a position is the mean of its m one-hots.
    """
    return self.loss_of_logits(self(samples, memory, memory_mask, training=training), samples,
                               lengths)

  def loss_of_logits(self, logits, samples, lengths):
    """`loss` of the logits `[batch, L + 1, K + 1]` the predictor gave the samples."""
    targets, weights = self.targets(samples, lengths)
    return tf.reduce_sum(quantization.sample_cross_entropy(logits, targets) * weights, axis=1)

  def argmax_codes(self, logits):
    """The most likely code `[batch, L]` of every latent (STOP left out) from the
    teacher-forced logits `[batch, L + 1, K + 1]`."""
    return tf.argmax(logits[:, :-1, :self.codebook_size], axis=-1, output_type=tf.int32)

  def targets(self, samples, lengths):
    """The symbols to predict `[batch, L + 1, m]` (the codes, STOP at position `lengths`,
    STOP after) and the weights `[batch, L + 1]` of the positions to predict (1 up to and
    including the STOP)."""
    length = tf.shape(samples)[1]
    in_use = tf.sequence_mask(lengths, length + 1)
    padded = tf.pad(samples, [[0, 0], [0, 1], [0, 0]], constant_values=self.stop)
    targets = tf.where(in_use[:, :, None], padded, self.stop)
    return targets, tf.cast(tf.sequence_mask(lengths + 1, length + 1), tf.float32)

  def predict(self, memory, memory_mask, max_latents, beam_size=1):
    """Codes `[batch, L]` (L <= max_latents) and their lengths `[batch]`; STOP fills the ends."""
    step, cache = self.decoding_step(memory, memory_mask, beam_size)
    codes = beam_search.search(step, cache, tf.shape(memory)[0], beam_size, max_latents, self.stop,
                            start_id=self.start, pad_id=self.stop)
    return codes, self.lengths_of(codes)

  def candidates(self, memory, memory_mask, max_latents, beam_size):
    """The beam_size best code sequences of a beam search, best first: codes
    `[batch, beam_size, L]`, lengths `[batch, beam_size]` and their log-probabilities
    `[batch, beam_size]` (given that each goes on where it does; <= NEG_INF / 2 where
    fewer sequences were found)."""
    step, cache = self.decoding_step(memory, memory_mask, beam_size)
    codes, log_probs = beam_search.beam_hypotheses(step, cache, tf.shape(memory)[0], beam_size,
                                                max_latents, self.stop, start_id=self.start,
                                                pad_id=self.stop)
    return codes, self.lengths_of(codes), log_probs

  def first_code_candidates(self, memory, memory_mask, max_latents, num_candidates):
    """Code sequences that differ in their first code: the num_candidates most likely
    first codes, each sequence finished greedily (`decoding_step`), all in one batch.
    The first step runs once; its cache is repeated for the candidates.

    Returns:
      codes `[batch, k, L]` (best first code first, STOP after each sequence), lengths
      `[batch, k]` and log-probabilities `[batch, k]`, scored as a beam search scores
      them (each code given that the sequence goes on).
    """
    batch_size, k = tf.shape(memory)[0], num_candidates
    step, cache = self.decoding_step(memory, memory_mask)
    log_probs, cache = step(tf.fill([batch_size], self.start), tf.constant(0), cache)
    first_log_probs, first = tf.math.top_k(tf.nn.log_softmax(log_probs), k)   # STOP ruled out
    step, _ = self.decoding_step(memory, memory_mask, beam_size=k)
    rest, rest_log_probs = beam_search.greedy_search(
        step, beam_search.tile_beams(cache, k), batch_size * k, max_latents, self.stop,
        start_id=tf.reshape(first, [-1]), pad_id=self.stop, first_position=1,
        return_scores=True)
    codes = tf.concat([tf.reshape(first, [-1, 1]), rest], axis=1)
    codes = tf.reshape(codes, [batch_size, k, -1])
    return (codes, self.lengths_of(codes),
            first_log_probs + tf.reshape(rest_log_probs, [batch_size, k]))

  def predict_of_lengths(self, memory, memory_mask, lengths):
    """The greedy codes `[batch, max(lengths)]` of code sequences of the given lengths
    `[batch]`: STOP is ruled out before a row's length and is the only choice from it
    on (so STOP fills the ends). The codes translation would search, as many as the
    target has latents: what the parallel decoder learns from in its own stage."""
    step, cache = self.symbol_step(memory, memory_mask)
    return beam_search.greedy_search(stop_at(step, self.stop, lengths), cache,
                                     tf.shape(memory)[0], tf.reduce_max(lengths), self.stop,
                                     start_id=self.start, pad_id=self.stop)

  def decoding_step(self, memory, memory_mask, beam_size=1):
    """The step function of `vqkeras.beam_search` over code symbols, with the end of
    the sequence decided first (`stop_decided_first`), and its empty cache."""
    step, cache = self.symbol_step(memory, memory_mask, beam_size)
    return stop_decided_first(step, self.stop), cache

  def symbol_step(self, memory, memory_mask, beam_size=1):
    """The logits of the next symbol given the previous one (a step function of
    `vqkeras.beam_search`), and its empty cache (the memory repeated for the beams)."""
    batch_size = tf.shape(memory)[0]
    if beam_size > 1:
      memory, memory_mask = beam_search.tile_beams((memory, memory_mask), beam_size)
    keys_values = self.decoder.memory_keys_values(memory)

    def step(symbols, position, cache):
      x = self.embed(symbols[:, None, None], start=position)
      y, cache = self.decoder(x, memory_mask=memory_mask, keys_values=keys_values,
                              cache=cache)
      return tf.cast(self.head(y)[:, 0], tf.float32), cache

    return step, self.decoder.empty_cache(batch_size * beam_size)

  def lengths_of(self, codes):
    """The codes before STOP of each row of `[..., L]` codes."""
    return tf.reduce_sum(tf.cast(tf.not_equal(codes, self.stop), tf.int32), axis=-1)


def stop_decided_first(step, stop):
  """The step with the end of the code sequence decided before the code.

  Codes spread their probability over many values (soft EM draws several per
  latent), so one code is often less likely than STOP even when continuing is
  more likely than stopping: an argmax over all symbols would end nearly every
  sequence after its first code. Here STOP is the only choice when it is more
  likely than all codes together, and is ruled out otherwise (and at position 0:
  every target has a token, hence a latent); the codes then compete among
  themselves. A search scores the codes given that the sequence goes on.
  """
  def wrapped(symbols, position, cache):
    logits, cache = step(symbols, position, cache)
    log_probs = tf.nn.log_softmax(logits)
    stop_now = (log_probs[:, stop] > math.log(0.5)) & (position > 0)
    return log_probs + stop_or_not(stop_now, stop, tf.shape(logits)[-1]), cache
  return wrapped


def stop_at(step, stop, lengths):
  """The step with each row's code sequence ended after exactly `lengths[row]` codes:
  STOP is ruled out before and is the only choice from there on."""
  def wrapped(symbols, position, cache):
    logits, cache = step(symbols, position, cache)
    return (tf.nn.log_softmax(logits) + stop_or_not(position >= lengths, stop,
                                                    tf.shape(logits)[-1]), cache)
  return wrapped


def stop_or_not(stop_now, stop, num_symbols):
  """Added to log-probabilities `[batch, symbols]`: where `stop_now` `[batch]`, every
  symbol but STOP is ruled out; elsewhere STOP is."""
  only_stop = tf.one_hot(stop, num_symbols, on_value=0.0, off_value=beam_search.NEG_INF)
  no_stop = beam_search.forbid(tf.zeros_like(only_stop), stop)
  return tf.where(stop_now[:, None], only_stop[None], no_stop[None])


def pad_to_multiple(ids, multiple):
  """Pads `[batch, T]` ids with PAD to a length that is a multiple of `multiple`."""
  length = tf.shape(ids)[1]
  return tf.pad(ids, [[0, 0], [0, -length % multiple]], constant_values=PAD_ID)


def latent_lengths(targets, compression):
  """ceil(T / 2^n_c) per example `[batch]`, T its real tokens (EOS included)."""
  return -(-real_lengths(targets) // compression)


class QuantizedTargets(NamedTuple):
  """The bottleneck's view of a batch of targets (`LatentTransformer.quantize_targets`)."""
  quantized: tf.Tensor   # [batch, L, hidden], straight-through code vectors
  codes: tf.Tensor       # [batch, L] int32, the nearest codes
  samples: tf.Tensor     # [batch, L, m] int32, the soft-EM draws (else the nearest codes)
  lengths: tf.Tensor     # [batch] latents in use; the rest are padding
  latents: tf.Tensor     # [batch, L, hidden], the compressed targets the bottleneck read


class ForwardPass(NamedTuple):
  """What `LatentTransformer.forward` computes of a training pair."""
  logits: tf.Tensor      # [batch, T, vocab] token logits from the targets' own codes
  targets: QuantizedTargets
  memory: tf.Tensor      # [batch, S, hidden], the source encoder's output
  memory_mask: tf.Tensor  # [batch, S], True at real source tokens


@register_model(LatentTransformerHParams)
class LatentTransformer(EncoderDecoder):
  """Non-autoregressive translation through a discrete latent sequence (module docstring).

  Call: {"inputs": `[batch, source length]`, "targets": `[batch, T]`} to token
  logits `[batch, T, vocab]` decoded from the target's own codes.
  """

  decodes_candidates = True   # translate_candidates: several code sequences in one pass

  def __init__(self, hparams, **kwargs):
    super().__init__(hparams, **kwargs)
    self.compression = 2 ** hparams.compression_steps
    sizes = (hparams.hidden_size, hparams.compression_steps, hparams.dropout)
    self.compress = Compress(*sizes, name="compress")
    # Latents of unit scale: the commitment loss and the EMA otherwise pull latents and
    # codes together towards 0, where distances vanish against the soft-EM temperature
    # and the samples become noise. See `normalize_latents`.
    if hparams.latent_normalization == "batch":
      # Momentum 0.9: early in training the latents drift faster than 0.99 follows.
      self.latent_norm = BatchStandardization(momentum=0.9, name="latent_norm")
    else:
      self.latent_norm = keras.layers.LayerNormalization(center=False, scale=False,
                                                         name="latent_norm")
    self.quantizer = bottleneck_from_hparams(hparams, hparams.codebook_size,
                                             depth=hparams.hidden_size)
    self.latent_predictor = LatentPredictor(hparams.codebook_size, hparams,
                                            name="latent_predictor")
    self.decompress = Decompress(*sizes, name="decompress")
    # Self-attention stays causal, as in T2T: while the schedule feeds gold
    # targets, a position must not see the token it predicts.
    self.decoder = decoder_stack(hparams, num_layers=hparams.decoder_layers)   # 0: num_layers
    self.stage = "joint"   # see training_stage

  def build(self, input_shape=None):
    """Nothing to create here: the sublayers build on the first batch."""
    self.built = True

  def code_layers(self):
    return self.quantizer.code_layers()

  # Training stages (the Trainer enters each in turn).

  def training_stage(self, step, train_steps):
    """"joint", then "latent_predictor" for predictor_only_steps, then "decoder" for the
    last decoder_only_steps of train_steps.

    Trained jointly, the latent predictor chases codes that move with the
    autoencoder, learns them from soft-EM samples and reads averaged sample
    embeddings, while translation feeds it hard codes. In its own stage (as
    VQ-VAE trains its prior on a trained autoencoder) it learns the nearest codes
    of the frozen autoencoder, read as translation reads them. The parallel decoder
    learned from the targets' own codes, while translation gives it the predictor's;
    in the last stage it learns from those (`decoder_loss_and_weight`).
    """
    predictor, decoder = self.hparams.predictor_only_steps, self.hparams.decoder_only_steps
    if predictor + decoder >= train_steps:
      raise ValueError(f"predictor_only_steps={predictor} and decoder_only_steps={decoder} "
                       f"leave no joint training in train_steps={train_steps}; use fewer "
                       f"stage steps or more train_steps.")
    if step >= train_steps - decoder:
      return "decoder"
    return "latent_predictor" if step >= train_steps - decoder - predictor else "joint"

  def enter_training_stage(self, stage):
    """Makes the variables of `stage` (see `training_stage`) the trainable ones."""
    trained = {"joint": None, "latent_predictor": [self.latent_predictor],
               "decoder": [self.decompress, self.decoder]}[stage]
    self.stage = stage
    for layer in self.layers:
      layer.trainable = trained is None or any(layer is part for part in trained)

  def latents(self, targets, training=False):
    """The compressed target `[batch, ceil(T / 2^n_c), hidden]` and its lengths `[batch]`."""
    targets = pad_to_multiple(targets, self.compression)
    real = tf.cast(tf.not_equal(targets, PAD_ID), self.compute_dtype)[:, :, None]
    x = self.input_dropout(self.embedding(targets), training=training) * real
    lengths = latent_lengths(targets, self.compression)
    latents = self.compress(x, real_lengths(targets), training=training)
    return self.normalize_latents(latents, lengths, training), lengths

  def normalize_latents(self, latents, lengths, training=False):
    """Latents of unit scale, per feature over the batch ("batch") or per latent ("layer").

    Per latent, a direction shared by all latents survives: the commitment loss is
    smallest when every latent sits on one code, and a decoder that can translate
    from the source alone does not oppose it. Over the batch, each feature has mean 0
    and variance 1 across the real latents, so they cannot meet in one point;
    evaluation uses the moving statistics.
    """
    if self.hparams.latent_normalization == "batch":
      mask = tf.sequence_mask(lengths, tf.shape(latents)[1])
      return self.latent_norm(latents, training=training, mask=mask)
    return self.latent_norm(latents)

  def quantize_targets(self, targets, training=False):
    """The targets' latents through the bottleneck: a QuantizedTargets."""
    latents, lengths = self.latents(targets, training)
    mask = tf.sequence_mask(lengths, tf.shape(latents)[1])
    out = self.quantizer(latents, training=training, mask=mask, return_codes=True)
    # One code per latent (the quantizer is built with num_blocks=1): the block axis of
    # the codes and samples goes.
    return QuantizedTargets(out.quantized, out.codes[:, :, 0], out.samples[:, :, 0], lengths,
                            latents)

  def decode_latents(self, quantized, lengths, memory, memory_mask, gold_targets=None,
                     gold_fraction=0.0, training=False):
    """Token logits `[batch, L * 2^n_c, vocab]` of all positions at once.

    The padding latents (from `lengths` `[batch]` on) are read as 0, in training as in
    decoding: they lie outside the batch's moments and drift far from the real latents,
    and read by the decompression's convolutions their large values spike the
    gradients of the compression network.

    During the schedule's start a random `gold_fraction` of the positions reads
    the previous gold token (teacher forcing) instead of the up-sampled latents.
    """
    in_use = tf.sequence_mask(lengths, tf.shape(quantized)[1])[:, :, None]
    quantized = tf.where(in_use, quantized, tf.zeros_like(quantized))
    d = self.decompress(quantized, lengths, training=training)
    d += tf.cast(timing_signal(tf.shape(d)[1], self.hparams.hidden_size)[None], d.dtype)
    if gold_targets is not None:
      gold = self.embedding(shift_right(pad_to_multiple(gold_targets, self.compression)))
      pick_gold = tf.random.uniform(tf.shape(d)[:2]) < gold_fraction
      d = tf.where(pick_gold[:, :, None], gold, d)
    y = self.decoder(self.input_dropout(d, training=training), memory=memory,
                     memory_mask=memory_mask, training=training)
    return self.embedding.logits(y)

  def glanced(self, targets, code_logits, ratio):
    """The decoder's input latents when it learns to survive wrong codes: the latent
    predictor's own argmax codes (from its teacher-forced `code_logits`), with
    ceil(ratio x wrong) random latents reset to the targets' straight-through code
    vectors (`glancing_mask`); only those carry the decoder's gradient to the
    autoencoder. `[batch, L, hidden]`."""
    predicted = self.latent_predictor.argmax_codes(code_logits)
    in_use = tf.sequence_mask(targets.lengths, tf.shape(predicted)[1])
    reset = glancing_mask(tf.not_equal(predicted, targets.codes), in_use, ratio,
                          tf.random.uniform(tf.shape(predicted)))
    predicted_vectors = tf.cast(self.quantizer.decode(predicted[:, :, None]),
                                targets.quantized.dtype)
    return tf.where(reset[:, :, None], targets.quantized, predicted_vectors)

  def predictability_loss(self, targets, code_logits):
    """The latent predictor's cross-entropy of each target's code posterior, summed per
    example `[batch]`: -sum_l sum_k q(k | z_l) log p(k | source, codes before), with
    q(k | z) = softmax(-||z - e_k||^2 / temperature) differentiable in the latents z and
    the predictor's log-probabilities (over the codes, given that the sequence goes on)
    held fixed. Its gradient moves the compression network's latents toward codes the
    predictor finds likely (the paper and Tensor2Tensor stop every predictor gradient at
    the codes; LaNMT's KL term to the prior is the precedent)."""
    latents = tf.cast(targets.latents, tf.float32)
    codebook = tf.convert_to_tensor(self.quantizer.codebook)[None]   # [1, K, hidden]
    scores = quantization.code_scores(tf.reshape(latents, [1, -1, latents.shape[-1]]),
                                      quantization.score_terms(codebook))[0]
    posterior = tf.nn.softmax(tf.reshape(scores, tf.concat([tf.shape(latents)[:2], [-1]], 0))
                              / self.hparams.temperature)
    log_p = tf.nn.log_softmax(tf.stop_gradient(
        tf.cast(code_logits[:, :-1, :self.latent_predictor.codebook_size], tf.float32)))
    in_use = tf.cast(tf.sequence_mask(targets.lengths, tf.shape(latents)[1]), tf.float32)
    return -tf.reduce_sum(tf.reduce_sum(posterior * log_p, axis=-1) * in_use, axis=1)

  def glancing_ratio(self):
    """glancing_ratio falling linearly to glancing_final_ratio over the joint training
    steps (counted by the bottleneck's training steps)."""
    hparams = self.hparams
    joint_steps = hparams.train_steps - hparams.predictor_only_steps - hparams.decoder_only_steps
    return annealed_ratio(hparams.glancing_ratio, hparams.glancing_final_ratio,
                          self.quantizer.num_updates, joint_steps)

  def gold_fraction(self):
    """The share of decoder inputs taken from the gold targets: 1 falling linearly to 0
    over mask_startup_steps (counted by the bottleneck's training steps)."""
    steps = tf.cast(self.quantizer.num_updates, tf.float32)
    return tf.maximum(0.0, 1.0 - steps / max(self.hparams.mask_startup_steps, 1))

  def forward(self, features, training=False):
    """The token logits of a training pair from its own codes, and what led to them: a
    ForwardPass."""
    memory, memory_mask = self.encode(features["inputs"], training)
    targets = self.quantize_targets(features["targets"], training)
    logits = self.decode_targets(targets.quantized, targets.lengths, memory, memory_mask,
                                 features["targets"], training)
    return ForwardPass(logits, targets, memory, memory_mask)

  def decode_targets(self, quantized, lengths, memory, memory_mask, targets, training=False):
    """Token logits `[batch, T, vocab]` of training targets `[batch, T]` decoded from the
    latents `quantized` (in training, with the schedule's gold tokens)."""
    gold_fraction = self.gold_fraction() if training else 0.0
    logits = self.decode_latents(quantized, lengths, memory, memory_mask, targets,
                                 gold_fraction, training)
    return logits[:, :tf.shape(targets)[1]]

  def call(self, features, training=False):
    return self.forward(features, training).logits

  def loss_and_weight(self, features, training=False):
    """(token cross-entropy + latent predictor cross-entropy, target tokens).

    The latent predictor's loss is switched on after mask_startup_steps. It is
    a sum over latents; times 2^n_c it weighs as a mean per latent would
    beside the token mean (T2T adds the two means).
    """
    if training and self.stage == "latent_predictor":
      return self.predictor_loss_and_weight(features)
    if training and self.stage == "decoder":
      return self.decoder_loss_and_weight(features)
    memory, memory_mask = self.encode(features["inputs"], training)
    targets = self.quantize_targets(features["targets"], training)
    code_logits = self.latent_predictor(targets.samples, memory, memory_mask, training=training)
    quantized = targets.quantized
    if training and self.hparams.glancing_ratio > 0:
      quantized = self.glanced(targets, code_logits, self.glancing_ratio())
    logits = self.decode_targets(quantized, targets.lengths, memory, memory_mask,
                                 features["targets"], training)
    token_loss, tokens = smoothed_cross_entropy(logits, features["targets"],
                                                self.hparams.label_smoothing)
    latent_loss = self.latent_predictor.loss_of_logits(code_logits, targets.samples,
                                                       targets.lengths)
    if training and self.hparams.predictor_gradient_weight > 0:
      latent_loss += self.hparams.predictor_gradient_weight * self.predictability_loss(
          targets, code_logits)
    switched_on = tf.cast(self.quantizer.num_updates > self.hparams.mask_startup_steps,
                          tf.float32) if training else 1.0
    return token_loss + switched_on * self.compression * tf.reduce_sum(latent_loss), tokens

  def predictor_loss_and_weight(self, features):
    """(latent predictor cross-entropy of the nearest codes, target tokens), weighed as
    in the joint loss; the source encoder and the autoencoder run in inference mode."""
    memory, memory_mask = self.encode(features["inputs"])
    targets = self.quantize_targets(features["targets"])
    latent_loss = self.latent_predictor.loss(targets.codes[:, :, None], targets.lengths, memory,
                                             memory_mask, training=True)
    tokens = tf.reduce_sum(tf.cast(tf.not_equal(features["targets"], PAD_ID), tf.float32))
    return self.compression * tf.reduce_sum(latent_loss), tokens

  def decoder_loss_and_weight(self, features):
    """(token cross-entropy decoded from the latent predictor's codes, target tokens):
    the parallel decoder and the decompression learn to translate from the greedy codes
    the predictor gives translation, as many as the target has latents; the source
    encoder, the predictor and the codebook are frozen."""
    targets = features["targets"]
    memory, memory_mask = self.encode(features["inputs"])
    lengths = latent_lengths(targets, self.compression)
    codes = self.latent_predictor.predict_of_lengths(memory, memory_mask, lengths)
    latents = tf.shape(pad_to_multiple(targets, self.compression))[1] // self.compression
    codes = tf.pad(codes, [[0, 0], [0, latents - tf.shape(codes)[1]]])
    logits = self.code_logits(tf.stop_gradient(codes), lengths, memory, memory_mask,
                              training=True)
    return smoothed_cross_entropy(logits[:, :tf.shape(targets)[1]], targets,
                                  self.hparams.label_smoothing)

  def metric_sums(self, features):
    """Evaluation metrics as (sum, weight): token NLL given the target's own codes
    (the reconstruction); the latent predictor's NLL per latent and the share of latents
    whose nearest code (or STOP) it ranks first, given the codes before (teacher forcing)."""
    forward = self.forward(features)
    targets = features["targets"]
    weights = tf.cast(tf.not_equal(targets, PAD_ID), tf.float32)
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(targets,
                                                         tf.cast(forward.logits, tf.float32))
    codes = forward.targets.codes[:, :, None]   # m = 1: the nearest codes
    code_logits = tf.cast(self.latent_predictor(codes, forward.memory, forward.memory_mask),
                          tf.float32)
    code_targets, latent_weights = self.latent_predictor.targets(codes, forward.targets.lengths)
    latent_nll = quantization.sample_cross_entropy(code_logits, code_targets) * latent_weights
    right = tf.equal(tf.argmax(code_logits, -1, output_type=tf.int32), code_targets[:, :, 0])
    latents = tf.reduce_sum(latent_weights)   # + the STOP of each
    return {"reconstruction_nll_per_token": (tf.reduce_sum(nll * weights),
                                             tf.reduce_sum(weights)),
            "latent_nll_per_latent": (tf.reduce_sum(latent_nll), latents),
            "latent_accuracy": (tf.reduce_sum(tf.cast(right, tf.float32) * latent_weights),
                                latents)}

  def translate(self, inputs, beam_size=1, length_penalty=0.0, max_decode_length=None,
                num_candidates=1, scorer=None, candidate_codes="beam", xla_bucket=None):
    """Target ids `[batch, length]` of source ids: the codes one by one, the tokens at once.

    Args:
      beam_size: of the search over codes (latent_beam_size); 1 is greedy.
      length_penalty: alpha of the candidates' score / ((5 + tokens) / 6)^alpha (the
        code sequence itself is searched by log-probability).
      max_decode_length: at most this many tokens (default: max_length).
      num_candidates: k > 1 decodes the k best code sequences of a latent beam of
        max(beam_size, k), all in one batch, and keeps the best-scored translation
        (noisy parallel decoding, Gu et al. 2018; `translate_candidates`).
      scorer: the score of the candidates (`translate_candidates`); None: the model's own.
      candidate_codes: how the candidates' codes are searched (`translate_candidates`).
      xla_bucket: None, or b: the source encoder and the parallel decoder compiled by XLA,
        one program per shape (translate.Search's xla pads the sources to multiples of b;
        the decoder's shape is the longest code sequence's, 2^n_c tokens per code); the
        code search between them stays a graph loop. The tokens are the same.

    Returns:
      ids ending with EOS (unless they reached max_decode_length), then padding.
    """
    max_decode_length = max_decode_length or self.hparams.max_length
    if num_candidates > 1:
      ids, scores = self.translate_candidates(inputs, max(beam_size, num_candidates),
                                              num_candidates, max_decode_length, scorer,
                                              candidate_codes, xla_bucket)
      return pick_best(ids, scores, length_penalty)
    codes, lengths, memory, memory_mask = self.predict_codes(inputs, beam_size,
                                                                max_decode_length, xla_bucket)
    decode = lambda *p: self.decode_codes(*p, max_decode_length)  # pylint: disable=unnecessary-lambda-assignment
    return xla_stage(decode, xla_bucket)(codes, lengths, memory, memory_mask)

  def translate_candidates(self, inputs, beam_size, num_candidates, max_decode_length,
                           scorer=None, candidate_codes="beam", xla_bucket=None):
    """The translations of num_candidates code sequences, decoded in one batch, and their
    scores.

    Args:
      candidate_codes: "beam", the num_candidates best code sequences of a latent beam
        search of beam_size; "first_code", the num_candidates most likely first codes,
        each sequence finished greedily (`LatentPredictor.first_code_candidates`): a
        greedy search of k rows instead of a beam.
      scorer: None scores a candidate by the model itself, log p(codes | source) +
        log p(tokens | codes, source) of the decoder's own tokens; or a function of
        (source ids `[batch, S]`, candidate ids `[batch, k, T]`) to log-likelihoods
        `[batch, k]`, e.g. an autoregressive teacher's (`Transformer.candidate_log_likelihoods`).
      xla_bucket: as in `translate`: the encoder and the decoding of the candidates (with
        their scores) compiled by XLA.

    Returns:
      (ids `[batch, k, T]` as `translate` gives them, scores `[batch, k]`: -inf for a
      candidate the beam did not find).
    """
    memory, memory_mask, max_latents = self.encode_for_codes(inputs, max_decode_length,
                                                             xla_bucket)
    if candidate_codes == "first_code":
      codes, lengths, code_log_probs = self.latent_predictor.first_code_candidates(
          memory, memory_mask, max_latents, num_candidates)
    else:
      codes, lengths, code_log_probs = self.latent_predictor.candidates(
          memory, memory_mask, max_latents, beam_size)
      codes, lengths = codes[:, :num_candidates], lengths[:, :num_candidates]
      code_log_probs = code_log_probs[:, :num_candidates]
    decode = lambda *p: self.decode_candidates(*p, max_decode_length, scorer)  # pylint: disable=unnecessary-lambda-assignment
    return xla_stage(decode, xla_bucket)(inputs, codes, lengths, code_log_probs, memory,
                                         memory_mask)

  def decode_candidates(self, inputs, codes, lengths, code_log_probs, memory, memory_mask,
                        max_decode_length, scorer=None):
    """The parallel half of `translate_candidates`: the tokens of codes `[batch, k, L]`
    (`lengths` `[batch, k]`, their log-probabilities `code_log_probs`) in one batch, and
    their scores: (ids `[batch, k, T]`, scores `[batch, k]`)."""
    batch_size, num_candidates, latents = tf.unstack(tf.shape(codes))
    lengths = tf.reshape(lengths, [-1])
    memory, memory_mask = beam_search.tile_beams((memory, memory_mask), num_candidates)
    logits = self.code_logits(tf.reshape(codes, [-1, latents]), lengths, memory, memory_mask)
    flat_ids = self.tokens_of(logits, lengths, max_decode_length)
    ids = tf.reshape(flat_ids, [batch_size, num_candidates, -1])
    if scorer is None:
      own = sequence_log_likelihood(logits[:, :tf.shape(flat_ids)[1]], flat_ids)
      scores = code_log_probs + tf.reshape(own, [batch_size, num_candidates])
    else:
      scores = tf.cast(scorer(inputs, ids), tf.float32)
    return ids, tf.where(code_log_probs > beam_search.NEG_INF / 2, scores, -float("inf"))

  def predict_codes(self, inputs, beam_size, max_decode_length, xla_bucket=None):
    """The sequential half of `translate`: encodes the source (compiled by XLA under
    `xla_bucket`) and searches the codes.

    Returns:
      (codes `[batch, latents]`, lengths `[batch]` before STOP, memory, memory_mask).
    """
    memory, memory_mask, max_latents = self.encode_for_codes(inputs, max_decode_length,
                                                             xla_bucket)
    codes, lengths = self.latent_predictor.predict(memory, memory_mask, max_latents,
                                                   beam_size)
    return codes, lengths, memory, memory_mask

  def encode_for_codes(self, inputs, max_decode_length, xla_bucket=None):
    """What a search of codes starts from: the encoded source (compiled by XLA under
    `xla_bucket`), its mask and the most codes max_decode_length tokens take."""
    memory, memory_mask = xla_stage(self.encode, xla_bucket)(inputs)
    return memory, memory_mask, -(-max_decode_length // self.compression)

  def reconstruct(self, inputs, targets, max_decode_length=None):
    """Target ids decoded from the targets' own (nearest) codes, as `translate` decodes
    predicted ones: the translation of a perfect latent predictor, the ceiling of
    `translate`'s BLEU (bench/bench_translation.py reports both)."""
    max_decode_length = max_decode_length or self.hparams.max_length
    memory, memory_mask = self.encode(inputs)
    quantized = self.quantize_targets(targets)
    return self.decode_codes(quantized.codes, quantized.lengths, memory, memory_mask,
                             max_decode_length)

  def decode_codes(self, codes, lengths, memory, memory_mask, max_decode_length):
    """The parallel half of `translate`: every target token of the codes at once."""
    logits = self.code_logits(codes, lengths, memory, memory_mask)
    return self.tokens_of(logits, lengths, max_decode_length)

  def code_logits(self, codes, lengths, memory, memory_mask, training=False):
    """Token logits `[batch, L * 2^n_c, vocab]` of codes `[batch, L]` (`lengths` in use)."""
    in_use = tf.sequence_mask(lengths, tf.shape(codes)[1])
    quantized = self.quantizer.decode(tf.where(in_use, codes, 0)[:, :, None])
    return self.decode_latents(quantized, lengths, memory, memory_mask, training=training)

  def tokens_of(self, logits, lengths, max_decode_length):
    """The most likely token of every position, up to the first EOS, at most
    2^n_c tokens per latent in use and max_decode_length; padding after."""
    ids = tf.argmax(beam_search.forbid(tf.cast(logits, tf.float32), PAD_ID), axis=-1,
                    output_type=tf.int32)
    ids = end_at_eos(ids, tf.minimum(lengths * self.compression, max_decode_length))
    return ids[:, :max_decode_length]


def pick_best(ids, scores, length_penalty=0.0):
  """The best candidate of each row: ids `[batch, k, T]` by scores `[batch, k]` over
  ((5 + tokens) / 6)^length_penalty; `[batch, T]`."""
  penalty = beam_search.length_penalty(real_lengths(ids), length_penalty)
  best = tf.argmax(scores / penalty, axis=1, output_type=tf.int32)
  return tf.gather(ids, best, batch_dims=1)


def end_at_eos(ids, lengths):
  """Keeps each row of `[batch, T]` ids up to its first EOS and at most `lengths` tokens;
  padding after."""
  positions = tf.range(tf.shape(ids)[1])[None]
  is_eos = tf.equal(ids, EOS_ID)
  first_eos = tf.reduce_min(tf.where(is_eos, positions, tf.shape(ids)[1]), axis=1)
  keep = (positions <= first_eos[:, None]) & (positions < lengths[:, None])
  return tf.where(keep, ids, PAD_ID)
