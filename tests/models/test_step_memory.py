"""No training step holds a weight broadcast over the batch, or a tensor above its largest one.

A batched matmul of activations `[batch, length, hidden]` with a weight `[vocab, hidden]`
broadcasts the weight over the batch, and its gradient holds `[batch, vocab, hidden]`
before summing it: 17.9 GB at the base translation sizes. This traces the training step
of each model family at a tiny size with static shapes and inspects every tensor of the
graph, forward and backward:
- none has a trainable matrix's full shape beside other dimensions (a weight times the
  batch);
- none is larger than the largest tensor the model must hold (its logits: batch x
  length x vocab, or batch x pixels x 256).
The sizes below are chosen so that no legitimate activation shares a weight's shape.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vqkeras import registry
from vqkeras import train_step
from vqkeras.models import model_class

BATCH, SOURCE_LENGTH, TARGET_LENGTH = 3, 5, 11
# Hidden wider than the target is long: a [batch, vocab, hidden] gradient is then larger
# than the [batch, length, vocab] logits, and the size check catches it as well.
TRANSLATION_SIZES = dict(hidden_size=24, filter_size=40, num_heads=2, vocab_size=1000)


def graph_tensors(graph):
  """Every tensor of a graph and of the functions it calls (loops, conditionals)."""
  seen = set()

  def walk(graph):
    for op in graph.get_operations():
      yield from op.outputs
      for name in op.node_def.attr:
        attr = op.node_def.attr[name]
        for function in [attr.func] + list(attr.list.func):
          if function.name and function.name not in seen:
            seen.add(function.name)
            body = graph._get_function(function.name)  # pylint: disable=protected-access
            if body is not None and hasattr(body, "graph"):
              yield from walk(body.graph)
  return list(walk(graph))


def traced_step_tensors(model, features):
  """The tensors of the training step (loss, gradients, Adam update) on these shapes."""
  optimizer = keras.optimizers.Adam(1e-3)
  train_step.build(model, optimizer, features)
  step = tf.function(train_step.train_step_fn(model, optimizer))
  specs = tf.nest.map_structure(lambda v: tf.TensorSpec(v.shape, v.dtype), features)
  return graph_tensors(step.get_concrete_function(specs).graph)


def holds(dims, matrix):
  """Whether the shape `dims` holds `matrix`'s dimensions, consecutive."""
  return any(tuple(dims[i:i + len(matrix)]) == matrix for i in range(len(dims) - len(matrix) + 1))


def weight_broadcasts(tensors, weights):
  """Tensors that hold a weight matrix's full shape and are larger than every weight that
  does (a convolution's kernel `[3, d, d]` holds a `[d, d]` matrix and is a weight)."""
  shapes = [tuple(w.shape) for w in weights]
  matrices = {shape for shape in shapes if len(shape) >= 2}
  matrices |= {shape[::-1] for shape in matrices if len(shape) == 2}
  sizes = {matrix: max(int(np.prod(shape)) for shape in shapes + [matrix] if holds(shape, matrix))
           for matrix in matrices}
  found = []
  for tensor in tensors:
    if tensor.shape.rank is None or not tensor.shape.is_fully_defined():
      continue
    dims = tuple(tensor.shape.as_list())
    found += [f"{tensor.name} {dims} holds weight shape {matrix}" for matrix in matrices
              if holds(dims, matrix) and tensor.shape.num_elements() > sizes[matrix]]
  return found


def largest(tensors):
  sized = [(t.shape.num_elements(), t.name, t.shape) for t in tensors
           if t.shape.rank is not None and t.shape.is_fully_defined()]
  return max(sized)


# Embeddings of the positions of the code grid (`[B, hidden]` per block, `[H, hidden]` per
# row, ...) are added to activations `[n, B, hidden]` that hold their shape by nature.
POSITION_TABLES = ("block_embedding", "row_embedding", "column_embedding")


def check_step(model, features, largest_legitimate):
  tensors = traced_step_tensors(model, features)
  defined = [t for t in tensors if t.shape.rank is not None and t.shape.is_fully_defined()]
  assert len(defined) > 0.9 * len(tensors), "too few static shapes to inspect the step"
  matrices = [w for w in model.trainable_variables
              if not any(name in w.path for name in POSITION_TABLES)]
  assert weight_broadcasts(tensors, matrices) == []
  size, name, shape = largest(tensors)
  assert size <= largest_legitimate, f"{name} {shape}: {size} > {largest_legitimate} elements"


def translation_features():
  rng = np.random.default_rng(0)
  return {"inputs": tf.constant(rng.integers(3, 1000, (BATCH, SOURCE_LENGTH)), tf.int32),
          "targets": tf.constant(rng.integers(3, 1000, (BATCH, TARGET_LENGTH)), tf.int32)}


@pytest.mark.parametrize("name,changes", [
    ("transformer_tiny", {}),
    ("vq_em_tiny", dict(bottleneck_bits=5, mask_startup_steps=0)),
    ("vq_ema_tiny", dict(bottleneck_bits=5, mask_startup_steps=0)),
    ("vq_gradient_tiny", dict(bottleneck_bits=5, mask_startup_steps=0)),
])
def test_translation_step_holds_no_weight_times_batch(name, changes):
  keras.utils.set_random_seed(0)
  hparams = registry.hparams(name).derive(**TRANSLATION_SIZES, **changes)
  model = model_class(hparams).from_hparams(hparams)
  # The latent model pads the target to a multiple of 2^n_c before its decoder.
  length = -(-TARGET_LENGTH // 2 ** getattr(hparams, "compression_steps", 0))
  length *= 2 ** getattr(hparams, "compression_steps", 0)
  check_step(model, translation_features(), BATCH * length * hparams.vocab_size)


@pytest.mark.parametrize("prior_factorization", ["positions", "raster"])
def test_image_step_holds_no_weight_times_batch(cifar_images, prior_factorization):
  keras.utils.set_random_seed(0)
  hparams = registry.hparams("vq_em_cifar_tiny").derive(
      prior_factorization=prior_factorization, num_blocks=4, codebook_size=24,
      prior_hidden_size=40, prior_filter_size=56)
  model = model_class(hparams).from_hparams(hparams)
  features = {"image": tf.constant(cifar_images[:BATCH])}
  check_step(model, features, BATCH * 32 * 32 * 3 * 256)


def test_the_check_finds_a_broadcast_weight():
  """The bug this file guards against, written out: a batched matmul with a weight."""
  weight = tf.Variable(tf.random.normal([1000, 24]))

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.matmul(x, weight, transpose_b=True))
    return tape.gradient(loss, weight)

  tensors = graph_tensors(step.get_concrete_function(
      tf.TensorSpec([BATCH, TARGET_LENGTH, 24])).graph)
  assert any("(3, 1000, 24)" in found for found in weight_broadcasts(tensors, [weight]))
  assert largest(tensors)[0] > BATCH * TARGET_LENGTH * 1000

