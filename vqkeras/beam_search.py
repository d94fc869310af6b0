"""Autoregressive search: greedy and beam search over a step function with a cache.

A step function maps (ids `[batch]` of the previous position, the position,
state) to (logits `[batch, vocab]` of the next token, new state); the state is
any nest of tensors whose first dimension is the batch (the attention caches),
and may grow along other dimensions from step to step. The first input is
`start_id`: padding (id 0) for the Transformer, as in training (`shift_right`).
"""

import numpy as np
import tensorflow as tf

from vqkeras.tokenizer import PAD_ID

NEG_INF = -1.0e9


def open_shape(tensor):
  """Shape invariant of a state tensor: only its rank is fixed."""
  return tf.TensorShape([None] * tensor.shape.rank)


def forbid(logits, token):
  """Rules a token out: its logit `[..., vocab]` becomes -1e9 (e.g. padding, which only follows EOS)."""
  return logits + tf.one_hot(token, tf.shape(logits)[-1], on_value=NEG_INF, off_value=0.0,
                             dtype=logits.dtype)


def greedy_search(step, state, batch_size, max_length, eos_id, start_id=PAD_ID, pad_id=PAD_ID,
                  first_position=0, return_scores=False):
  """The most likely token at every step, until EOS or max_length.

  Args:
    start_id: the first input, a scalar or `[batch]` ids.
    first_position: the position of the first step; > 0 continues sequences whose first
      tokens are in `state` (the cache of their steps), start_id the last of them.
    return_scores: also return each row's log-probability of its tokens, the sum of
      log_softmax(logits) of every token up to and including EOS.

  Returns:
    ids `[batch, length]` of positions first_position..: each row ends with EOS (unless
    it reached max_length), then pad_id; length is at most max_length - first_position.
    With return_scores, (ids, scores `[batch]`).
  """
  def body(position, previous, finished, scores, outputs, state):
    logits, state = step(previous, position, state)
    ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
    ids = tf.where(finished, pad_id, ids)
    if return_scores:
      log_probs = tf.gather(tf.nn.log_softmax(tf.cast(logits, tf.float32)), ids, batch_dims=1)
      scores += tf.where(finished, 0.0, log_probs)
    return (position + 1, ids, finished | tf.equal(ids, eos_id), scores,
            outputs.write(position - first_position, ids), state)

  def not_done(position, previous, finished, scores, outputs, state):
    return (position < max_length) & ~tf.reduce_all(finished)

  start = (tf.constant(first_position), tf.broadcast_to(start_id, [batch_size]),
           tf.zeros([batch_size], tf.bool), tf.zeros([batch_size]),
           tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None]), state)
  invariants = (tf.TensorShape([]), tf.TensorShape([None]), tf.TensorShape([None]),
                tf.TensorShape([None]), tf.TensorShape(None),
                tf.nest.map_structure(open_shape, state))
  _, _, _, scores, outputs, _ = tf.while_loop(not_done, body, start,
                                              shape_invariants=invariants)
  ids = tf.reshape(tf.transpose(outputs.stack()), [batch_size, -1])
  return (ids, scores) if return_scores else ids


def search(step, state, batch_size, beam_size, max_length, eos_id, alpha=0.0, start_id=PAD_ID,
           pad_id=PAD_ID):
  """Ids `[batch, length]` of the best hypothesis: greedy search for beam_size 1, else beam
  search (its state tiled to `[batch * beam_size, ...]`)."""
  if beam_size == 1:
    return greedy_search(step, state, batch_size, max_length, eos_id, start_id, pad_id)
  return beam_search(step, state, batch_size, beam_size, max_length, eos_id, alpha, start_id,
                     pad_id)[0]


def tile_beams(structure, beam_size):
  """Repeats every tensor of a nest beam_size times along the batch: `[b, ...]` to `[b*k, ...]`."""
  return tf.nest.map_structure(lambda t: tf.repeat(t, beam_size, axis=0), structure)


def length_penalty(length, alpha):
  """((5 + length) / 6)^alpha of Wu et al. 2016, the divisor of a hypothesis' log-probability."""
  return tf.pow((5.0 + tf.cast(length, tf.float32)) / 6.0, alpha)


def beam_search(step, state, batch_size, beam_size, max_length, eos_id, alpha=0.0,
                start_id=PAD_ID, pad_id=PAD_ID):
  """The best hypothesis of `beam_hypotheses`: (ids `[batch, length]`, score `[batch]`).

  The search stops as soon as no alive hypothesis can beat the best finished one.
  """
  ids, scores = beam_hypotheses(step, state, batch_size, beam_size, max_length, eos_id, alpha,
                                start_id, pad_id, best_only=True)
  return ids[:, 0], scores[:, 0]


