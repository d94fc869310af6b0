"""Tensor math of vector quantization: E-steps, M-step statistics, codebook health.

Pure functions on float32 tensors; `vqkeras.layers.VectorQuantizer` holds the state
and calls them. A sliced ("decomposed") codebook of `num_blocks` blocks is one
tensor `[blocks, K, d]`; inputs come flattened and split as `[blocks, N, d]`, so a
single codebook is simply `blocks = 1`.

Symbols follow PAPERS.md: x is z_e(x), e_1..e_K the codes, m the number of soft-EM
samples, lambda the EMA decay.
"""

import tensorflow as tf


def code_scores(x, codebook):
  """Negative squared distances, up to a constant per row: 2 x.e_k - ||e_k||^2.

  ||x||^2 is the same for every code, so neither the argmin nor the softmax over
  codes needs it; leaving it out saves one pass over the [N, K] matrix.

  Args:
    x: `[blocks, N, d]` float32.
    codebook: `[blocks, K, d]` float32.

  Returns:
    `[blocks, N, K]` float32; larger means closer.
  """
  codebook_sq = tf.reduce_sum(tf.square(codebook), axis=-1)
  scores = tf.matmul(x + x, codebook, transpose_b=True)
  return scores - codebook_sq[:, None, :]


def map_row_chunks(fn, x, max_rows):
  """Applies `fn` to chunks of at most `max_rows` rows of `x` and concatenates.

  Bounds the memory of the `[blocks, N, K]` distance matrix: the E-step never
  holds more than `max_rows * K` scores per block at once.

  Args:
    fn: maps `([blocks, n, d] chunk, chunk index)` to a `[blocks, n, ...]` int32 tensor.
    x: `[blocks, N, d]`.
    max_rows: python int, the largest chunk.

  Returns:
    `fn`'s outputs for all N rows, `[blocks, N, ...]`.
  """
  num_rows = x.shape[1]
  if num_rows is not None and num_rows <= max_rows:
    return fn(x, 0)

  def chunked():
    n = tf.shape(x)[1]
    num_chunks = (n + max_rows - 1) // max_rows
    padded = tf.pad(x, [[0, 0], [0, num_chunks * max_rows - n], [0, 0]])
    chunks = tf.reshape(padded, [x.shape[0], num_chunks, max_rows, x.shape[2]])
    chunks = tf.transpose(chunks, [1, 0, 2, 3])
    outputs = tf.map_fn(
        lambda args: fn(args[0], args[1]),
        (chunks, tf.range(num_chunks)),
        fn_output_signature=tf.int32,
        parallel_iterations=1)
    outputs = tf.transpose(outputs, [1, 0, 2] + list(range(3, outputs.shape.rank)))
    outputs = tf.reshape(outputs, tf.concat([[x.shape[0], -1], tf.shape(outputs)[3:]], 0))
    return outputs[:, :n]

  if num_rows is not None:
    return chunked()
  return tf.cond(tf.shape(x)[1] <= max_rows, lambda: fn(x, 0), chunked)


def nearest_codes(x, codebook, max_rows):
  """Hard E-step: k = argmin_j ||x - e_j||^2.

  Args:
    x: `[blocks, N, d]` float32.
    codebook: `[blocks, K, d]` float32.
    max_rows: rows per chunk of the distance matrix.

  Returns:
    `[blocks, N]` int32 codes.
  """
  def assign(chunk, unused_index):
    return tf.argmax(code_scores(chunk, codebook), axis=-1, output_type=tf.int32)
  return map_row_chunks(assign, x, max_rows)


def sample_codes(x, codebook, num_samples, temperature, seed, max_rows,
                 with_nearest=False):
  """Monte-Carlo E-step: m draws from P(z = j | x) proportional to exp(-||x - e_j||^2 / T).

  No `[N, m, K]` tensor is formed: the sampler draws all m codes of a row from
  that row's `[K]` distribution.

  Args:
    x: `[blocks, N, d]` float32.
    codebook: `[blocks, K, d]` float32.
    num_samples: m, python int.
    temperature: T, python float; the distances are divided by it.
    seed: `[2]` int32 stateless seed.
    max_rows: rows per chunk of the distance matrix.
    with_nearest: also return the nearest codes, from the same distances.

  Returns:
    `[blocks, N, m]` int32 codes; with `with_nearest`, also `[blocks, N]` int32.
  """
  def assign(chunk, index):
    scores = code_scores(chunk, codebook)
    logits = scores / temperature if temperature != 1.0 else scores
    blocks, rows = tf.shape(logits)[0], tf.shape(logits)[1]
    samples = tf.random.stateless_categorical(
        tf.reshape(logits, [blocks * rows, -1]), num_samples,
        seed=tf.random.experimental.stateless_fold_in(seed, index),
        dtype=tf.int32)
    samples = tf.reshape(samples, [blocks, rows, num_samples])
    if not with_nearest:
      return samples
    nearest = tf.argmax(scores, axis=-1, output_type=tf.int32)
    return tf.concat([samples, nearest[..., None]], axis=-1)
  codes = map_row_chunks(assign, x, max_rows)
  if not with_nearest:
    return codes
  return codes[..., :num_samples], codes[..., num_samples]


def _block_offsets(codes, codebook_size):
  """Codes of block b shifted by b*K: one id space for all blocks, `[blocks, ...]`."""
  blocks = tf.shape(codes)[0]
  offsets = tf.range(blocks, dtype=codes.dtype) * codebook_size
  return codes + tf.reshape(offsets, [-1] + [1] * (codes.shape.rank - 1))


