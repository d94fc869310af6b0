"""The Transformer of Vaswani et al. 2017, pre-norm as in Tensor2Tensor.

Shapes: ids `[batch, length]` int32 with 0 as padding; hidden states
`[batch, length, hidden_size]`.
"""

import math

import keras
import tensorflow as tf

from vqkeras import registry
from vqkeras.tokenizer import PAD_ID


def timing_signal(length, depth):
  """Sinusoidal position encodings `[length, depth]` (T2T's add_timing_signal_1d)."""
  positions = tf.cast(tf.range(length), tf.float32)
  num_timescales = depth // 2
  log_increment = math.log(1.0e4) / max(num_timescales - 1, 1)
  inv_timescales = tf.exp(tf.cast(tf.range(num_timescales), tf.float32) * -log_increment)
  scaled = positions[:, None] * inv_timescales[None, :]
  return tf.concat([tf.sin(scaled), tf.cos(scaled)], axis=1)


class FeedForward(keras.layers.Layer):
  """relu(x W1) W2 with dropout."""

  def __init__(self, hidden_size, filter_size, dropout, **kwargs):
    super().__init__(**kwargs)
    self.hidden_size, self.filter_size, self.dropout = hidden_size, filter_size, dropout
    self.dense_filter = keras.layers.Dense(filter_size, activation="relu")
    self.dense_output = keras.layers.Dense(hidden_size)
    self.dropout_layer = keras.layers.Dropout(dropout)

  def call(self, x, training=False):
    return self.dense_output(self.dropout_layer(self.dense_filter(x), training=training))


