"""The Transformer of Vaswani et al. 2017, pre-norm as in Tensor2Tensor.

Shapes: ids `[batch, length]` int32 with 0 as padding; hidden states
`[batch, length, hidden_size]`. Attention keeps a key/value cache so that
decoding one position costs one position's work (vqkeras.beam_search).
"""

import math

import keras
import tensorflow as tf

from vqkeras import beam_search
from vqkeras.hparams.translation import TransformerHParams
from vqkeras.models.base import TranslationModel, register_model, xla_stage
from vqkeras.tokenizer import EOS_ID, PAD_ID

NEG_INF = -1e9


def timing_signal(length, depth, start=0):
  """Sinusoidal encodings `[length, depth]` of positions start.. (T2T's add_timing_signal_1d)."""
  positions = tf.cast(tf.range(length) + start, tf.float32)
  num_timescales = depth // 2
  log_increment = math.log(1.0e4) / max(num_timescales - 1, 1)
  inv_timescales = tf.exp(tf.cast(tf.range(num_timescales), tf.float32) * -log_increment)
  scaled = positions[:, None] * inv_timescales[None, :]
  return tf.concat([tf.sin(scaled), tf.cos(scaled)], axis=1)


def mask_bias(mask):
  """`[batch, length]` bool, True at real positions, to an additive bias `[batch, 1, 1, length]`."""
  return (1.0 - tf.cast(mask, tf.float32))[:, None, None, :] * NEG_INF


def causal_bias(length):
  """`[1, 1, length, length]`: position i attends to positions <= i."""
  allowed = tf.linalg.band_part(tf.ones([length, length]), -1, 0)
  return ((1.0 - allowed) * NEG_INF)[None, None]


class Attention(keras.layers.Layer):
  """Multi-head dot-product attention with fused projections.

  Self-attention projects queries, keys and values with one matrix; attention
  to a memory projects the memory's keys and values once (`memory_keys_values`),
  which decoding computes once per sentence.

  Args:
    hidden_size: model width; num_heads divides it.
    num_heads: attention heads.
    dropout: on the attention weights.
    self_attention: True: keys and values come from the queries' sequence.
  """

  def __init__(self, hidden_size, num_heads, dropout, self_attention=True, **kwargs):
    super().__init__(**kwargs)
    self.hidden_size, self.num_heads = hidden_size, num_heads
    self.depth = hidden_size // num_heads
    self.is_self_attention = self_attention
    if self_attention:
      self.query_key_value = keras.layers.Dense(3 * hidden_size, use_bias=False,
                                                name="query_key_value")
    else:
      self.query = keras.layers.Dense(hidden_size, use_bias=False, name="query")
      self.key_value = keras.layers.Dense(2 * hidden_size, use_bias=False, name="key_value")
    self.output_transform = keras.layers.Dense(hidden_size, use_bias=False, name="output")
    self.dropout = keras.layers.Dropout(dropout)

  def split_heads(self, x):
    """`[batch, length, hidden]` to `[batch, heads, length, depth]`."""
    shape = tf.shape(x)
    x = tf.reshape(x, [shape[0], shape[1], self.num_heads, self.depth])
    return tf.transpose(x, [0, 2, 1, 3])

  def memory_keys_values(self, memory):
    """Keys and values `[batch, heads, memory length, depth]` of a memory."""
    keys, values = tf.split(self.key_value(memory), 2, axis=-1)
    return self.split_heads(keys), self.split_heads(values)

  def call(self, x, bias=None, memory=None, keys_values=None, cache=None, training=False):
    """Attends from x `[batch, length, hidden]`; returns `[batch, length, hidden]`.

    Args:
      x: the queries' sequence.
      bias: additive, broadcastable to `[batch, heads, length, keys]`, or None.
      memory: `[batch, keys, hidden]` for attention to a memory.
      keys_values: the memory's `memory_keys_values`, instead of `memory`.
      cache: self-attention only: a dict with the "keys" and "values" of the
        earlier positions `[batch, heads, t, depth]`.
      training: dropout.

    Returns:
      the output, and with a cache also the cache extended by x's positions
      (returned, not updated in place: Keras copies the arguments of a call).
    """
    if self.is_self_attention:
      query, keys, values = [self.split_heads(y)
                             for y in tf.split(self.query_key_value(x), 3, axis=-1)]
      if cache is not None:
        keys = tf.concat([cache["keys"], keys], axis=2)
        values = tf.concat([cache["values"], values], axis=2)
    else:
      query = self.split_heads(self.query(x))
      keys, values = keys_values if keys_values is not None else self.memory_keys_values(memory)
    logits = tf.matmul(query * self.depth ** -0.5, keys, transpose_b=True)
    if bias is not None:
      logits += tf.cast(bias, logits.dtype)
    weights = tf.cast(tf.nn.softmax(tf.cast(logits, tf.float32)), values.dtype)
    heads = tf.matmul(self.dropout(weights, training=training), values)
    shape = tf.shape(heads)
    heads = tf.reshape(tf.transpose(heads, [0, 2, 1, 3]), [shape[0], shape[2], self.hidden_size])
    output = self.output_transform(heads)
    return output if cache is None else (output, {"keys": keys, "values": values})

  def empty_cache(self, batch_size):
    """The self-attention cache before the first position."""
    empty = tf.zeros([batch_size, self.num_heads, 0, self.depth], self.compute_dtype)
    return {"keys": empty, "values": empty}


