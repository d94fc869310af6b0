"""Tensor math of vector quantization: E-steps, M-step statistics, codebook health.

Pure functions on float32 tensors; `vqkeras.layers.VectorQuantizer` holds the state
and calls them. A sliced ("decomposed") codebook of `num_blocks` blocks is one
tensor `[blocks, K, d]`; inputs come flattened and split as `[blocks, N, d]`, so a
single codebook is simply `blocks = 1`.

Symbols follow docs/papers.md: x is z_e(x), e_1..e_K the codes, m the number of soft-EM
samples, lambda the EMA decay.
"""

import collections

import tensorflow as tf


def score_terms(codebook):
  """What the scores need of the codebook, computed once per call, not once per chunk.

  Args:
    codebook: `[blocks, K, d]` float32.

  Returns:
    (2 e_k `[blocks, K, d]`, -||e_k||^2 `[blocks, K]`).
  """
  return codebook + codebook, -tf.reduce_sum(tf.square(codebook), axis=-1)


def code_scores(x, terms):
  """Negative squared distances, up to a constant per row: 2 x.e_k - ||e_k||^2.

  ||x||^2 is the same for every code, so neither the argmin nor the softmax over
  codes needs it; leaving it out saves one pass over the [N, K] matrix. The
  factor 2 goes on the (smaller) codebook.

  Args:
    x: `[blocks, N, d]` float32.
    terms: `score_terms(codebook)`.

  Returns:
    `[blocks, N, K]` float32; larger means closer.
  """
  doubled, bias = terms
  if doubled.shape[0] == 1:
    # A plain MatMul + BiasAdd is much faster on CPU than BatchMatMul with batch 1.
    return tf.nn.bias_add(tf.matmul(x[0], doubled[0], transpose_b=True), bias[0])[None]
  return tf.matmul(x, doubled, transpose_b=True) + bias[:, None, :]


# Rows per chunk of the E-step when the batch size is known: the [rows, K] scores
# of a chunk stay in cache between the matrix product, the bias and the argmax
# (about 20% faster at K = 512 on CPU; neutral at K = 4096).
CACHE_ROWS = 2048
MAX_UNROLLED_CHUNKS = 16