class TransformerLayer(keras.layers.Layer):
  """Self-attention, optional attention to a memory, feed-forward; each pre-normed and residual.

  Args:
    hidden_size, filter_size, num_heads, dropout: sizes.
    causal: self-attention sees only earlier positions (a decoder).
    cross_attention: attends to a memory (the encoder output).
  """

  def __init__(self, hidden_size, filter_size, num_heads, dropout, causal=False,
               cross_attention=False, **kwargs):
    super().__init__(**kwargs)
    self.causal = causal
    self.self_attention = keras.layers.MultiHeadAttention(
        num_heads, hidden_size // num_heads, dropout=dropout)
    self.self_attention_norm = keras.layers.LayerNormalization(epsilon=1e-6)
    self.cross_attention = None
    if cross_attention:
      self.cross_attention = keras.layers.MultiHeadAttention(
          num_heads, hidden_size // num_heads, dropout=dropout)
      self.cross_attention_norm = keras.layers.LayerNormalization(epsilon=1e-6)
    self.feed_forward = FeedForward(hidden_size, filter_size, dropout)
    self.feed_forward_norm = keras.layers.LayerNormalization(epsilon=1e-6)
    self.dropout = keras.layers.Dropout(dropout)

  def call(self, x, padding_mask, memory=None, memory_padding_mask=None, training=False):
    """x `[batch, length, hidden]`; masks `[batch, length]` bool, True at real tokens."""
    y = self.self_attention_norm(x)
    attention_mask = padding_mask[:, None, :]
    y = self.self_attention(y, y, attention_mask=attention_mask, use_causal_mask=self.causal,
                            training=training)
    x = x + self.dropout(y, training=training)
    if self.cross_attention is not None:
      y = self.cross_attention_norm(x)
      y = self.cross_attention(y, memory, attention_mask=memory_padding_mask[:, None, :],
                               training=training)
      x = x + self.dropout(y, training=training)
    y = self.feed_forward(self.feed_forward_norm(x), training=training)
    return x + self.dropout(y, training=training)


class TransformerStack(keras.layers.Layer):
  """`num_layers` TransformerLayers and a final layer norm."""

  def __init__(self, num_layers, hidden_size, filter_size, num_heads, dropout, causal=False,
               cross_attention=False, **kwargs):
    super().__init__(**kwargs)
    self.layers_ = [
        TransformerLayer(hidden_size, filter_size, num_heads, dropout, causal=causal,
                         cross_attention=cross_attention, name=f"layer_{i}")
        for i in range(num_layers)]
    self.output_norm = keras.layers.LayerNormalization(epsilon=1e-6)

  def call(self, x, padding_mask, memory=None, memory_padding_mask=None, training=False):
    for layer in self.layers_:
      x = layer(x, padding_mask, memory, memory_padding_mask, training=training)
    return self.output_norm(x)


class SharedEmbedding(keras.layers.Layer):
  """One matrix embeds source and target ids and, transposed, gives the output logits."""

  def __init__(self, vocab_size, hidden_size, **kwargs):
    super().__init__(**kwargs)
    self.vocab_size, self.hidden_size = vocab_size, hidden_size

  def build(self, input_shape=None):
    self.embeddings = self.add_weight(
        name="embeddings", shape=(self.vocab_size, self.hidden_size),
        initializer=keras.initializers.RandomNormal(stddev=self.hidden_size ** -0.5))

  def call(self, ids):
    """ids `[batch, length]` to `[batch, length, hidden]`, scaled by sqrt(hidden), plus positions."""
    x = tf.gather(self.embeddings, ids) * (self.hidden_size ** 0.5)
    return x + timing_signal(tf.shape(ids)[1], self.hidden_size)[None]

  def logits(self, x):
    return tf.matmul(x, self.embeddings, transpose_b=True)


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


@registry.register_model("TransformerHParams")
class Transformer(keras.Model):
  """Encoder-decoder Transformer with shared embeddings.

  Call: {"inputs": `[batch, source length]`, "targets": `[batch, target length]`}
  to logits `[batch, target length, vocab]` predicting each target from the
  source and the earlier targets (teacher forcing).
  """

  def __init__(self, hparams, **kwargs):
    super().__init__(**kwargs)
    self.hparams = hparams
    self.embedding = SharedEmbedding(hparams.vocab_size, hparams.hidden_size, name="embedding")
    sizes = (hparams.num_layers, hparams.hidden_size, hparams.filter_size, hparams.num_heads,
             hparams.dropout)
    self.encoder = TransformerStack(*sizes, name="encoder")
    self.decoder = TransformerStack(*sizes, causal=True, cross_attention=True, name="decoder")
    self.input_dropout = keras.layers.Dropout(hparams.dropout)

  @classmethod
  def from_hparams(cls, hparams):
    return cls(hparams)

  @staticmethod
  def make_optimizer(hparams):
    schedule = TransformerSchedule(hparams.learning_rate, hparams.hidden_size,
                                   hparams.warmup_steps)
    return keras.optimizers.Adam(schedule, beta_1=hparams.adam_beta1, beta_2=hparams.adam_beta2,
                                 epsilon=hparams.adam_epsilon)

  def encode(self, inputs, training=False):
    padding = tf.not_equal(inputs, PAD_ID)
    x = self.input_dropout(self.embedding(inputs), training=training)
    return self.encoder(x, padding, training=training), padding

  def decode(self, decoder_inputs, memory, memory_padding, training=False):
    padding = tf.ones_like(decoder_inputs, tf.bool)   # causal masking covers the rest
    y = self.input_dropout(self.embedding(decoder_inputs), training=training)
    y = self.decoder(y, padding, memory, memory_padding, training=training)
    return self.embedding.logits(y)

  def call(self, features, training=False):
    memory, memory_padding = self.encode(features["inputs"], training)
    return self.decode(shift_right(features["targets"]), memory, memory_padding, training)

  loss_unit = "target_tokens"   # what loss_and_weight's weight counts

  def loss_and_weight(self, features, training=False):
    """(sum of the label-smoothed cross-entropy over target tokens, number of target tokens)."""
    logits = self(features, training=training)
    return smoothed_cross_entropy(logits, features["targets"], self.hparams.label_smoothing)


def smoothed_cross_entropy(logits, targets, label_smoothing):
  """Label-smoothed cross-entropy summed over real (non-padding) target tokens.

  Returns:
    (sum of the losses, number of real tokens), to divide once over the global batch.
  """
  vocab_size = logits.shape[-1]
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab_size - 1)
  soft = tf.one_hot(targets, vocab_size, on_value=confidence, off_value=low)
  losses = tf.nn.softmax_cross_entropy_with_logits(soft, tf.cast(logits, tf.float32))
  # Subtract the entropy of the smoothed target, so that a perfect model scores 0.
  normalizer = -(confidence * math.log(confidence) +
                 (vocab_size - 1) * low * math.log(low + 1e-20))
  weights = tf.cast(tf.not_equal(targets, PAD_ID), tf.float32)
  return tf.reduce_sum((losses - normalizer) * weights), tf.reduce_sum(weights)
