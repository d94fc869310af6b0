"""Priors over a grid of codes `[batch, H, W, B]` (B codebooks per position).

Both priors factorize the grid in the same order, positions row by row and the B
codes of a position in turn:

    p(z) = prod_{p < H*W} prod_{b < B} p(z_{p,b} | z_{<p}, z_{p,<b}),

so each is an exact likelihood and bits/dim of the bound stays exact. They differ in
what attends to what:
- `LatentPrior`: a causal Transformer over the H*W positions (the input at p is the
  sum of the embeddings of the B codes at p - 1) and a small causal Transformer over
  the B codes of each position, started from the first one's output at p (the
  spatial and depth Transformers of RQ-Transformer, Lee et al. 2022). Attention spans
  H*W positions: at the paper's 8 x 8 x 10 grid and batch 128 its weights are 100
  times smaller than over 640 tokens.
- `RasterPrior`: one causal Transformer over the H*W*B codes as a sequence; its
  `[H*W*B, H*W*B]` attention weights per head and layer (1.7 GB a layer at the
  paper's sizes) do not fit a GPU. Runs recorded before `LatentPrior` use it.
"""

import keras
import tensorflow as tf

from vqkeras import beam_search
from vqkeras import quantization
from vqkeras.models.transformer import TransformerStack


class CodeGridPrior(keras.layers.Layer):
  """What both priors share: code ids, row and column embeddings, the likelihood.

  Code k of block b has the id b * K + k; the id B * K starts the grid.

  Args:
    codebook_size: K codes per block.
    num_blocks: B codebooks per position.
    hidden_size: width of the embeddings.

  Call (subclasses): codes int `[batch, H, W, B]` to logits `[batch, H, W, B, K]`,
  each the distribution of that code given the codes before it.
  """

  def __init__(self, codebook_size, num_blocks, hidden_size, **kwargs):
    super().__init__(**kwargs)
    self.codebook_size, self.num_blocks = codebook_size, num_blocks
    self.hidden_size = hidden_size
    self.start_id = num_blocks * codebook_size

  def build(self, codes_shape):
    _, height, width, _ = codes_shape
    self.height, self.width = height, width
    self.row_embedding = self.add_weight(
        name="row_embedding", shape=(height, self.hidden_size), initializer="random_normal")
    self.column_embedding = self.add_weight(
        name="column_embedding", shape=(width, self.hidden_size), initializer="random_normal")

  def position_embeddings(self):
    """The row plus column embedding of every position in raster order, `[H, W, 1, hidden]`."""
    return (self.row_embedding[:, None, None] + self.column_embedding[None, :, None])

  def code_ids(self, codes):
    """`[batch, H, W, B]` codes to `[batch, H*W, B]` ids (b * K + code)."""
    offsets = tf.range(self.num_blocks, dtype=tf.int32) * self.codebook_size
    codes = tf.cast(codes, tf.int32) + offsets
    return tf.reshape(codes, [tf.shape(codes)[0], self.height * self.width, self.num_blocks])

  def grid_of(self, codes):
    """Codes drawn in raster order, a `[H*W*B, batch]` stack, to `[batch, H, W, B]`."""
    return tf.reshape(tf.transpose(codes),
                      [tf.shape(codes)[1], self.height, self.width, self.num_blocks])

  def negative_log_likelihood(self, codes, samples=None, training=False):
    """Sum over the grid of -log p(z) in nats, `[batch]`.

    Args:
      codes: `[batch, H, W, B]` the codes the prior is conditioned on (teacher forcing).
      samples: `[batch, H, W, B, m]` targets; under soft EM the m draws (a soft
        target, docs/papers.md section 2); None: the codes themselves.
      training: dropout.
    """
    logits = self(codes, training=training)
    targets = tf.cast(codes, tf.int32)[..., None] if samples is None else samples
    nll = quantization.sample_cross_entropy(logits, targets)
    return tf.reduce_sum(nll, axis=[1, 2, 3])

  def draw(self, logits, temperature, seed, t):
    """Code `[batch]` drawn from logits `[batch, K]`: code t of the raster order uses the
    seed folded with t (stateless, so the same seed gives the same grids)."""
    logits = tf.cast(logits, tf.float32) / temperature
    return tf.random.stateless_categorical(
        logits, 1, tf.random.experimental.stateless_fold_in(seed, t), dtype=tf.int32)[:, 0]


