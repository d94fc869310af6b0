"""A prior over a grid of codes: a causal Transformer in raster order.

The codes of an image, `[batch, H, W, B]` (B codebooks per position), are read as
one sequence of H*W*B tokens: row by row, and the B codes of a position in turn.
Token t is predicted from the tokens before it; the input at t is the previous
token plus learned embeddings of the row, column and block of token t itself,
so the network knows which codebook it predicts (2-D position embeddings).
"""

import keras
import tensorflow as tf

from vqkeras import decoding
from vqkeras import quantization
from vqkeras.models.transformer import TransformerStack


class LatentPrior(keras.layers.Layer):
  """p(z) = prod_t p(z_t | z_<t) over a `[H, W, B]` code grid.

  Args:
    codebook_size: K codes per block.
    num_blocks: B codebooks per position.
    num_layers, hidden_size, filter_size, num_heads, dropout: Transformer sizes.

  Call: codes int `[batch, H, W, B]` to logits `[batch, H, W, B, K]`, each the
  distribution of that code given the codes before it.
  """

  def __init__(self, codebook_size, num_blocks, num_layers, hidden_size, filter_size,
               num_heads, dropout=0.0, **kwargs):
    super().__init__(**kwargs)
    self.codebook_size, self.num_blocks = codebook_size, num_blocks
    self.hidden_size = hidden_size
    # Token ids: b * K + code, and one start token.
    self.token_embedding = keras.layers.Embedding(num_blocks * codebook_size + 1, hidden_size)
    self.block_embedding = keras.layers.Embedding(num_blocks, hidden_size)
    self.stack = TransformerStack(num_layers, hidden_size, filter_size, num_heads, dropout,
                                  causal=True, name="transformer")
    self.head = keras.layers.Dense(codebook_size)

  def build(self, codes_shape):
    _, height, width, _ = codes_shape
    self.height, self.width = height, width
    self.row_embedding = self.add_weight(
        name="row_embedding", shape=(height, self.hidden_size), initializer="random_normal")
    self.column_embedding = self.add_weight(
        name="column_embedding", shape=(width, self.hidden_size), initializer="random_normal")

  def _positions(self):
    """Embeddings of the row, column and block of every token, `[H*W*B, hidden]`."""
    rows = tf.reshape(self.row_embedding, [self.height, 1, 1, -1])
    columns = tf.reshape(self.column_embedding, [1, self.width, 1, -1])
    blocks = tf.reshape(self.block_embedding(tf.range(self.num_blocks)),
                        [1, 1, self.num_blocks, -1])
    return tf.reshape(rows + columns + blocks, [-1, self.hidden_size])

  def _tokens(self, codes):
    """`[batch, H, W, B]` codes to `[batch, H*W*B]` token ids."""
    offsets = tf.range(self.num_blocks, dtype=codes.dtype) * self.codebook_size
    return tf.reshape(codes + offsets, [tf.shape(codes)[0], -1])

  def _logits(self, tokens, training):
    """Next-token logits `[batch, L, K]` from `[batch, L]` tokens (shifted in from the start)."""
    start = tf.fill([tf.shape(tokens)[0], 1], self.num_blocks * self.codebook_size)
    inputs = tf.concat([start, tokens[:, :-1]], axis=1)
    x = self.token_embedding(inputs) + self._positions()[None]
    return self.head(self.stack(x, training=training))

  def call(self, codes, training=False):
    codes = tf.cast(codes, tf.int32)
    logits = self._logits(self._tokens(codes), training)
    return tf.reshape(logits, tf.concat([tf.shape(codes), [self.codebook_size]], 0))

  def negative_log_likelihood(self, codes, samples=None, training=False):
    """Sum over the grid of -log p(z) in nats, `[batch]`.

    Args:
      codes: `[batch, H, W, B]` the codes the prior is conditioned on (teacher forcing).
      samples: `[batch, H, W, B, m]` targets; under soft EM the m draws (a soft
        target, PAPERS.md section 2); None: the codes themselves.
      training: dropout.
    """
    logits = self(codes, training=training)
    targets = tf.cast(codes, tf.int32)[..., None] if samples is None else samples
    nll = quantization.sample_cross_entropy(logits, targets)
    return tf.reduce_sum(nll, axis=[1, 2, 3])

  def sample(self, num_samples, temperature=1.0, seed=(0, 0)):
    """Draws `[num_samples, H, W, B]` code grids, one token at a time.

    Each step runs one position through the Transformer, attending to the keys and
    values of the earlier positions kept in a cache (H*W*B steps, each of one
    position's work, instead of the whole prefix again). Token t is drawn with the
    seed folded with t (stateless: the same seed gives the same grids).
    """
    length = self.height * self.width * self.num_blocks
    seed = tf.convert_to_tensor(seed, tf.int32)
    positions = self._positions()

    def draw(t, previous, cache, tokens):
      x = self.token_embedding(previous[:, None]) + positions[t][None, None]
      y, cache = self.stack(x, cache=cache)
      logits = tf.cast(self.head(y)[:, 0], tf.float32) / temperature
      codes = tf.random.stateless_categorical(
          logits, 1, tf.random.experimental.stateless_fold_in(seed, t), dtype=tf.int32)[:, 0]
      token = codes + (t % self.num_blocks) * self.codebook_size
      return t + 1, token, cache, tokens.write(t, token)

    start = tf.fill([num_samples], self.num_blocks * self.codebook_size)
    cache = self.stack.empty_cache(num_samples)
    invariants = (tf.TensorShape([]), tf.TensorShape([None]),
                  tf.nest.map_structure(decoding.open_shape, cache), tf.TensorShape(None))
    _, _, _, tokens = tf.while_loop(
        lambda t, *_: t < length, draw,
        (tf.constant(0), start, cache, tf.TensorArray(tf.int32, size=length)),
        shape_invariants=invariants)
    codes = tf.transpose(tokens.stack()) - tf.tile(
        tf.range(self.num_blocks) * self.codebook_size, [self.height * self.width])[None]
    return tf.reshape(codes, [num_samples, self.height, self.width, self.num_blocks])