def map_row_chunks(fn, x, max_rows):
  """Applies `fn` to chunks of rows of `x` and concatenates the results.

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
  if num_rows is not None:
    rows = min(max_rows, CACHE_ROWS)
    if num_rows <= rows:
      return fn(x, 0)
    if -(-num_rows // rows) <= MAX_UNROLLED_CHUNKS:
      return tf.concat([fn(x[:, start:start + rows], index)
                        for index, start in enumerate(range(0, num_rows, rows))], axis=1)

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
  terms = score_terms(codebook)

  def assign(chunk, unused_index):
    return tf.argmax(code_scores(chunk, terms), axis=-1, output_type=tf.int32)
  return map_row_chunks(assign, x, max_rows)


def sample_codes(x, codebook, num_samples, temperature, seed, max_rows):
  """Monte-Carlo E-step: m draws from P(z = j | x) proportional to exp(-||x - e_j||^2 / T).

  Exact, and fast for the peaked posteriors of trained quantizers: each draw
  takes the nearest code k with probability P(k | x); otherwise it comes from P
  without k, renormalized (the mixture of the two is P). Only rows with such a
  draw pay for a full categorical draw; when they are most rows (a flat
  posterior), every row is drawn from P directly. No `[N, m, K]` tensor is formed.

  Args:
    x: `[blocks, N, d]` float32.
    codebook: `[blocks, K, d]` float32.
    num_samples: m, python int.
    temperature: T, python float; the distances are divided by it.
    seed: `[2]` int32 stateless seed.
    max_rows: rows per chunk of the distance matrix.

  Returns:
    samples `[blocks, N, m]` int32 and the nearest codes `[blocks, N]` int32.
  """
  terms = score_terms(codebook)

  def assign(chunk, index):
    scores = code_scores(chunk, terms)
    blocks, rows, size = tf.shape(scores)[0], tf.shape(scores)[1], tf.shape(scores)[2]
    logits = tf.reshape(scores, [blocks * rows, size])
    if temperature != 1.0:
      logits = logits / temperature
    nearest = tf.argmax(logits, axis=-1, output_type=tf.int32)
    p_nearest = tf.gather(tf.nn.softmax(logits), nearest, batch_dims=1)
    seeds = tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(seed, index), 2)
    uniform = tf.random.stateless_uniform([blocks * rows, num_samples], seeds[0])
    take_nearest = uniform < p_nearest[:, None]
    others = tf.where(tf.reduce_any(~take_nearest, axis=-1))[:, 0]

    def mixture():
      other_logits = tf.tensor_scatter_nd_update(
          tf.gather(logits, others),
          tf.stack([tf.range(tf.size(others, tf.int64)),
                    tf.cast(tf.gather(nearest, others), tf.int64)], axis=1),
          tf.fill(tf.shape(others), float("-inf")))
      other_samples = tf.random.stateless_categorical(other_logits, num_samples, seeds[1],
                                                      dtype=tf.int32)
      other_samples = tf.scatter_nd(others[:, None], other_samples,
                                    tf.shape(take_nearest, tf.int64))
      return tf.where(take_nearest, nearest[:, None], other_samples)

    def direct():
      # A flat posterior: most rows need a full draw anyway, so draw every row from P.
      return tf.random.stateless_categorical(logits, num_samples, seeds[1], dtype=tf.int32)

    samples = tf.cond(tf.size(others) * 2 > blocks * rows, direct, mixture)
    codes = tf.concat([samples, nearest[:, None]], axis=-1)
    return tf.reshape(codes, [blocks, rows, num_samples + 1])
  codes = map_row_chunks(assign, x, max_rows)
  return codes[..., :num_samples], codes[..., num_samples]


class Assignments(collections.namedtuple(
    "Assignments", ["nearest", "nearest_weight", "other_positions", "other_codes",
                    "other_weight", "samples"])):
  """Which code vectors make up each position's quantized vector, and with what weight.

  A sparse form of the (soft) assignment matrix W [blocks * N, blocks * K]:
  W[p, nearest[p]] = nearest_weight[p] (1 when None), plus other_weight at every
  (other_positions[r], other_codes[r]). Positions are flat `b * N + i`, codes flat
  `b * K + j`. Hard EM has no others; under soft EM the others are the samples
  that are not the nearest code, few when the posterior is peaked.

  Fields:
    nearest: `[blocks, N]` int32 codes (within their block).
    nearest_weight: `[blocks, N]` float32 or None.
    other_positions: `[R]` int32 flat positions, or None.
    other_codes: `[R]` int32 flat codes, or None.
    other_weight: python float, 1/m.
    samples: `[blocks, N, m]` int32 soft-EM draws, or None.
  """


def hard_assignments(codes):
  """Each position takes its one code with weight 1. codes: `[blocks, N]` int32."""
  return Assignments(codes, None, None, None, 0.0, None)


def soft_assignments(samples, nearest, codebook_size):
  """Each of the m samples of a position weighs 1/m.

  Args:
    samples: `[blocks, N, m]` int32.
    nearest: `[blocks, N]` int32, the nearest codes.
    codebook_size: K.

  Returns:
    `Assignments` with the samples equal to the nearest code folded into its weight.
  """
  num_samples = samples.shape[-1]
  is_nearest = tf.equal(samples, nearest[..., None])
  nearest_weight = tf.reduce_sum(tf.cast(is_nearest, tf.float32), axis=-1) / num_samples
  others = tf.where(tf.reshape(~is_nearest, [-1]))[:, 0]
  other_positions = tf.cast(others // num_samples, tf.int32)
  rows = tf.shape(samples)[1]
  other_codes = (tf.gather(tf.reshape(samples, [-1]), others) +
                 other_positions // rows * codebook_size)
  return Assignments(nearest, nearest_weight, other_positions, other_codes,
                     1.0 / num_samples, samples)


def _block_offsets(codes, codebook_size):
  """Codes of block b shifted by b*K: one id space for all blocks, `[blocks, ...]`."""
  blocks = tf.shape(codes)[0]
  offsets = tf.range(blocks, dtype=codes.dtype) * codebook_size
  return codes + tf.reshape(offsets, [-1] + [1] * (codes.shape.rank - 1))


def lookup(codebook, assignments):
  """The quantized vectors: sum_j W[p, j] e_j (soft EM: the mean of the sampled codes).

  Args:
    codebook: `[blocks, K, d]`.
    assignments: `Assignments` of N positions per block.

  Returns:
    `[blocks, N, d]`, differentiable w.r.t. `codebook`.
  """
  blocks, codebook_size, depth = codebook.shape
  flat_codebook = tf.reshape(codebook, [blocks * codebook_size, depth])
  vectors = tf.gather(flat_codebook, _block_offsets(assignments.nearest, codebook_size))
  if assignments.nearest_weight is None:
    return vectors

  def nearest_plus_others():
    weighted = vectors * assignments.nearest_weight[..., None]
    others = tf.gather(flat_codebook, assignments.other_codes) * assignments.other_weight
    flat = tf.tensor_scatter_nd_add(tf.reshape(weighted, [-1, depth]),
                                    assignments.other_positions[:, None], others)
    return tf.reshape(flat, tf.shape(vectors))

  def mean_of_samples():
    ids = _block_offsets(assignments.samples, codebook_size)
    return tf.reduce_mean(tf.gather(flat_codebook, ids), axis=2)

  # Scattering the other draws beats gathering all m draws only while they are few.
  return tf.cond(tf.size(assignments.other_codes) > tf.size(assignments.nearest),
                 mean_of_samples, nearest_plus_others)


def straight_through(x, quantized):
  """quantized in the forward pass, the identity's gradient to x (VQ-VAE's estimator)."""
  return x + tf.stop_gradient(quantized - x)


def rotation_trick(x, quantized, epsilon=1e-6):
  """quantized in the forward pass, reached from x by a rotation and a rescaling that
  the gradient treats as constants (Fifty et al. 2024, "Restructuring Vector
  Quantization with the Rotation Trick").

  With u = x / ||x||, v = q / ||q||, w = (u + v) / ||u + v|| and lambda = ||q|| / ||x||,
  q = lambda R x for R = I - 2 w w^T + 2 v u^T, the rotation taking u to v in their
  plane. The gradient reaching x is lambda R^T g instead of the straight-through g: it
  keeps the angle between the gradient and the input that the output has to the code.

  Args:
    x: `[..., d]` float, the encoder outputs.
    quantized: `[..., d]`, their code vectors (no gradient flows to them here).

  Returns:
    `[..., d]`, equal to `quantized` (exactly: the rounding of the rotation is removed
    without gradient).
  """
  quantized = tf.stop_gradient(quantized)
  x_norm = tf.stop_gradient(tf.maximum(tf.norm(x, axis=-1, keepdims=True), epsilon))
  q_norm = tf.norm(quantized, axis=-1, keepdims=True)
  u = tf.stop_gradient(x / x_norm)
  v = quantized / tf.maximum(q_norm, epsilon)
  w = tf.stop_gradient(tf.math.l2_normalize(u + v, axis=-1, epsilon=epsilon ** 2))
  rotated = (x - 2.0 * tf.reduce_sum(x * w, -1, keepdims=True) * w
             + 2.0 * tf.reduce_sum(x * u, -1, keepdims=True) * v)
  scaled = rotated * (q_norm / x_norm)
  return scaled + tf.stop_gradient(quantized - scaled)


def assignment_statistics(x, assignments, valid, codebook_size, with_sums=True):
  """M-step sufficient statistics of one batch: counts n_j = sum_p W[p, j], sums s_j = sum_p W[p, j] x_p.

  Segment sums over the code ids, O(N d) plus O(R d) for the R other samples;
  no one-hot matrix.

  Args:
    x: `[blocks, N, d]` float32.
    assignments: `Assignments`.
    valid: `[N]` bool or None; False positions (padding) are left out.
    codebook_size: K.
    with_sums: False to compute the counts only.

  Returns:
    counts `[blocks, K]` and sums `[blocks, K, d]` (None without `with_sums`).
  """
  blocks, _, depth = x.shape
  num_segments = blocks * codebook_size
  ids = tf.reshape(_block_offsets(assignments.nearest, codebook_size), [-1])
  soft = assignments.nearest_weight is not None
  if valid is not None:
    # unsorted_segment_sum drops negative ids: padding costs nothing further.
    ids = tf.where(tf.tile(valid, [blocks]), ids, -1)
  weights = (tf.reshape(assignments.nearest_weight, [-1]) if soft
             else tf.ones(tf.shape(ids), tf.float32))
  counts = tf.math.unsorted_segment_sum(weights, ids, num_segments)
  if soft:
    other_ids = assignments.other_codes
    if valid is not None:
      rows = tf.shape(x)[1]
      other_ids = tf.where(tf.gather(valid, assignments.other_positions % rows), other_ids, -1)
    counts += tf.math.unsorted_segment_sum(
        tf.fill(tf.shape(other_ids), assignments.other_weight), other_ids, num_segments)
  counts = tf.reshape(counts, [blocks, codebook_size])
  if not with_sums:
    return counts, None
  flat_x = tf.reshape(x, [-1, depth])
  sums = tf.math.unsorted_segment_sum(flat_x * weights[:, None] if soft else flat_x, ids,
                                      num_segments)
  if soft:
    sums += tf.math.unsorted_segment_sum(
        tf.gather(flat_x, assignments.other_positions) * assignments.other_weight,
        other_ids, num_segments)
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
  """Online (hard or Monte-Carlo soft) EM M-step of docs/papers.md section 2.

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


def orthogonal_loss(codebook, used=None):
  """The orthogonal regularization of a codebook (Shin et al. 2021): per block,
  sum_ij cos(e_i, e_j)^2 / n^2 - 1/n over its n codes (the diagonal's share taken out:
  0 when the codes are orthogonal), averaged over the blocks.

  Args:
    codebook: `[blocks, K, d]` float32 code vectors.
    used: None, or bool `[blocks, K]`: only these codes count (a block without any
      counts 0).

  Returns:
    scalar float32.
  """
  unit = tf.math.l2_normalize(codebook, axis=-1, epsilon=1e-12)
  squared_cosines = tf.square(tf.matmul(unit, unit, transpose_b=True))   # [blocks, K, K]
  if used is None:
    n = tf.cast(tf.shape(codebook)[1], tf.float32)
    per_block = tf.reduce_sum(squared_cosines, axis=[1, 2]) / n ** 2 - 1.0 / n
  else:
    weights = tf.cast(used, tf.float32)
    n = tf.reduce_sum(weights, axis=-1)
    pairs = tf.einsum("bi,bij,bj->b", weights, squared_cosines, weights)
    per_block = tf.math.divide_no_nan(pairs, n ** 2) - tf.math.divide_no_nan(1.0, n)
  return tf.reduce_mean(per_block)


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
  logits = tf.cast(logits, tf.float32)
  samples = tf.convert_to_tensor(samples)
  log_probs = tf.nn.log_softmax(logits, axis=-1)
  picked = tf.gather(log_probs, samples, batch_dims=logits.shape.rank - 1)
  return -tf.reduce_mean(picked, axis=-1)
