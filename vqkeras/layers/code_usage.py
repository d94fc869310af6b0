"""Codebook health, shared by every layer of discrete codes: which codes are in use.

A layer with `B` blocks of `K` codes mixes in `CodeUsage`, creates its state with
`build_usage((B, K))` and, at each training step, passes the global batch's counts of
each code to `record_usage`. A code is used at a step when some valid position took
it; `codes_used` counts the codes used within the last `usage_window` training steps.

Above `MAX_TRACKED_CODES` codes (B x K: FSQ and LFQ reach 2^32) a layer keeps no
per-code state: its health is that of the last training batch alone, from the batch's
distinct codes (gathered over replicas): `codes_used` is how many distinct codes the
batch took, `dead_codes` the rest of the B x K, and there is no usage histogram.
`code_health` picks the right bookkeeping for a layer that only counts its codes.
"""

import math

import keras
import tensorflow as tf

from vqkeras import quantization
from vqkeras.distribute import gather_over_replicas, replica_id, sum_over_replicas

# The most codes (blocks x codes per block) whose usage a layer tracks one by one:
# 2^20 codes hold 12 MB of state.
MAX_TRACKED_CODES = 2 ** 20


class CodeUsage:
  """Health state and metrics of a layer's codes (see the module docstring).

  The layer sets `usage_window` before `build_usage` (and `seed` to draw with
  `step_seed`).
  """

  def create_usage_metrics(self):
    """The Keras metrics the health is also reported by (call in __init__)."""
    self.perplexity_metric = keras.metrics.Mean(name=f"{self.name}_perplexity")
    self.codes_used_metric = keras.metrics.Mean(name=f"{self.name}_codes_used")
    self.dead_codes_metric = keras.metrics.Mean(name=f"{self.name}_dead_codes")

  def build_usage(self, shape):
    """The usage state of `shape` = (blocks, codes per block): per code up to
    MAX_TRACKED_CODES codes, else only the last batch's (module docstring)."""
    self.usage_shape = tuple(int(n) for n in shape)
    self.tracks_codes = math.prod(self.usage_shape) <= MAX_TRACKED_CODES
    self.num_updates = self.add_weight(
        name="num_updates", shape=(), dtype="int64", initializer="zeros", trainable=False)
    self.batch_perplexity = self.add_weight(
        name="batch_perplexity", shape=(), dtype="float32", autocast=False,
        initializer="zeros", trainable=False)
    if self.tracks_codes:
      self.last_used = self.add_weight(
          name="last_used", shape=shape, dtype="int64", initializer="zeros", trainable=False)
      self.batch_counts = self.add_weight(
          name="batch_counts", shape=shape, dtype="float32", autocast=False,
          initializer="zeros", trainable=False)
    else:
      self.batch_codes_used = self.add_weight(
          name="batch_codes_used", shape=(), dtype="int64", initializer="zeros",
          trainable=False)

  def code_health(self, indices, mask, training):
    """Records (in training) and reports the health of a batch's codes, int `[..., B]`
    (B = usage_shape[0]); mask: None or bool `[...]`, False at positions to leave out.
    For layers whose statistics are the code counts alone (FSQ, LFQ, Gumbel)."""
    groups = self.usage_shape[0]
    if self.tracks_codes:
      counts = self.global_code_counts(indices, mask, groups)
      batch_perplexity = quantization.perplexity(counts)
      if training:
        self.record_usage(counts, counts, batch_perplexity)
    else:
      distinct, batch_perplexity = self.distinct_codes(indices, mask, groups)
      if training:
        self.num_updates.assign_add(1)
        self.batch_perplexity.assign(batch_perplexity)
        self.batch_codes_used.assign(distinct)
    self.update_usage_metrics(batch_perplexity, training)

  def distinct_codes(self, indices, mask, groups):
    """(distinct codes taken, perplexity averaged over the groups) of the global batch's
    valid positions, without per-code state: the batch's codes are gathered over the
    replicas and counted with `unique`. indices: int `[..., groups]` in [0, K)."""
    codebook_size = self.usage_shape[1]
    ids = (tf.reshape(tf.cast(indices, tf.int64), [-1, groups]) +
           tf.range(groups, dtype=tf.int64) * codebook_size)
    if mask is not None:
      valid = tf.reshape(tf.cast(mask, tf.bool), [-1])[:, None]
      ids = tf.where(valid, ids, -1)
    ids = gather_over_replicas(tf.reshape(ids, [-1]))
    distinct, _, counts = tf.unique_with_counts(ids)
    taken = distinct >= 0
    distinct, counts = distinct[taken], tf.cast(counts[taken], tf.float32)
    group = distinct // codebook_size
    totals = tf.math.unsorted_segment_sum(counts, group, groups)
    probs = counts / tf.gather(totals, group)
    entropy = tf.math.unsorted_segment_sum(-probs * tf.math.log(probs), group, groups)
    perplexity = tf.reduce_mean(tf.where(totals > 0.0, tf.exp(entropy), 0.0))
    return tf.size(distinct, out_type=tf.int64), perplexity

  def global_code_counts(self, indices, mask, groups=1):
    """How many valid positions of the global batch took each code of each group,
    `[groups, K]`, from int indices `[..., groups]` in [0, K) (`self.codebook_size`);
    mask: None or bool `[...]`, False at positions to leave out."""
    ids = tf.reshape(indices, [-1, groups]) + tf.range(groups) * self.codebook_size
    if mask is not None:
      valid = tf.reshape(tf.cast(mask, tf.bool), [-1])[:, None]
      ids = tf.where(valid, ids, -1)   # dropped below
    counts = tf.math.unsorted_segment_sum(tf.ones_like(ids, tf.float32), ids,
                                          groups * self.codebook_size)
    return tf.reshape(sum_over_replicas(counts), [groups, self.codebook_size])

  def codes_used(self):
    """Codes (summed over blocks) used within the last `usage_window` training steps
    (above MAX_TRACKED_CODES: in the last training batch, int64)."""
    if not self.tracks_codes:
      return tf.convert_to_tensor(self.batch_codes_used)
    return tf.reduce_sum(tf.cast(self._used_in_window(), tf.int32))

  def dead_codes(self):
    """Codes (summed over blocks) not used within the last `usage_window` training steps
    (above MAX_TRACKED_CODES: in the last training batch, int64)."""
    return math.prod(self.usage_shape) - self.codes_used()

  def usage_histogram(self):
    """The last training batch's count of each code, flat `[B * K]`, or None when the
    layer keeps no per-code state."""
    return tf.reshape(self.batch_counts, [-1]) if self.tracks_codes else None

  def health(self):
    """Last training batch perplexity, codes used and dead codes.

    The last training batch's count of each code is `batch_counts` `[B, K]`.
    """
    return {"perplexity": tf.convert_to_tensor(self.batch_perplexity),
            "codes_used": self.codes_used(), "dead_codes": self.dead_codes()}

  def step_seed(self, salt, per_replica=True):
    """A stateless seed of the layer's `seed` that differs per training step and per use
    (`salt`), and per replica; it lives in the checkpoint (`num_updates`)."""
    seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.num_updates, tf.int64)])
    seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int32), salt)
    if not per_replica:
      return seed
    return tf.random.experimental.stateless_fold_in(seed, replica_id())

  def _used_in_window(self):
    last_used = tf.convert_to_tensor(self.last_used)
    return (last_used > 0) & (last_used > tf.convert_to_tensor(self.num_updates) -
                              self.usage_window)

  def record_usage(self, used_counts, counts, batch_perplexity):
    """One training step's bookkeeping; returns the step's number (from 1).

    Args:
      used_counts: `[B, K]` global-batch counts of the positions that took each code.
      counts: `[B, K]` the batch's counts as reported (`batch_counts`).
      batch_perplexity: `quantization.perplexity(counts)`.
    """
    step = self.num_updates + 1
    self.num_updates.assign(step)
    self.last_used.assign(tf.where(used_counts > 0.0, step, self.last_used))
    self.batch_perplexity.assign(batch_perplexity)
    self.batch_counts.assign(counts)
    return step

  def update_usage_metrics(self, batch_perplexity, training):
    """Updates the Keras metrics of the health (codes used and dead codes in training)."""
    if training:
      used = self.codes_used()
      self.codes_used_metric.update_state(used)
      self.dead_codes_metric.update_state(math.prod(self.usage_shape) - used)
    self.perplexity_metric.update_state(batch_perplexity)