class LatentPrior(CodeGridPrior):
  """p(z) over a `[H, W, B]` code grid: a Transformer over positions, one over blocks.

  Position p's context h_p (the position Transformer's output, which has read the
  codes of positions < p) starts the block Transformer of p: its input at block b is
  h_p + the embedding of block b + the embedding of code z_{p,b-1} (none at b = 0),
  and its output there gives p(z_{p,b} | z_{<p}, z_{p,<b}) (module docstring).

  Args:
    codebook_size: K codes per block.
    num_blocks: B codebooks per position.
    num_layers, hidden_size, filter_size, num_heads, dropout: the position Transformer.
    block_layers: layers of the block Transformer (same widths).
  """

  def __init__(self, codebook_size, num_blocks, num_layers, hidden_size, filter_size,
               num_heads, dropout=0.0, block_layers=1, **kwargs):
    super().__init__(codebook_size, num_blocks, hidden_size, **kwargs)
    self.code_embedding = keras.layers.Embedding(self.start_id + 1, hidden_size,
                                                 name="code_embedding")
    self.block_embedding = keras.layers.Embedding(num_blocks, hidden_size,
                                                  name="block_embedding")
    self.position_transformer = TransformerStack(
        num_layers, hidden_size, filter_size, num_heads, dropout, causal=True,
        name="position_transformer")
    self.block_transformer = TransformerStack(
        block_layers, hidden_size, filter_size, num_heads, dropout, causal=True,
        name="block_transformer")
    self.head = keras.layers.Dense(codebook_size, name="head")

  def position_inputs(self, ids):
    """`[batch, H*W, B]` ids to the position Transformer's inputs `[batch, H*W, hidden]`:
    at p the summed embeddings of the codes at p - 1 (the start id at 0) and p's row and
    column embeddings."""
    previous = tf.reduce_sum(self.code_embedding(ids[:, :-1]), axis=2)
    start = self.code_embedding(tf.fill([tf.shape(ids)[0], 1], self.start_id))
    positions = tf.reshape(self.position_embeddings(), [1, -1, self.hidden_size])
    return tf.concat([start, previous], axis=1) + tf.cast(positions, previous.dtype)

  def block_inputs(self, context, ids):
    """Contexts `[n, hidden]` and their positions' ids `[n, B]` to the block Transformer's
    inputs `[n, B, hidden]`: context + block embedding + the previous block's code."""
    previous = self.code_embedding(ids[:, :-1])
    previous = tf.pad(previous, [[0, 0], [1, 0], [0, 0]])
    blocks = self.block_embedding(tf.range(self.num_blocks))
    return context[:, None] + tf.cast(blocks, context.dtype)[None] + previous

  def call(self, codes, training=False):
    ids = self.code_ids(codes)
    context = self.position_transformer(self.position_inputs(ids), training=training)
    context = tf.reshape(context, [-1, self.hidden_size])
    y = self.block_transformer(
        self.block_inputs(context, tf.reshape(ids, [-1, self.num_blocks])), training=training)
    return tf.reshape(self.head(y), tf.concat([tf.shape(codes), [self.codebook_size]], 0))

  def sample(self, num_samples, temperature=1.0, seed=(0, 0)):
    """Draws `[num_samples, H, W, B]` code grids.

    H*W steps of the position Transformer, each of one position's work against a
    key/value cache of the earlier positions, and within each B steps of the block
    Transformer (`sample_blocks`).
    """
    num_positions = self.height * self.width
    seed = tf.convert_to_tensor(seed, tf.int32)
    positions = tf.reshape(self.position_embeddings(), [num_positions, self.hidden_size])

    def step(p, previous, cache, drawn):
      x = (previous + tf.cast(positions[p], previous.dtype)[None])[:, None]
      context, cache = self.position_transformer(x, cache=cache)
      summed, drawn = self.sample_blocks(p, context[:, 0], drawn, temperature, seed)
      return p + 1, summed, cache, drawn

    start = self.code_embedding(tf.fill([num_samples], self.start_id))
    cache = self.position_transformer.empty_cache(num_samples)
    drawn = tf.TensorArray(tf.int32, size=num_positions * self.num_blocks)
    _, _, _, drawn = tf.while_loop(
        lambda p, *_: p < num_positions, step, (tf.constant(0), start, cache, drawn),
        shape_invariants=(tf.TensorShape([]), start.shape,
                          tf.nest.map_structure(beam_search.open_shape, cache),
                          tf.TensorShape(None)))
    return self.grid_of(drawn.stack())

  def sample_blocks(self, p, context, drawn, temperature, seed):
    """Draws the B codes of position p from its context `[n, hidden]`, one block at a
    time against a key/value cache of the position's earlier blocks.

    Returns:
      (the summed embeddings of the drawn codes `[n, hidden]`, the next position's
      input; `drawn` with the codes written at p * B + b).
    """
    blocks = tf.cast(self.block_embedding(tf.range(self.num_blocks)), context.dtype)

    def step(b, previous, summed, cache, drawn):
      y, cache = self.block_transformer((context + blocks[b] + previous)[:, None], cache=cache)
      t = p * self.num_blocks + b
      code = self.draw(self.head(y)[:, 0], temperature, seed, t)
      embedded = self.code_embedding(code + b * self.codebook_size)
      return b + 1, embedded, summed + embedded, cache, drawn.write(t, code)

    zeros = tf.zeros_like(context)
    cache = self.block_transformer.empty_cache(tf.shape(context)[0])
    _, _, summed, _, drawn = tf.while_loop(
        lambda b, *_: b < self.num_blocks, step, (tf.constant(0), zeros, zeros, cache, drawn),
        shape_invariants=(tf.TensorShape([]), context.shape, context.shape,
                          tf.nest.map_structure(beam_search.open_shape, cache),
                          tf.TensorShape(None)))
    return summed, drawn