class FeedForward(keras.layers.Layer):
  """relu(x W1) W2 with dropout."""

  def __init__(self, hidden_size, filter_size, dropout, **kwargs):
    super().__init__(**kwargs)
    self.dense_filter = keras.layers.Dense(filter_size, activation="relu")
    self.dense_output = keras.layers.Dense(hidden_size)
    self.dropout_layer = keras.layers.Dropout(dropout)

  def call(self, x, training=False):
    return self.dense_output(self.dropout_layer(self.dense_filter(x), training=training))


class TransformerLayer(keras.layers.Layer):
  """Self-attention, optional attention to a memory, feed-forward; each pre-normed and residual.

  Args:
    hidden_size, filter_size, num_heads, dropout: sizes.
    cross_attention: attends to a memory (the encoder output).
  """

  def __init__(self, hidden_size, filter_size, num_heads, dropout, cross_attention=False,
               **kwargs):
    super().__init__(**kwargs)
    self.self_attention = Attention(hidden_size, num_heads, dropout, name="self_attention")
    self.self_attention_norm = keras.layers.LayerNormalization(epsilon=1e-6)
    self.cross_attention = None
    if cross_attention:
      self.cross_attention = Attention(hidden_size, num_heads, dropout, self_attention=False,
                                       name="cross_attention")
      self.cross_attention_norm = keras.layers.LayerNormalization(epsilon=1e-6)
    self.feed_forward = FeedForward(hidden_size, filter_size, dropout)
    self.feed_forward_norm = keras.layers.LayerNormalization(epsilon=1e-6)
    self.dropout = keras.layers.Dropout(dropout)

  def call(self, x, self_bias, memory=None, memory_bias=None, keys_values=None, cache=None,
           training=False):
    """x `[batch, length, hidden]`; biases as in `Attention`.

    cache: this layer's self-attention cache; with one the call returns
    (output, extended cache).
    """
    y = self.self_attention(self.self_attention_norm(x), self_bias, cache=cache,
                            training=training)
    if cache is not None:
      y, cache = y
    x = x + self.dropout(y, training=training)
    if self.cross_attention is not None:
      y = self.cross_attention(self.cross_attention_norm(x), memory_bias, memory=memory,
                               keys_values=keys_values, training=training)
      x = x + self.dropout(y, training=training)
    y = self.feed_forward(self.feed_forward_norm(x), training=training)
    x = x + self.dropout(y, training=training)
    return x if cache is None else (x, cache)


