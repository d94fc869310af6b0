"""The discrete bottleneck: a Keras 3 vector-quantization layer.

One layer covers the three ways of training a codebook that the two papers use
(docs/papers.md sections 1 and 2); the choice is the `update` argument, each rule a
small class of vqkeras/layers/codebook_updates.py:

- "gradient": VQ-VAE. The optimizer moves the codebook through the codebook loss
  ||sg[z_e] - e||^2.
- "ema" (alias "hard_em"): online hard EM, the EMA update of VQ-VAE appendix A.1
  as written in the Roy et al. reference code.
- "soft_em": Monte-Carlo soft EM: m codes sampled per position, EMA M-step with
  weight 1/m, decoder input the mean of the sampled code vectors.

Two remedies for codebook collapse, with the gradient rule: SimVQ (Zhu et al. 2024,
`codebook_transform="linear"`), whose codes are a frozen random basis times one learned
linear map, so every code moves with every step; and the orthogonal regularization of
the codebook (Shin et al. 2021, `orthogonal_weight`).
"""

import functools
import math

import keras
import tensorflow as tf

from vqkeras import quantization
from vqkeras.distribute import global_mean, num_replicas, replica_id, sum_over_replicas
from vqkeras.keras_compat import PerReplicaLosses
from vqkeras.layers import checks
from vqkeras.layers.bottleneck import Bottleneck
from vqkeras.layers.codebook_updates import UPDATES