def beam_hypotheses(step, state, batch_size, beam_size, max_length, eos_id, alpha=0.0,
                    start_id=PAD_ID, pad_id=PAD_ID, best_only=False):
  """Beam search with a length penalty (the search of Tensor2Tensor).

  Every step extends the `beam_size` alive hypotheses by every token and ranks
  the extensions by log p. The best `beam_size` that do not end in EOS stay
  alive; those that end in EOS and rank among the best `beam_size` overall
  compete for the finished set by their score log p / length_penalty (as in
  fairseq: so beam size 1 is greedy search). The search stops when no alive
  hypothesis can beat the worst of the finished set (as T2T's), or at max_length.

  Args:
    step: the step function (module docstring); its state is tiled: `[b*k, ...]`.
    state: the initial state, already `[batch * beam_size, ...]`.
    alpha: the length penalty's exponent; 0 ranks by log-probability.
    best_only: stop when no alive hypothesis can beat the best finished one (the
      first hypothesis is the same; the others may not be the best k).

  Returns:
    (ids `[batch, beam_size, length]` of the beam_size best hypotheses, best first,
    each ending with EOS unless it reached max_length, then pad_id; their scores
    `[batch, beam_size]`, -inf or <= NEG_INF / 2, a path through a forbidden token,
    where fewer hypotheses were found). Hypotheses cut at
    max_length compete with the finished ones, scored at that length.
  """
  k = beam_size
  batch_beams = batch_size * k

  def body(position, alive, alive_log_probs, finished, finished_scores, state):
    logits, state = step(tf.reshape(alive[:, :, -1], [batch_beams]), position, state)
    vocab_size = tf.shape(logits)[-1]
    log_probs = tf.reshape(tf.nn.log_softmax(logits), [batch_size, k, -1])
    candidates = tf.reshape(alive_log_probs[:, :, None] + log_probs, [batch_size, -1])
    top_log_probs, top_index = tf.math.top_k(candidates, 2 * k)
    beam, token = top_index // vocab_size, top_index % vocab_size
    top_sequences = tf.concat([tf.gather(alive, beam, batch_dims=1), token[:, :, None]], axis=2)
    ends = tf.equal(token, eos_id)

    # The alive set: the best k extensions that did not end.
    alive_log_probs, picked = tf.math.top_k(tf.where(ends, -np.inf, top_log_probs), k)
    alive = tf.gather(top_sequences, picked, batch_dims=1)
    source_beam = tf.gather(beam, picked, batch_dims=1) + tf.range(batch_size)[:, None] * k
    state = tf.nest.map_structure(lambda t: tf.gather(t, tf.reshape(source_beam, [-1])), state)

    # The finished set: the best k of the old finished and the extensions that ended
    # among the best k.
    ends &= tf.range(2 * k)[None] < k
    scores = tf.where(ends, top_log_probs / length_penalty(position + 1, alpha), -np.inf)
    finished = tf.pad(finished, [[0, 0], [0, 0], [0, 1]], constant_values=pad_id)
    finished_scores, picked = tf.math.top_k(tf.concat([finished_scores, scores], axis=1), k)
    finished = tf.gather(tf.concat([finished, top_sequences], axis=1), picked, batch_dims=1)
    return position + 1, alive, alive_log_probs, finished, finished_scores, state

  def not_done(position, alive, alive_log_probs, finished, finished_scores, state):
    # Log-probabilities only fall as hypotheses grow, and the penalty is largest at
    # max_length: no alive hypothesis can score above this bound.
    best_alive_bound = alive_log_probs[:, 0] / length_penalty(max_length, alpha)
    can_improve = tf.reduce_any(best_alive_bound > finished_scores[:, 0 if best_only else -1])
    return (position < max_length) & can_improve

  # Hypotheses start with the first input; it is dropped at the end.
  empty = tf.fill([batch_size, k, 1], start_id)
  first_alive = tf.tile(tf.constant([[0.0] + [-np.inf] * (k - 1)]), [batch_size, 1])
  start = (tf.constant(0), empty, first_alive, empty, tf.fill([batch_size, k], -np.inf), state)
  sequences = tf.TensorShape([None, k, None])
  invariants = (tf.TensorShape([]), sequences, tf.TensorShape([None, k]), sequences,
                tf.TensorShape([None, k]), tf.nest.map_structure(open_shape, state))
  position, alive, alive_log_probs, finished, finished_scores, _ = tf.while_loop(
      not_done, body, start, shape_invariants=invariants)
  # Hypotheses cut at max_length compete with the finished ones, scored at their length
  # (top_k puts the finished one first on a tie).
  cut_scores = tf.where(position >= max_length,
                        alive_log_probs / length_penalty(position, alpha), -np.inf)
  scores, picked = tf.math.top_k(tf.concat([finished_scores, cut_scores], axis=1), k)
  ids = tf.gather(tf.concat([finished, alive], axis=1), picked, batch_dims=1)
  return ids[:, :, 1:], scores