class TransformerStack(keras.layers.Layer):
  """`num_layers` TransformerLayers and a final layer norm.

  Args:
    num_layers, hidden_size, filter_size, num_heads, dropout: sizes.
    causal: position i sees positions <= i only (a decoder).
    cross_attention: every layer attends to a memory (the encoder output).
  """

  def __init__(self, num_layers, hidden_size, filter_size, num_heads, dropout, causal=False,
               cross_attention=False, **kwargs):
    super().__init__(**kwargs)
    self.causal = causal
    self.layers_ = [
        TransformerLayer(hidden_size, filter_size, num_heads, dropout,
                         cross_attention=cross_attention, name=f"layer_{i}")
        for i in range(num_layers)]
    self.output_norm = keras.layers.LayerNormalization(epsilon=1e-6)

  def call(self, x, mask=None, memory=None, memory_mask=None, keys_values=None,
           cache=None, training=False):
    """x `[batch, length, hidden]` to `[batch, length, hidden]`.

    Args:
      mask: `[batch, length]` bool, True at real positions; None: all real.
      memory, memory_mask: `[batch, keys, hidden]` and its `[batch, keys]` mask.
      keys_values: the memory's keys and values per layer (`memory_keys_values`),
        instead of `memory`.
      cache: incremental decoding (`empty_cache`): x holds the next position
        only, and the call returns (output, extended cache).
    """
    self_bias = None
    if cache is None and self.causal:
      self_bias = causal_bias(tf.shape(x)[1])
    if mask is not None:
      self_bias = mask_bias(mask) + (0.0 if self_bias is None else self_bias)
    memory_bias = None if memory_mask is None else mask_bias(memory_mask)
    new_cache = []
    for i, layer in enumerate(self.layers_):
      x = layer(x, self_bias, memory, memory_bias,
                keys_values=None if keys_values is None else keys_values[i],
                cache=None if cache is None else cache[i], training=training)
      if cache is not None:
        x, layer_cache = x
        new_cache.append(layer_cache)
    x = self.output_norm(x)
    return x if cache is None else (x, new_cache)

  def memory_keys_values(self, memory):
    """Each layer's cross-attention keys and values of `memory` (computed once per
    decoding, not per step)."""
    return [layer.cross_attention.memory_keys_values(memory) for layer in self.layers_]

  def empty_cache(self, batch_size):
    """Each layer's self-attention cache before the first position."""
    return [layer.self_attention.empty_cache(batch_size) for layer in self.layers_]


class SharedEmbedding(keras.layers.Layer):
  """One matrix embeds source and target ids and, transposed, gives the output logits."""

  def __init__(self, vocab_size, hidden_size, **kwargs):
    super().__init__(**kwargs)
    self.vocab_size, self.hidden_size = vocab_size, hidden_size

  def build(self, input_shape=None):
    self.embeddings = self.add_weight(
        name="embeddings", shape=(self.vocab_size, self.hidden_size),
        initializer=keras.initializers.RandomNormal(stddev=self.hidden_size ** -0.5))

  def call(self, ids, start=0, positions=True):
    """ids `[batch, length]` to `[batch, length, hidden]`, scaled by sqrt(hidden), plus positions.

    start: the position of the first id (decoding one position at a time).
    positions: False leaves the positions out (a model that moves the vectors first).
    """
    x = tf.gather(self.embeddings, ids) * (self.hidden_size ** 0.5)
    if not positions:
      return x
    return x + tf.cast(timing_signal(tf.shape(ids)[1], self.hidden_size, start)[None], x.dtype)

  def logits(self, x):
    """`[..., hidden]` to `[..., vocab]` with the transposed embedding matrix.

    One 2-D product over all positions: a batched matmul of `[batch, length, hidden]`
    with the matrix broadcasts it over the batch, and its gradient then holds a
    `[batch, vocab, hidden]` tensor (17.9 GB at the base sizes) before summing it.
    """
    rows = tf.reshape(x, [-1, self.hidden_size])
    logits = tf.matmul(rows, tf.cast(self.embeddings, x.dtype), transpose_b=True)
    return tf.reshape(logits, tf.concat([tf.shape(x)[:-1], [self.vocab_size]], 0))


def shift_right(targets):
  """Decoder inputs: the targets delayed by one position, starting from padding (id 0)."""
  return tf.pad(targets, [[0, 0], [1, 0]], constant_values=PAD_ID)[:, :-1]


class TransformerSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """lr * hidden^-0.5 * min(step^-0.5, step * warmup^-1.5): linear warm-up, then 1/sqrt decay."""

  def __init__(self, learning_rate, hidden_size, warmup_steps):
    self.learning_rate, self.hidden_size, self.warmup_steps = (learning_rate, hidden_size,
                                                               warmup_steps)

  def __call__(self, step):
    step = tf.cast(step, tf.float32) + 1.0
    return (self.learning_rate * self.hidden_size ** -0.5 *
            tf.minimum(tf.math.rsqrt(step), step * self.warmup_steps ** -1.5))

  def get_config(self):
    return {"learning_rate": self.learning_rate, "hidden_size": self.hidden_size,
            "warmup_steps": self.warmup_steps}


def transformer_optimizer(hparams):
  """Adam with the Transformer schedule and the hyper-parameters' betas and epsilon."""
  schedule = TransformerSchedule(hparams.learning_rate, hparams.hidden_size, hparams.warmup_steps)
  return keras.optimizers.Adam(schedule, beta_1=hparams.adam_beta1, beta_2=hparams.adam_beta2,
                               epsilon=hparams.adam_epsilon)


def source_encoder(hparams, name="encoder"):
  """The Transformer encoder stack of a hyper-parameter record."""
  return TransformerStack(hparams.num_layers, hparams.hidden_size, hparams.filter_size,
                          hparams.num_heads, hparams.dropout, name=name)


