"""Autoregressive search: greedy and beam search over a step function with a cache.

A step function maps (ids `[batch]` of the previous position, the position,
state) to (logits `[batch, vocab]` of the next token, new state); the state is
any nest of tensors whose first dimension is the batch (the attention caches),
and may grow along other dimensions from step to step. The first input is
`start_id`: padding (id 0) for the Transformer, as in training (`shift_right`).
"""

import tensorflow as tf

from vqkeras.tokenizer import PAD_ID

NEG_INF = -1.0e9


def _open_shape(tensor):
  """Shape invariant of a state tensor: only its rank is fixed."""
  return tf.TensorShape([None] * tensor.shape.rank)


def forbid(logits, token):
  """Rules a token out: its logit `[..., vocab]` becomes -1e9 (e.g. padding, which only follows EOS)."""
  return logits + tf.one_hot(token, tf.shape(logits)[-1], on_value=NEG_INF, off_value=0.0,
                             dtype=logits.dtype)


def greedy_search(step, state, batch_size, max_length, eos_id, start_id=PAD_ID, pad_id=PAD_ID):
  """The most likely token at every step, until EOS or max_length.

  Returns:
    ids `[batch, length]`: each row ends with EOS (unless it reached
    max_length), then pad_id; length is at most max_length.
  """
  def body(position, previous, finished, outputs, state):
    logits, state = step(previous, position, state)
    ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
    ids = tf.where(finished, pad_id, ids)
    return (position + 1, ids, finished | tf.equal(ids, eos_id), outputs.write(position, ids),
            state)

  def not_done(position, previous, finished, outputs, state):
    return (position < max_length) & ~tf.reduce_all(finished)

  start = (tf.constant(0), tf.fill([batch_size], start_id), tf.zeros([batch_size], tf.bool),
           tf.TensorArray(tf.int32, size=0, dynamic_size=True), state)
  invariants = (tf.TensorShape([]), tf.TensorShape([None]), tf.TensorShape([None]),
                tf.TensorShape(None), tf.nest.map_structure(_open_shape, state))
  _, _, _, outputs, _ = tf.while_loop(not_done, body, start, shape_invariants=invariants)
  return tf.transpose(outputs.stack())


def tile_beams(structure, beam_size):
  """Repeats every tensor of a nest beam_size times along the batch: `[b, ...]` to `[b*k, ...]`."""
  return tf.nest.map_structure(lambda t: tf.repeat(t, beam_size, axis=0), structure)


def length_penalty(length, alpha):
  """((5 + length) / 6)^alpha of Wu et al. 2016, the divisor of a hypothesis' log-probability."""
  return tf.pow((5.0 + tf.cast(length, tf.float32)) / 6.0, alpha)


def beam_search(step, state, batch_size, beam_size, max_length, eos_id, alpha=0.0,
                start_id=PAD_ID, pad_id=PAD_ID):
  """Beam search with a length penalty (the search of Tensor2Tensor).

  Every step extends the `beam_size` alive hypotheses by every token and keeps
  the 2*beam_size best extensions: those ending in EOS compete for the finished
  set by their score log p / length_penalty, the others for the alive set by
  log p. The search stops when no alive hypothesis can beat the best finished
  one, or at max_length.

  Args:
    step: the step function (module docstring); its state is tiled: `[b*k, ...]`.
    state: the initial state, already `[batch * beam_size, ...]`.
    alpha: the length penalty's exponent; 0 ranks by log-probability.

  Returns:
    (ids `[batch, length]` of the best hypothesis, ending with EOS unless it
    reached max_length, then pad_id; its score `[batch]`).
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
    alive_log_probs, picked = tf.math.top_k(tf.where(ends, NEG_INF, top_log_probs), k)
    alive = tf.gather(top_sequences, picked, batch_dims=1)
    source_beam = tf.gather(beam, picked, batch_dims=1) + tf.range(batch_size)[:, None] * k
    state = tf.nest.map_structure(lambda t: tf.gather(t, tf.reshape(source_beam, [-1])), state)

    # The finished set: the best k of the old finished and the extensions that ended.
    scores = tf.where(ends, top_log_probs / length_penalty(position + 1, alpha), NEG_INF)
    finished = tf.pad(finished, [[0, 0], [0, 0], [0, 1]], constant_values=pad_id)
    finished_scores, picked = tf.math.top_k(tf.concat([finished_scores, scores], axis=1), k)
    finished = tf.gather(tf.concat([finished, top_sequences], axis=1), picked, batch_dims=1)
    return position + 1, alive, alive_log_probs, finished, finished_scores, state

  def not_done(position, alive, alive_log_probs, finished, finished_scores, state):
    # Log-probabilities only fall as hypotheses grow, and the penalty is largest at
    # max_length: no alive hypothesis can score above this bound.
    best_alive_bound = alive_log_probs[:, 0] / length_penalty(max_length, alpha)
    can_improve = tf.reduce_any(best_alive_bound > finished_scores[:, 0])
    return (position < max_length) & can_improve

  # Hypotheses start with the first input; it is dropped at the end.
  empty = tf.fill([batch_size, k, 1], start_id)
  first_alive = tf.tile(tf.constant([[0.0] + [NEG_INF] * (k - 1)]), [batch_size, 1])
  start = (tf.constant(0), empty, first_alive, empty, tf.fill([batch_size, k], NEG_INF), state)
  sequences = tf.TensorShape([None, k, None])
  invariants = (tf.TensorShape([]), sequences, tf.TensorShape([None, k]), sequences,
                tf.TensorShape([None, k]), tf.nest.map_structure(_open_shape, state))
  position, alive, alive_log_probs, finished, finished_scores, _ = tf.while_loop(
      not_done, body, start, shape_invariants=invariants)
  # An example with no finished hypothesis (it reached max_length) returns its best alive one.
  none_finished = finished_scores[:, 0] <= NEG_INF / 2
  ids = tf.where(none_finished[:, None], alive[:, 0, 1:], finished[:, 0, 1:])
  scores = tf.where(none_finished, alive_log_probs[:, 0] / length_penalty(position, alpha),
                    finished_scores[:, 0])
  return ids, scores