class RasterPrior(CodeGridPrior):
  """p(z) over a `[H, W, B]` code grid: one causal Transformer over its H*W*B codes.

  The input at code t is the previous code plus embeddings of the row, column and
  block of code t itself, so the network knows which codebook it predicts.

  Args:
    codebook_size: K codes per block.
    num_blocks: B codebooks per position.
    num_layers, hidden_size, filter_size, num_heads, dropout: Transformer sizes.
  """

  def __init__(self, codebook_size, num_blocks, num_layers, hidden_size, filter_size,
               num_heads, dropout=0.0, **kwargs):
    super().__init__(codebook_size, num_blocks, hidden_size, **kwargs)
    self.token_embedding = keras.layers.Embedding(self.start_id + 1, hidden_size,
                                                  name="token_embedding")
    self.block_embedding = keras.layers.Embedding(num_blocks, hidden_size,
                                                  name="block_embedding")
    self.stack = TransformerStack(num_layers, hidden_size, filter_size, num_heads, dropout,
                                  causal=True, name="transformer")
    self.head = keras.layers.Dense(codebook_size)

  def token_positions(self):
    """Embeddings of the row, column and block of every code, `[H*W*B, hidden]`."""
    blocks = self.block_embedding(tf.range(self.num_blocks))[None, None]
    return tf.reshape(self.position_embeddings() + blocks, [-1, self.hidden_size])

  def call(self, codes, training=False):
    tokens = tf.reshape(self.code_ids(codes), [tf.shape(codes)[0], -1])
    start = tf.fill([tf.shape(tokens)[0], 1], self.start_id)
    inputs = tf.concat([start, tokens[:, :-1]], axis=1)
    x = self.token_embedding(inputs) + self.token_positions()[None]
    logits = self.head(self.stack(x, training=training))
    return tf.reshape(logits, tf.concat([tf.shape(codes), [self.codebook_size]], 0))

  def sample(self, num_samples, temperature=1.0, seed=(0, 0)):
    """Draws `[num_samples, H, W, B]` code grids, one code at a time, each step of one
    code's work against a key/value cache of the earlier codes."""
    length = self.height * self.width * self.num_blocks
    seed = tf.convert_to_tensor(seed, tf.int32)
    positions = self.token_positions()

    def step(t, previous, cache, drawn):
      x = self.token_embedding(previous[:, None]) + positions[t][None, None]
      y, cache = self.stack(x, cache=cache)
      code = self.draw(self.head(y)[:, 0], temperature, seed, t)
      token = code + (t % self.num_blocks) * self.codebook_size
      return t + 1, token, cache, drawn.write(t, code)

    start = tf.fill([num_samples], self.start_id)
    cache = self.stack.empty_cache(num_samples)
    invariants = (tf.TensorShape([]), tf.TensorShape([None]),
                  tf.nest.map_structure(beam_search.open_shape, cache), tf.TensorShape(None))
    _, _, _, drawn = tf.while_loop(
        lambda t, *_: t < length, step,
        (tf.constant(0), start, cache, tf.TensorArray(tf.int32, size=length)),
        shape_invariants=invariants)
    return self.grid_of(drawn.stack())