def decoder_stack(hparams, causal=True, name="decoder", num_layers=None):
  """A Transformer decoder attending to the source encoder's output (num_layers: default
  the hyper-parameters')."""
  return TransformerStack(num_layers or hparams.num_layers, hparams.hidden_size, hparams.filter_size,
                          hparams.num_heads, hparams.dropout, causal=causal,
                          cross_attention=True, name=name)


class EncoderDecoder(TranslationModel):
  """What the translation models share: the shared embedding, the source encoder,
  the Transformer optimizer. Subclasses add their decoders, `loss_and_weight` and
  `translate` (vqkeras.models.base.TranslationModel)."""

  def __init__(self, hparams, **kwargs):
    super().__init__(**kwargs)
    self.hparams = hparams
    self.embedding = SharedEmbedding(hparams.vocab_size, hparams.hidden_size, name="embedding")
    self.encoder = source_encoder(hparams)
    self.input_dropout = keras.layers.Dropout(hparams.dropout)

  @classmethod
  def from_hparams(cls, hparams):
    return cls(hparams)

  @staticmethod
  def make_optimizer(hparams):
    return transformer_optimizer(hparams)

  def encode(self, inputs, training=False):
    """Source ids `[batch, length]` to (encoder output, its `[batch, length]` mask, True at real tokens)."""
    mask = tf.not_equal(inputs, PAD_ID)
    x = self.input_dropout(self.embedding(inputs), training=training)
    return self.encoder(x, mask, training=training), mask


@register_model(TransformerHParams)
class Transformer(EncoderDecoder):
  """Encoder-decoder Transformer with shared embeddings.

  Call: {"inputs": `[batch, source length]`, "targets": `[batch, target length]`}
  to logits `[batch, target length, vocab]` predicting each target from the
  source and the earlier targets (teacher forcing). `translate` decodes.
  """

  scores_candidates = True   # candidate_log_likelihoods: a teacher of the latent model

  def __init__(self, hparams, **kwargs):
    super().__init__(hparams, **kwargs)
    self.decoder = decoder_stack(hparams)

  def decode(self, decoder_inputs, memory, memory_mask, training=False):
    """Token logits `[batch, T, vocab]` of the shifted targets `[batch, T]` given the
    encoded source (teacher forcing)."""
    y = self.input_dropout(self.embedding(decoder_inputs), training=training)
    y = self.decoder(y, memory=memory, memory_mask=memory_mask, training=training)
    return self.embedding.logits(y)

  def call(self, features, training=False):
    memory, memory_mask = self.encode(features["inputs"], training)
    return self.decode(shift_right(features["targets"]), memory, memory_mask, training)

  def loss_and_weight(self, features, training=False):
    """(sum of the label-smoothed cross-entropy over target tokens, number of target tokens)."""
    logits = self(features, training=training)
    return smoothed_cross_entropy(logits, features["targets"], self.hparams.label_smoothing)

  def log_likelihood(self, inputs, targets):
    """log p(targets | inputs) `[batch]`, summed over the real target tokens (EOS included)."""
    return sequence_log_likelihood(self({"inputs": inputs, "targets": targets}), targets)

  def candidate_log_likelihoods(self, inputs, candidates):
    """log p(candidate | inputs) `[batch, k]` of candidates `[batch, k, T]` (ids, padded),
    the source encoded once, all candidates in one teacher-forced pass (a rescorer of
    the latent model's candidates: `LatentTransformer.translate_candidates`)."""
    batch_size, k = tf.shape(candidates)[0], tf.shape(candidates)[1]
    memory, memory_mask = beam_search.tile_beams(self.encode(inputs), k)
    targets = tf.reshape(candidates, [batch_size * k, -1])
    logits = self.decode(shift_right(targets), memory, memory_mask)
    return tf.reshape(sequence_log_likelihood(logits, targets), [batch_size, k])

  def translate(self, inputs, beam_size=1, length_penalty=0.0, max_decode_length=None,
                xla_bucket=None):
    """Target ids `[batch, length]` of source ids `[batch, source length]`.

    Each translation ends with EOS unless it reached max_decode_length
    (default: the hyper-parameters' max_length); padding follows.

    Args:
      beam_size: 1 decodes greedily.
      length_penalty: alpha of the beam score log p / ((5 + length) / 6)^alpha.
      xla_bucket: None, or b: the source encoder compiled by XLA, one program per shape
        (translate.Search's xla pads the sources to multiples of b); the search, token by
        token, stays a graph loop.
    """
    max_decode_length = max_decode_length or self.hparams.max_length
    step, cache = self.decoding_step(inputs, beam_size, xla_bucket)
    batch_size = tf.shape(inputs)[0]
    return beam_search.search(step, cache, batch_size, beam_size, max_decode_length, EOS_ID,
                           length_penalty)

  def decoding_step(self, inputs, beam_size=1, xla_bucket=None):
    """The step function of `vqkeras.beam_search` for source ids, and its empty cache.

    With beam_size > 1 the source is repeated for the beams: the step takes
    `[batch * beam_size]` ids. xla_bucket: as in `translate`.
    """
    memory_mask, keys_values = xla_stage(self.encode_for_steps, xla_bucket)(inputs)
    if beam_size > 1:
      memory_mask, keys_values = beam_search.tile_beams((memory_mask, keys_values), beam_size)

    def step(ids, position, cache):
      """Logits `[batch, vocab]` of the next token after ids `[batch]` at position."""
      x = self.embedding(ids[:, None], start=position)
      y, cache = self.decoder(x, memory_mask=memory_mask, keys_values=keys_values,
                              cache=cache)
      logits = tf.cast(self.embedding.logits(y)[:, 0], tf.float32)
      return beam_search.forbid(logits, PAD_ID), cache

    return step, self.decoder.empty_cache(tf.shape(memory_mask)[0])

  def encode_for_steps(self, inputs):
    """What every decoding step reads of the source ids: its mask `[batch, S]` and each
    decoder layer's cross-attention keys and values (computed once, not per step)."""
    memory, memory_mask = self.encode(inputs)
    return memory_mask, self.decoder.memory_keys_values(memory)