def lookup(codebook, samples):
  """Decoder input: the mean of the sampled code vectors, (1/m) sum_l e_{z^l}.

  Args:
    codebook: `[blocks, K, d]`.
    samples: `[blocks, N, m]` int32 (m = 1 for hard assignments).

  Returns:
    `[blocks, N, d]`, differentiable w.r.t. `codebook`.
  """
  blocks, codebook_size, depth = codebook.shape
  ids = _block_offsets(samples, codebook_size)
  vectors = tf.gather(tf.reshape(codebook, [blocks * codebook_size, depth]), ids)
  if samples.shape[-1] == 1:
    return vectors[:, :, 0]
  return tf.reduce_mean(vectors, axis=2)


def assignment_statistics(x, samples, valid, codebook_size, with_sums=True):
  """M-step sufficient statistics of one batch: counts n_j and sums of x per code.

  Each of the m samples of a position counts 1/m. A segment sum over the code ids
  does it in O(N * m * d), with no one-hot matrix.

  Args:
    x: `[blocks, N, d]` float32.
    samples: `[blocks, N, m]` int32 codes.
    valid: `[N]` bool or None; False positions (padding) are left out.
    codebook_size: K.
    with_sums: False to compute the counts only.

  Returns:
    counts `[blocks, K]` and sums `[blocks, K, d]` (None without `with_sums`).
  """
  blocks, _, depth = x.shape
  num_samples = samples.shape[-1]
  ids = _block_offsets(samples, codebook_size)
  if valid is not None:
    # unsorted_segment_sum drops negative ids: padding costs nothing further.
    ids = tf.where(valid[None, :, None], ids, -1)
  num_segments = blocks * codebook_size
  flat_ids = tf.reshape(ids, [-1])
  weight = 1.0 / num_samples
  counts = tf.math.unsorted_segment_sum(
      tf.fill(tf.shape(flat_ids), weight), flat_ids, num_segments)
  counts = tf.reshape(counts, [blocks, codebook_size])
  if not with_sums:
    return counts, None
  if num_samples == 1:
    data = tf.reshape(x, [-1, depth])
  else:
    data = tf.reshape(tf.repeat(x, num_samples, axis=1), [-1, depth])
  sums = tf.math.unsorted_segment_sum(data, flat_ids, num_segments)
  if num_samples > 1:
    sums *= weight
  return counts, tf.reshape(sums, [blocks, codebook_size, depth])


def laplace_smoothed_counts(counts, epsilon):
  """c_j <- (c_j + eps) / (n + K eps) * n, n = sum_j c_j, per block: no code has count 0.

  Args:
    counts: `[blocks, K]`.
    epsilon: eps, python float.

  Returns:
    `[blocks, K]`.
  """
  codebook_size = counts.shape[-1]
  total = tf.reduce_sum(counts, axis=-1, keepdims=True)
  return (counts + epsilon) / (total + codebook_size * epsilon) * total


def ema_codebook_update(ema_count, ema_sum, counts, sums, decay, epsilon):
  """Online (hard or Monte-Carlo soft) EM M-step of PAPERS.md section 2.

  c_j <- lambda c_j + (1 - lambda) n_j;  m_j <- lambda m_j + (1 - lambda) s_j;
  e_j = m_j / smoothed(c_j). No zero-debiasing, as in the reference code.

  Args:
    ema_count: `[blocks, K]` running counts c.
    ema_sum: `[blocks, K, d]` running sums m.
    counts: `[blocks, K]` this batch's counts n.
    sums: `[blocks, K, d]` this batch's sums s.
    decay: lambda.
    epsilon: Laplace smoothing eps.

  Returns:
    new_count, new_sum, new_codebook, and `[blocks]` bool `updated`: False for a
    block that has seen no data at all yet, whose codebook must be kept as it is
    (smoothing cannot divide by a total of 0).
  """
  new_count = decay * ema_count + (1.0 - decay) * counts
  new_sum = decay * ema_sum + (1.0 - decay) * sums
  smoothed = laplace_smoothed_counts(new_count, epsilon)
  updated = tf.reduce_sum(new_count, axis=-1) > 0.0
  safe = tf.where(updated[:, None], smoothed, 1.0)
  return new_count, new_sum, new_sum / safe[..., None], updated


def perplexity(counts):
  """exp of the entropy of the code distribution of a batch, averaged over blocks.

  Ranges from 1 (one code used) to K (all codes used equally); depends on the
  batch size, so read it beside the codes used over a window.

  Args:
    counts: `[blocks, K]` non-negative.

  Returns:
    scalar float32; 0 when the batch has no valid position.
  """
  total = tf.reduce_sum(counts, axis=-1, keepdims=True)
  probs = tf.math.divide_no_nan(counts, total)
  entropy = -tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(probs), probs), axis=-1)
  value = tf.where(total[:, 0] > 0.0, tf.exp(entropy), 0.0)
  return tf.reduce_mean(value)


def soft_targets(samples, codebook_size):
  """The average of the m sampled one-hots: the latent predictor's soft target.

  Args:
    samples: `[..., m]` int codes.
    codebook_size: K.

  Returns:
    `[..., K]` float32, rows summing to 1.
  """
  return tf.reduce_mean(tf.one_hot(samples, codebook_size), axis=-2)


def sample_cross_entropy(logits, samples):
  """Cross-entropy of `logits` against the soft targets of `samples`, per position.

  Equals -sum_j t_j log softmax(logits)_j with t = soft_targets(samples), without
  forming t: the mean over the m samples of the sparse cross-entropy.

  Args:
    logits: `[..., K]`.
    samples: `[..., m]` int codes.

  Returns:
    `[...]` float32.
  """
  num_samples = samples.shape[-1]
  log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
  picked = tf.gather(log_probs, samples, batch_dims=logits.shape.rank - 1)
  return -tf.reduce_sum(picked, axis=-1) / num_samples