@keras.saving.register_keras_serializable(package="vqkeras")
class VectorQuantizer(PerReplicaLosses, Bottleneck):
  """Vector-quantization bottleneck with gradient, hard-EM (EMA) or soft-EM codebooks.

  Each input vector z_e of depth D is replaced by its code vector e_k (or, under
  soft EM in training, by the mean of m sampled code vectors); gradients pass
  straight through to z_e. With `num_blocks = B` the vector is cut into B slices of
  D/B and each slice is quantized with a codebook of its own (product
  quantization, docs/papers.md section 3): a position then has B codes.

  Losses, added with `add_loss`: the commitment loss beta ||z_e - sg[e]||^2 and,
  for `update="gradient"`, the codebook loss ||sg[z_e] - e||^2; both are means over
  the valid (unmasked) positions of the global batch and the depth.

  Distribution: the batch's counts and sums are summed over the replicas inside
  the step, so every replica applies the same update and holds the same codebook
  as single-device training on the global batch. Distances and codebook statistics
  are float32 under any mixed-precision policy.

  Args:
    codebook_size: K, the number of codes per block, at least 2.
    update: "gradient", "ema" (= "hard_em") or "soft_em".
    num_samples: m, the codes sampled per position under soft EM, at least 1.
    decay: lambda of the EMA M-step, in [0, 1).
    epsilon: Laplace smoothing of the counts, > 0.
    beta: weight of the commitment loss, >= 0.
    num_blocks: B, the number of codebook slices; must divide the input depth.
    temperature: T > 0; soft EM samples from softmax(-||z - e||^2 / T).
    usage_window: W, the number of training steps over which a code counts as
      used; the health metrics count codes used within the last W steps. A code
      is used at a step when it is the nearest code of a valid position; under
      soft EM a code that is only drawn as a sample is not.
    restart_dead_codes: if True, the codes start on random encoder outputs of the
      first training batch (a data initialization, as k-means starts on data
      points), and later a code unused for W steps is moved onto a random encoder
      output of the current global batch, and again every W steps while it stays
      unused (a restart is not a use: the health metrics count it dead); the same
      on every replica.
    codebook_initializer: a Keras initializer for the `[B, K, D/B]` codebook;
      default uniform in +-sqrt(3/K), Tensor2Tensor's unit scaling.
    distance: "euclidean", or "cosine": inputs and codes are l2-normalized (each
      block's slice) before quantization, so the nearest code is the most similar in
      direction and the output is a unit code vector (each slice); the commitment
      loss and the EMA statistics are of the normalized inputs.
    codebook_dim: if set, the codebook lives in this lower dimension: a learned
      `Dense(codebook_dim)` projects the inputs in and a `Dense(D)` projects the
      code vectors out (the commitment loss and codebook statistics are in the lower
      dimension; num_blocks must divide codebook_dim).
    rotation_trick: if True, gradients reach the inputs through the rotation and
      rescaling that take each input (slice) to its code vector (Fifty et al. 2024,
      `quantization.rotation_trick`) instead of straight through.
    codebook_transform: None, or "linear" (SimVQ): the code vectors are C W, C the
      codebook variable, frozen at its random start, and W a learned `[d, d]` map per
      block (starting at the identity), trained by the codebook loss; needs
      update="gradient" and no restarts or k-means (they would move C, not the codes).
    orthogonal_weight: w >= 0, the weight of the orthogonal regularization of the code
      vectors in training: per block, mean_ij cos(e_i, e_j)^2 - 1/n over n codes (0 when
      they are orthogonal); it needs a codebook trained by gradient (update="gradient").
      Costs n^2 d per block and step.
    orthogonal_used_only: if True, the regularization is over the codes the global
      batch used (nearest codes) only.
    seed: int seed of the soft-EM sampler and the restarts; drawn at random if None.
    max_distance_elements: the largest number of distances held at once; larger
      batches are quantized in chunks of rows.
    **kwargs: `keras.layers.Layer` arguments (name, dtype, ...).

  Call arguments:
    inputs: float `[..., D]`, such as `[batch, height, width, D]` or `[batch, length, D]`.
    training: bool; True samples codes (soft EM) and updates the codebook state,
      unless the layer is frozen (`trainable=False`): then it runs as in inference.
    mask: optional bool `[...]` (Keras masking or explicit); False positions are
      left out of the codebook statistics, the losses and the health metrics.
    return_codes: if True, return a `Quantized` record: quantized `[..., D]`, codes
      `[..., B]` int32 (the nearest codes), and samples `[..., B, m]` int32 (under soft
      EM m = num_samples: in training the codes drawn, outside it the nearest code m
      times; m = 1 otherwise), the targets of a latent predictor (see
      `quantization.sample_cross_entropy`).

  Returns:
    the quantized tensor (gradients straight through, or by the rotation trick), same
    shape as `inputs`, in the layer's compute dtype; or the record above.
  """

  def __init__(self,
               codebook_size,
               update="ema",
               num_samples=10,
               decay=0.99,
               epsilon=1e-5,
               beta=0.25,
               num_blocks=1,
               temperature=1.0,
               usage_window=100,
               restart_dead_codes=False,
               codebook_initializer=None,
               distance="euclidean",
               codebook_dim=None,
               rotation_trick=False,
               codebook_transform=None,
               orthogonal_weight=0.0,
               orthogonal_used_only=False,
               seed=None,
               max_distance_elements=2**25,
               **kwargs):
    super().__init__(**kwargs)
    _check(isinstance(codebook_size, int) and codebook_size >= 2, "codebook_size",
           codebook_size, "an integer of at least 2")
    _check(update in UPDATES, "update", update, "one of " + ", ".join(map(repr, UPDATES)))
    _check(isinstance(num_samples, int) and num_samples >= 1, "num_samples", num_samples,
           "an integer of at least 1")
    _check(0.0 <= decay < 1.0, "decay", decay, "a float in [0, 1)")
    _check(epsilon > 0.0, "epsilon", epsilon, "a float > 0")
    _check(beta >= 0.0, "beta", beta, "a float >= 0")
    _check(isinstance(num_blocks, int) and num_blocks >= 1, "num_blocks", num_blocks,
           "an integer of at least 1 that divides the input depth")
    _check(temperature > 0.0, "temperature", temperature, "a float > 0")
    _check(isinstance(usage_window, int) and usage_window >= 1, "usage_window",
           usage_window, "an integer of at least 1")
    _check(distance in ("euclidean", "cosine"), "distance", distance,
           "'euclidean' or 'cosine'")
    _check(codebook_dim is None or (isinstance(codebook_dim, int) and codebook_dim >= 1),
           "codebook_dim", codebook_dim, "None or a positive integer")
    _check(codebook_transform in (None, "linear"), "codebook_transform", codebook_transform,
           "None or 'linear' (SimVQ)")
    if codebook_transform is not None:
      _check(update == "gradient", "update", update,
             "'gradient' with codebook_transform='linear' (SimVQ learns its map by the "
             "codebook loss; the EMA rules would move the frozen basis)")
      _check(not restart_dead_codes, "restart_dead_codes", restart_dead_codes,
             "False with codebook_transform='linear' (a restart moves the frozen basis, "
             "not the code vectors)")
    _check(orthogonal_weight >= 0.0, "orthogonal_weight", orthogonal_weight, "a float >= 0")
    _check(orthogonal_weight == 0.0 or update == "gradient", "orthogonal_weight",
           orthogonal_weight, f"0 under update={update!r} (the EMA rules move the codebook "
           f"without gradients; regularize with update='gradient')")
    _check(max_distance_elements >= codebook_size * num_blocks, "max_distance_elements",
           max_distance_elements, f"at least codebook_size * num_blocks = "
           f"{codebook_size * num_blocks}")
    self.codebook_size = codebook_size
    self.update = "ema" if update == "hard_em" else update
    # vqkeras/layers/codebook_updates.py: the rule owns its parameters and state.
    self.rule = UPDATES[update].of(decay, epsilon, num_samples, temperature)
    self.num_samples = num_samples
    self.decay = float(decay)
    self.epsilon = float(epsilon)
    self.beta = float(beta)
    self.num_blocks = num_blocks
    self.temperature = float(temperature)
    self.usage_window = usage_window
    self.restart_dead_codes = bool(restart_dead_codes)
    self.codebook_initializer = keras.initializers.get(codebook_initializer or
                                                       keras.initializers.RandomUniform(
                                                           -math.sqrt(3.0 / codebook_size),
                                                           math.sqrt(3.0 / codebook_size),
                                                           seed=seed))
    self._initializer_given = codebook_initializer is not None
    self.distance = distance
    self.codebook_dim = codebook_dim
    self.rotation_trick = bool(rotation_trick)
    self.codebook_transform = codebook_transform
    self.orthogonal_weight = float(orthogonal_weight)
    self.orthogonal_used_only = bool(orthogonal_used_only)
    self.seed = checks.seed_or_random(seed)
    self.max_distance_elements = int(max_distance_elements)
    self.create_usage_metrics()

  def build(self, input_shape):
    depth = checks.known_depth(self.name, input_shape)
    self.input_depth = depth
    if self.codebook_dim is not None:
      # Float32 as the codebook: the distances are computed from their outputs.
      self.project_in = keras.layers.Dense(self.codebook_dim, name="project_in",
                                           dtype="float32")
      self.project_out = keras.layers.Dense(depth, name="project_out", dtype="float32")
      self.project_in.build((None, depth))
      self.project_out.build((None, self.codebook_dim))
      depth = self.codebook_dim
    _check(depth % self.num_blocks == 0, "num_blocks", self.num_blocks,
           f"a divisor of the {'input' if self.codebook_dim is None else 'codebook'} "
           f"depth {depth}")
    self.depth = depth
    self.block_depth = depth // self.num_blocks
    shape = (self.num_blocks, self.codebook_size, self.block_depth)
    # Float32 and never autocast: distances and statistics stay float32 under
    # mixed precision (half precision breaks distances and Laplace smoothing).
    self.embeddings = self.add_weight(
        name="codebook", shape=shape, dtype="float32", autocast=False,
        initializer=self.codebook_initializer,
        trainable=self.rule.trainable_codebook and self.codebook_transform is None)
    if self.codebook_transform == "linear":
      self.code_transform = self.add_weight(
          name="code_transform", shape=(self.num_blocks, self.block_depth, self.block_depth),
          dtype="float32", autocast=False, initializer=block_identity)
    # The rule's variables are the layer's weights, under their names (checkpoint paths).
    for name, variable in self.rule.build(self.add_weight, self.embeddings).items():
      setattr(self, name, variable)
    self.build_usage(shape[:2])

  @property
  def codes_per_position(self):
    """B: the codes of a position (one per codebook block)."""
    return self.num_blocks

  # Public views of the state.

  @property
  def codebook(self):
    """The current code vectors (unit vectors under the cosine distance): `[K, D]`, or
    `[B, K, D/B]` with `num_blocks = B > 1` (D: codebook_dim if set)."""
    value = self._codebook_without_gradient()
    return value[0] if self.num_blocks == 1 else value

  # Encoding and decoding without state changes.

  def encode(self, inputs):
    """Nearest codes of float `[..., D]` inputs: int32 `[..., B]`."""
    x = self._checked_inputs(inputs)
    if not self.built:
      self.build(x.shape)
    x = self._projected_in(x)
    codes = quantization.nearest_codes(self._input_blocks(x), self._codebook_without_gradient(),
                                       self.max_rows())
    return self._from_blocks(codes[..., None], tf.shape(x)[:-1])[..., 0]

  def decode(self, codes):
    """Code vectors of int `[..., B]` codes: float32 `[..., D]`."""
    codes = checks.position_codes(self.name, codes, self.num_blocks, "num_blocks")
    outer = tf.shape(codes)[:-1]
    blocks = tf.transpose(tf.reshape(tf.cast(codes, tf.int32), [-1, self.num_blocks]))
    vectors = quantization.lookup(self._codebook_without_gradient(),
                                  quantization.hard_assignments(blocks))
    return self._projected_out(self._from_blocks(vectors, outer))

  def kmeans_init(self, inputs, mask=None, iterations=10):
    """Starts the codebook at the k-means centroids of a batch (Lloyd's iterations).

    The codes start on inputs drawn at random (one draw for all replicas, as dead-code
    restarts draw); each iteration gives every valid input its nearest code and moves
    every code that has inputs to their mean (counts and sums summed over the
    replicas, so every replica holds the codebook one device would compute on the
    global batch); a code without inputs keeps its place. The EMA statistics restart
    from the result, each code weighing as one vector. Call it once before training,
    eagerly or in `strategy.run` on the first global batch of encoder outputs, e.g.
    `vq.kmeans_init(encoder(first_batch))`; it is not part of the training step (a
    collective inside a conditional is not supported by MirroredStrategy).

    Args:
      inputs: float `[..., D]` encoder outputs.
      mask: optional bool `[...]`, False at positions to leave out.
      iterations: Lloyd iterations after the draw (0: the drawn inputs).

    Returns:
      int32 `[B, K]`, how many inputs each code had in the last assignment.
    """
    _check(isinstance(iterations, int) and iterations >= 0, "iterations", iterations,
           "an integer >= 0")
    _check(self.codebook_transform is None, "codebook_transform", self.codebook_transform,
           "None for kmeans_init (it would set the frozen basis, not the code vectors)")
    x = self._checked_inputs(inputs)
    if not self.built:
      self.build(x.shape)
    x_blocks = self._input_blocks(self._projected_in(x))
    valid = None if mask is None else tf.reshape(tf.cast(mask, tf.bool), [-1])
    codebook, _ = self._drawn_inputs(x_blocks, valid,
                                     self.step_seed(salt=2, per_replica=False))
    counts = tf.zeros(codebook.shape[:2], tf.float32)
    for _ in range(iterations):
      codes = quantization.nearest_codes(x_blocks, self.code_vectors_of(codebook),
                                         self.max_rows())
      counts, sums = sum_over_replicas(quantization.assignment_statistics(
          x_blocks, quantization.hard_assignments(codes), valid, self.codebook_size))
      codebook = tf.where(counts[..., None] > 0,
                          sums / tf.maximum(counts, 1.0)[..., None], codebook)
    self.embeddings.assign(codebook)
    self.rule.restarted(tf.ones(codebook.shape[:2], tf.bool), codebook)
    return tf.cast(tf.round(counts), tf.int32)

  # The forward pass.

  def call(self, inputs, training=None, mask=None, return_codes=False):
    # Frozen (trainable=False), the layer runs as in inference, as Keras'
    # BatchNormalization does: nearest codes, no codebook or usage updates.
    training = bool(training) and self.trainable
    x = self._projected_in(self._checked_inputs(inputs))
    outer = tf.shape(x)[:-1]
    valid = None if mask is None else tf.reshape(tf.cast(mask, tf.bool), [-1])
    x_blocks = self._input_blocks(x)
    # The code vectors once (unit vectors under the cosine distance); the E-step never
    # differentiates the distances, the gradient rule's output reads them with a gradient.
    differentiable_codebook = self.code_vectors_of(self.embeddings)
    codebook = tf.stop_gradient(differentiable_codebook)
    e_step = self.rule.e_step(x_blocks, codebook, training,
                              self.step_seed(salt=0) if training else None, self.max_rows())
    codes, samples = e_step.codes, e_step.samples

    code_vectors = self.rule.code_vectors(codebook, differentiable_codebook)
    quantized_blocks = quantization.lookup(code_vectors, e_step.assignments)
    quantized = self._from_blocks(quantized_blocks, [-1])
    flat = (self._from_blocks(x_blocks, [-1]) if self.distance == "cosine"
            else tf.reshape(x, [-1, self.depth]))
    self._add_losses(flat, quantized, valid)

    counts, sums = quantization.assignment_statistics(
        x_blocks, e_step.assignments, valid, self.codebook_size,
        with_sums=training and self.rule.needs_sums)
    # A code is in use when it is the nearest code of some position. Drawn samples
    # (soft EM) reach far codes too: counted by samples, no code would ever be dead.
    statistics = {"counts": counts}
    if sums is not None:
      statistics["sums"] = sums
    if e_step.sampled:
      statistics["nearest_counts"], _ = quantization.assignment_statistics(
          x_blocks, quantization.hard_assignments(codes), valid, self.codebook_size,
          with_sums=False)
    statistics = sum_over_replicas(statistics)
    statistics.setdefault("nearest_counts", statistics["counts"])   # hard assignments
    batch_perplexity = quantization.perplexity(statistics["counts"])
    if training and self.orthogonal_weight > 0.0:
      used = statistics["nearest_counts"] > 0.0 if self.orthogonal_used_only else None
      self.add_loss(self.orthogonal_weight *
                    quantization.orthogonal_loss(differentiable_codebook, used))
    if training:
      self._apply_updates(x_blocks, statistics, valid, batch_perplexity)
    self.update_usage_metrics(batch_perplexity, training)

    if self.rotation_trick:   # each block's slice turns onto its own code vector
      outputs = self._from_blocks(
          quantization.rotation_trick(x_blocks, quantized_blocks), [-1])
    else:
      outputs = quantization.straight_through(flat, quantized)
    outputs = self._projected_out(tf.reshape(outputs, tf.shape(x)))
    outputs = tf.cast(outputs, self.compute_dtype)
    if not return_codes:
      return outputs
    if samples.shape[-1] != self._samples_per_position():
      samples = tf.tile(samples, [1, 1, self._samples_per_position()])
    return self.quantized(outputs, self._from_blocks(codes[..., None], outer)[..., 0],
                          self._from_blocks(samples, outer))

  def _samples_per_position(self):
    """m under soft EM (outside training: the nearest code m times), else 1."""
    return self.rule.samples_per_position

  def _add_losses(self, x, quantized, valid):
    """Commitment loss (and the rule's: the codebook loss of "gradient"), means over valid
    entries."""
    def masked_mean_square(a, b):
      return global_mean(tf.reduce_mean(tf.square(a - b), axis=-1), valid)
    self.add_loss(self.beta * masked_mean_square(x, tf.stop_gradient(quantized)))
    for loss in self.rule.extra_losses(x, quantized, masked_mean_square):
      self.add_loss(loss)

  def _apply_updates(self, x_blocks, statistics, valid, batch_perplexity):
    """The M-step and the usage bookkeeping of one training step, the same on every replica.

    statistics: the global batch's "counts" and "sums" (the M-step's), and
    "nearest_counts", how often each code was the nearest code (the usage).
    """
    step = self.record_usage(statistics["nearest_counts"], statistics["counts"],
                             batch_perplexity)
    self.rule.m_step(self.embeddings, statistics)
    if self.restart_dead_codes:
      self._restart_dead_codes(x_blocks, valid, step)

  def _restart_dead_codes(self, x_blocks, valid, step):
    """Moves codes unused for a multiple of `usage_window` steps (every code at the
    first step) onto encoder outputs of this batch.

    At the first step every code restarts: codes that start far from the encoder
    outputs would otherwise stay unused for a whole window, and under the EMA
    M-step, whose running sums start at the initial codebook with count 0, a code
    with few vectors is its initial value divided by a tiny smoothed count.
    Every replica restarts to the same vectors, the ones single-device training
    would pick (`_drawn_inputs`).
    """
    unused_for = step - tf.convert_to_tensor(self.last_used)
    dead = ((unused_for > 0) & (unused_for % self.usage_window == 0)) | (step == 1)
    candidates, num_global = self._drawn_inputs(x_blocks, valid,
                                                self.step_seed(salt=1, per_replica=False))
    dead = dead & (num_global > 0)
    self.embeddings.assign(tf.where(dead[..., None], candidates, self.embeddings))
    self.rule.restarted(dead, candidates)

  def _drawn_inputs(self, x_blocks, valid, seed):
    """`[B, K, d]` valid input vectors drawn at random from the global batch, the same on
    every replica (0 where the global batch has none), and the global batch's number of
    valid vectors.

    The rows are drawn among the valid rows of the global batch with a seed shared by
    all replicas; each replica supplies the rows it holds (replica r holds the r-th
    slice) and a sum over replicas assembles them.
    """
    rows = tf.range(tf.shape(x_blocks)[1])
    if valid is not None:
      rows = tf.boolean_mask(rows, valid)
    num_local = tf.shape(rows)[0]
    sizes = tf.one_hot(replica_id(), num_replicas()) * tf.cast(num_local, tf.float32)
    sizes = tf.cast(sum_over_replicas(sizes), tf.int32)
    offset = tf.reduce_sum(sizes[:replica_id()])
    num_global = tf.reduce_sum(sizes)
    picks = tf.random.stateless_uniform(
        [self.num_blocks, self.codebook_size], seed,
        minval=0, maxval=tf.maximum(num_global, 1), dtype=tf.int32) - offset
    held = (picks >= 0) & (picks < num_local)
    local_rows = tf.gather(rows, tf.clip_by_value(picks, 0, tf.maximum(num_local - 1, 0)))
    candidates = tf.gather(x_blocks, local_rows, batch_dims=1)
    return sum_over_replicas(tf.where(held[..., None], candidates, 0.0)), num_global

  # Helpers.

  def _checked_inputs(self, inputs):
    x = checks.float_inputs(self.name, inputs)
    if x.shape.rank is not None and x.shape.rank < 2:
      raise ValueError(f"{self.name} expects inputs of shape [..., depth] with at least "
                       f"2 dimensions, got {x.shape}.")
    if self.built and x.shape[-1] != self.input_depth:
      raise ValueError(f"{self.name} was built for inputs of depth {self.input_depth}, got last "
                       f"dimension {x.shape[-1]} (input shape {x.shape}); the depth cannot "
                       f"change after the first call.")
    return tf.cast(x, tf.float32)

  def _codebook_without_gradient(self):
    """The code vectors without gradient: the E-step never differentiates the distances."""
    return tf.stop_gradient(self.code_vectors_of(self.embeddings))

  def code_vectors_of(self, embeddings):
    """The code vectors `[B, K, d]` of the codebook variable: under SimVQ its product
    with the learned map; unit vectors under the cosine distance (the variable holds the
    EMA means, of any norm)."""
    embeddings = tf.convert_to_tensor(embeddings)
    if self.codebook_transform == "linear":
      embeddings = tf.matmul(embeddings, self.code_transform)
    if self.distance == "cosine":
      return tf.math.l2_normalize(embeddings, axis=-1, epsilon=1e-12)
    return embeddings

  def _input_blocks(self, x):
    """`[..., D]` inputs to the `[B, N, D/B]` vectors quantized: unit slices under the
    cosine distance."""
    blocks = self._to_blocks(x)
    if self.distance == "cosine":
      return tf.math.l2_normalize(blocks, axis=-1, epsilon=1e-12)
    return blocks

  def _projected_in(self, x):
    """Inputs `[..., D]` to the codebook's dimension (the identity without codebook_dim)."""
    return x if self.codebook_dim is None else self.project_in(x)

  def _projected_out(self, vectors):
    """Code-space vectors back to the input depth (the identity without codebook_dim)."""
    return vectors if self.codebook_dim is None else self.project_out(vectors)

  def max_rows(self):
    """The most vectors whose distances to every code are held at once."""
    return max(1, self.max_distance_elements // (self.codebook_size * self.num_blocks))

  def _to_blocks(self, x):
    """`[..., D]` to `[B, N, D/B]`."""
    flat = tf.reshape(x, [-1, self.num_blocks, self.block_depth])
    if self.num_blocks == 1:
      return tf.reshape(flat, [1, -1, self.block_depth])
    return tf.transpose(flat, [1, 0, 2])

  def _from_blocks(self, blocks, outer):
    """`[B, N, k]` to `outer + [B * k]` (vectors) with k = d, or `outer + [B, k]` for codes."""
    if blocks.dtype.is_integer:
      per_position = tf.transpose(blocks, [1, 0, 2])
      return tf.reshape(per_position,
                        tf.concat([outer, [self.num_blocks, blocks.shape[-1] or -1]], 0))
    if self.num_blocks == 1:
      per_position = blocks[0]
    else:
      per_position = tf.transpose(blocks, [1, 0, 2])
    return tf.reshape(per_position, tf.concat([outer, [self.depth]], 0))

  def compute_output_spec(self, inputs, training=None, mask=None, return_codes=False):
    return self.output_spec(inputs, return_codes, self._samples_per_position())

  def get_config(self):
    config = super().get_config()
    config.update({
        "codebook_size": self.codebook_size,
        "update": self.update,
        "num_samples": self.num_samples,
        "decay": self.decay,
        "epsilon": self.epsilon,
        "beta": self.beta,
        "num_blocks": self.num_blocks,
        "temperature": self.temperature,
        "usage_window": self.usage_window,
        "restart_dead_codes": self.restart_dead_codes,
        "codebook_initializer": (keras.initializers.serialize(self.codebook_initializer)
                                 if self._initializer_given else None),
        "distance": self.distance,
        "codebook_dim": self.codebook_dim,
        "rotation_trick": self.rotation_trick,
        "codebook_transform": self.codebook_transform,
        "orthogonal_weight": self.orthogonal_weight,
        "orthogonal_used_only": self.orthogonal_used_only,
        "seed": self.seed,
        "max_distance_elements": self.max_distance_elements,
    })
    return config


def block_identity(shape, dtype=None):
  """Identity matrices `[B, d, d]`: SimVQ's map starts at the random basis itself."""
  return tf.eye(shape[1], batch_shape=[shape[0]], dtype=dtype or "float32")


_check = functools.partial(checks.check_argument, "VectorQuantizer")