def sequence_log_likelihood(logits, targets):
  """sum_t log softmax(logits)[t, targets_t] `[batch]` over the real (non-PAD) targets;
  logits `[batch, T, vocab]`, targets `[batch, T]`."""
  log_probs = -tf.nn.sparse_softmax_cross_entropy_with_logits(targets, tf.cast(logits, tf.float32))
  return tf.reduce_sum(log_probs * tf.cast(tf.not_equal(targets, PAD_ID), tf.float32), -1)


def smoothed_cross_entropy(logits, targets, label_smoothing):
  """Label-smoothed cross-entropy summed over real (non-padding) target tokens.

  The smoothed target gives the reference token 1 - label_smoothing and every other
  token label_smoothing / (vocab - 1); see `smoothed_token_losses`.

  Returns:
    (sum of the losses, number of real tokens), to divide once over the global batch.
  """
  logits, targets = tf.cast(logits, tf.float32), tf.convert_to_tensor(targets)
  vocab_size = logits.shape[-1]
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab_size - 1)
  losses = smoothed_token_losses(tf.reshape(logits, [-1, vocab_size]),
                                 tf.reshape(targets, [-1]), confidence, low)
  # Subtract the entropy of the smoothed target, so that a perfect model scores 0.
  normalizer = -(confidence * math.log(confidence) +
                 (vocab_size - 1) * low * math.log(low + 1e-20))
  weights = tf.cast(tf.not_equal(tf.reshape(targets, [-1]), PAD_ID), tf.float32)
  return tf.reduce_sum((losses - normalizer) * weights), tf.reduce_sum(weights)


def smoothed_token_losses(logits, targets, confidence, low):
  """Cross-entropy `[tokens]` of softmax(logits `[tokens, vocab]`) against the smoothed
  targets (confidence at `targets` `[tokens]`, low elsewhere).

  It is logsumexp(z) - low * sum_j z_j - (confidence - low) * z_target, and its gradient
  softmax(z) - low - (confidence - low) * onehot(target), written out: the backward
  pass then holds no `[tokens, vocab]` tensor besides the logits and their gradient
  (the one-hot targets and autodiff's intermediates each cost another, 0.5 GB at the
  base sizes).
  """
  @tf.custom_gradient
  def losses(z):
    normalizers = tf.reduce_logsumexp(z, axis=-1)
    picked = tf.gather(z, targets, batch_dims=1)
    value = normalizers - (confidence - low) * picked
    if low:
      value -= low * tf.reduce_sum(z, axis=-1)

    def gradient(upstream):
      probs = tf.exp(z - normalizers[:, None]) - low
      at_targets = tf.stack([tf.range(tf.shape(targets)[0]), targets], axis=1)
      probs = tf.tensor_scatter_nd_sub(probs, at_targets,
                                       tf.fill(tf.shape(targets), confidence - low))
      return probs * upstream[:, None]
    return value, gradient
  return losses(logits)
