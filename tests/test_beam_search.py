"""Greedy and beam search against exhaustive search over a small Markov chain."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from vqkeras import beam_search

PAD, EOS = 0, 1
VOCAB = 4          # padding, EOS and two words
MAX_LENGTH = 5


def chain(seed):
  """Logits `[MAX_LENGTH, VOCAB (previous token), VOCAB]` of a position-dependent Markov chain."""
  rng = np.random.default_rng(seed)
  return rng.normal(size=(MAX_LENGTH, VOCAB, VOCAB)) * 2.0


def step_of(logits_table):
  table = tf.constant(logits_table, tf.float32)

  def step(previous, position, state):
    logits = tf.gather(table[position], previous)
    # The state only checks that beams carry it along: it counts the steps.
    return beam_search.forbid(logits, PAD), state + 1.0
  return step


def log_probs_np(logits_table):
  logits = logits_table.astype(np.float64)
  logits[..., PAD] = -np.inf
  return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def exhaustive_best(logits_table, alpha):
  """The best sequence (ending at EOS, or unfinished at MAX_LENGTH) and its score, in float64."""
  return exhaustive_ranking(logits_table, alpha)[0]


def exhaustive_ranking(logits_table, alpha):
  """Every sequence (ending at EOS, or unfinished at MAX_LENGTH) with its score, in float64,
  best first."""
  log_probs = log_probs_np(logits_table)
  ranking = []
  for length in range(1, MAX_LENGTH + 1):
    for words in itertools.product([2, 3], repeat=length - 1):
      for ending in ([EOS] if length < MAX_LENGTH else [EOS, 2, 3]):
        sequence = list(words) + [ending]
        previous, total = PAD, 0.0
        for position, token in enumerate(sequence):
          total += log_probs[position, previous, token]
          previous = token
        ranking.append((sequence, total / ((5.0 + length) / 6.0) ** alpha))
  return sorted(ranking, key=lambda pair: -pair[1])


def greedy_np(logits_table):
  log_probs = log_probs_np(logits_table)
  previous, sequence = PAD, []
  for position in range(MAX_LENGTH):
    previous = int(np.argmax(log_probs[position, previous]))
    sequence.append(previous)
    if previous == EOS:
      break
  return sequence


def unpadded(row):
  row = list(np.asarray(row))
  return row[:row.index(EOS) + 1] if EOS in row else [t for t in row if t != PAD]


@pytest.mark.parametrize("seed", range(6))
def test_greedy_search_takes_the_argmax_at_every_step(seed):
  table = chain(seed)
  ids = beam_search.greedy_search(step_of(table), tf.zeros([1, 1]), 1, MAX_LENGTH, EOS)
  assert unpadded(ids[0]) == greedy_np(table)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_wide_beam_search_finds_the_exhaustive_optimum(seed, alpha):
  table = chain(seed)
  beam = 2 ** MAX_LENGTH   # wider than the number of distinct hypotheses: nothing is pruned
  ids, scores = beam_search.beam_search(step_of(table), tf.zeros([beam, 1]), 1, beam, MAX_LENGTH,
                                     EOS, alpha)
  best, best_score = exhaustive_best(table, alpha)
  assert unpadded(ids[0]) == best
  np.testing.assert_allclose(scores[0], best_score, rtol=1e-5)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_hypotheses_of_a_beam_wider_than_all_sequences_are_the_exhaustive_ranking(seed,
                                                                                     alpha):
  table = chain(seed)
  ranking = exhaustive_ranking(table, alpha)   # 63 sequences
  beam = len(ranking) + 1
  ids, scores = beam_search.beam_hypotheses(step_of(table), tf.zeros([beam, 1]), 1, beam,
                                         MAX_LENGTH, EOS, alpha)
  assert [unpadded(row) for row in ids[0, :len(ranking)]] == [seq for seq, _ in ranking]
  np.testing.assert_allclose(scores[0, :len(ranking)], [score for _, score in ranking],
                             rtol=1e-5)
  # One slot more than there are sequences: it holds a path through a forbidden token.
  assert scores[0, -1] <= beam_search.NEG_INF / 2


@pytest.mark.parametrize("seed", range(6))
def test_beam_one_equals_greedy(seed):
  table = chain(seed)
  ids, _ = beam_search.beam_search(step_of(table), tf.zeros([1, 1]), 1, 1, MAX_LENGTH, EOS, 0.0)
  assert unpadded(ids[0]) == greedy_np(table)


def test_batched_searches_equal_searches_one_by_one():
  """Examples in a batch do not leak into each other (beam bookkeeping per example)."""
  tables = [chain(seed) for seed in range(3)]
  # One chain per example: the previous token is offset by the example's index.
  stacked = tf.constant(np.concatenate(tables, axis=1), tf.float32)   # [T, 3 * V, V]
  beam = 3

  def step(previous, position, state):
    example = tf.range(tf.shape(previous)[0]) // beam
    logits = tf.gather(stacked[position], previous + example * VOCAB)
    return beam_search.forbid(logits, PAD), state

  ids, _ = beam_search.beam_search(step, tf.zeros([3 * beam, 1]), 3, beam, MAX_LENGTH, EOS, 0.6)
  for i, table in enumerate(tables):
    alone, _ = beam_search.beam_search(step_of(table), tf.zeros([beam, 1]), 1, beam, MAX_LENGTH,
                                    EOS, 0.6)
    assert unpadded(ids[i]) == unpadded(alone[0])


def test_finished_rows_are_padded_after_eos():
  table = np.zeros((MAX_LENGTH, VOCAB, VOCAB))
  table[0, PAD, EOS] = 10.0          # the first example ends at once ...
  table[0, PAD, 2] = 5.0
  ids = beam_search.greedy_search(step_of(table), tf.zeros([2, 1]), 2, MAX_LENGTH, EOS)
  for row in ids.numpy():
    assert row[0] == EOS and set(row[1:]) <= {PAD}
