"""Glancing (GLAT, Qian et al. 2021): which positions of a parallel pass are given the
target's values, and the schedule of the ratio.

A first pass predicts every position; then n = ceil(ratio x its wrong predictions) random
positions of each row get the target's value as input (a code or a token), and the second
pass learns the rest. The ratio falls during training, so the model moves from filling
in a few gaps to predicting everything at once, as translation asks of it.
"""

import tensorflow as tf


def glancing_mask(wrong, in_use, ratio, scores):
  """The positions whose target value the second pass reads, `[batch, L]` bool.

  In each row, n = ceil(ratio x its wrong positions) positions in use are picked: those of
  the n lowest `scores` (uniform draws in training, so n random positions, right or wrong,
  as GLAT picks them). A row the first pass gets right reads only its predictions.

  Args:
    wrong: `[batch, L]` bool, True where the first pass's prediction is not the target's.
    in_use: `[batch, L]` bool, True at real positions.
    ratio: the glancing ratio, a float in [0, 1].
    scores: `[batch, L]` float, the order in which positions are picked.
  """
  num_wrong = tf.reduce_sum(tf.cast(wrong & in_use, tf.float32), axis=1)
  # The tolerance keeps ratios that floats cannot hold (0.3 x 10 = 3.0000001) at their ceil.
  num_picked = tf.cast(tf.math.ceil(ratio * num_wrong - 1e-4), tf.int32)
  scores = tf.where(in_use, tf.cast(scores, tf.float32), float("inf"))
  ranks = tf.argsort(tf.argsort(scores, axis=1, stable=True), axis=1, stable=True)
  return ranks < num_picked[:, None]


def annealed_ratio(start, end, step, steps):
  """The glancing ratio at `step` (a tensor) of `steps`: `start` falling linearly to `end`,
  then held."""
  progress = tf.minimum(1.0, tf.cast(step, tf.float32) / max(steps, 1))
  return start + progress * (end - start)
