"""tf.data input pipelines: token-budget batches for translation, image batches.

Batch sizes are global (over all replicas), as in the hparams; with a
`tf.distribute.InputContext` each input pipeline reads its own shard and makes
batches of the per-replica size.
"""

import tensorflow as tf

from vqkeras.tokenizer import PAD_ID

# Tokenizing a few hundred sentences per op call amortizes its overhead.
TOKENIZE_BATCH = 512


def bucket_boundaries(max_length, min_length=8, growth=1.1):
  """Length bucket boundaries growing geometrically, as in Tensor2Tensor.

  Returns:
    increasing ints; the last is `max_length + 1`, so every length up to
    `max_length` falls in a bucket.
  """
  boundaries, length = [], min_length
  while length <= max_length:
    boundaries.append(length)
    length = max(length + 1, int(length * growth))
  return boundaries + [max_length + 1]


def bucket_batch_sizes(boundaries, batch_tokens):
  """Examples per batch for each bucket so that a padded batch holds at most `batch_tokens`.

  Bucket i holds lengths below boundaries[i]; the bucket_by_sequence_length
  convention adds one bucket for lengths beyond the last boundary, which length
  filtering keeps empty.
  """
  sizes = [max(1, batch_tokens // (boundary - 1)) for boundary in boundaries]
  return sizes + [1]


def _shard(dataset, input_context):
  if input_context is not None and input_context.num_input_pipelines > 1:
    return dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  return dataset


def _per_replica(batch_size, input_context):
  if input_context is None:
    return batch_size
  return input_context.get_per_replica_batch_size(batch_size)


def translation_batches(pairs, tokenizer, batch_tokens, max_length, training, seed=None,
                        input_context=None, shuffle_buffer=10000):
  """Source/target string pairs to padded token batches of at most `batch_tokens` tokens.

  Empty pairs and pairs longer than `max_length` tokens (either side, EOS
  included) are dropped; the data preparation counts them.

  Args:
    pairs: a dataset of (source, target) scalar strings.
    tokenizer: a `vqkeras.tokenizer.Tokenizer`.
    batch_tokens: the global token budget of a batch (padding included).
    max_length: the longest sequence kept.
    training: shuffle (and keep every batch shape flexible) for training.
    seed: shuffle seed.
    input_context: a `tf.distribute.InputContext`, to shard and divide the budget.
    shuffle_buffer: pairs held by the shuffle.

  Returns:
    a dataset of {"inputs": int32 [batch, source length], "targets": int32 [batch,
    target length]}, 0-padded, each sequence ending in EOS.
  """
  pairs = _shard(pairs, input_context)
  pairs = pairs.filter(lambda source, target: tf.logical_and(
      tf.strings.length(tf.strings.strip(source)) > 0,
      tf.strings.length(tf.strings.strip(target)) > 0))
  if training:
    pairs = pairs.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

  def tokenize(source, target):
    return {"inputs": tokenizer.tokenize(source), "targets": tokenizer.tokenize(target)}

  def dense(example):
    # Unbatched ragged rows come as rank-1 ragged values; padded_batch wants tensors.
    return {key: value.to_tensor() if isinstance(value, tf.RaggedTensor) else value
            for key, value in example.items()}

  examples = (pairs.batch(TOKENIZE_BATCH)
              .map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)
              .unbatch()
              .map(dense))
  examples = examples.filter(lambda ex: tf.logical_and(
      tf.size(ex["inputs"]) <= max_length, tf.size(ex["targets"]) <= max_length))
  boundaries = bucket_boundaries(max_length)
  batches = examples.bucket_by_sequence_length(
      element_length_func=lambda ex: tf.maximum(tf.size(ex["inputs"]), tf.size(ex["targets"])),
      bucket_boundaries=boundaries,
      bucket_batch_sizes=bucket_batch_sizes(boundaries,
                                            _per_replica(batch_tokens, input_context)),
      padded_shapes={"inputs": [None], "targets": [None]},
      padding_values={"inputs": PAD_ID, "targets": PAD_ID})
  return batches.prefetch(tf.data.AUTOTUNE)


def scale_images(images):
  """uint8 pixels to float32 in [-1, 1]: the image models' input, applied inside the model
  so that training and the exported signatures (uint8 in) share it."""
  return tf.cast(images, tf.float32) / 127.5 - 1.0


def image_batches(images, labels, batch_size, training, seed=None, input_context=None):
  """In-memory uint8 images to shuffled batches.

  Args:
    images: uint8 `[n, H, W, C]` array.
    labels: int `[n]` array.
    batch_size: global images per batch.
    training: shuffle, repeat and drop the last partial batch.
    seed: shuffle seed.
    input_context: a `tf.distribute.InputContext`.

  Returns:
    a dataset of {"image": uint8 [batch, H, W, C], "label": int64 [batch]}; the
    models scale the pixels themselves (`scale_images`).
  """
  dataset = _shard(tf.data.Dataset.from_tensor_slices((images, labels)), input_context)
  if training:
    dataset = dataset.shuffle(min(len(images), 50000), seed=seed,
                              reshuffle_each_iteration=True).repeat()
  dataset = dataset.batch(_per_replica(batch_size, input_context), drop_remainder=training)
  dataset = dataset.map(
      lambda image, label: {"image": image, "label": tf.cast(label, tf.int64)},
      num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.prefetch(tf.data.AUTOTUNE)
