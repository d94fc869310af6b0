"""latent-GLAT on real Multi30k pairs: the uniform copy, the length classifier, one code per
token, both passes' glancing against NumPy, translation alone and in any batch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from test_translation_models import (SIZES, assert_draws_only_in_training,
                                     assert_same_alone_and_in_any_batch, exact_matches,
                                     first_short_pairs, numpy_glancing_mask, overfit,
                                     padded_ids, without_padding)
from vqkeras import registry
from vqkeras import translate
from vqkeras.models import model_class
from vqkeras.models.latent_glat import LengthPredictor, uniform_copy_positions
from vqkeras.tokenizer import EOS_ID, PAD_ID


def features_of(tokenizer, text):
  return {"inputs": padded_ids(tokenizer, [en for en, _ in text]),
          "targets": padded_ids(tokenizer, [de for _, de in text])}


@pytest.fixture(scope="module")
def pairs(multi30k_tokenizer):
  return features_of(multi30k_tokenizer, first_short_pairs("train", 32))


@pytest.fixture(scope="module")
def glat(pairs):
  return overfit(registry.hparams("vq_glat_tiny").derive(**SIZES, decay=0.9, train_steps=150),
                 pairs, steps=150)


def untrained(**overrides):
  keras.utils.set_random_seed(0)
  hparams = registry.hparams("vq_glat_tiny").derive(**overrides)
  return model_class(hparams).from_hparams(hparams)


def test_uniform_copy_reads_evenly_spaced_source_positions():
  # By hand: 5 source tokens onto 3 target positions, 3 onto 5 (rounding half to even, as
  # torch.round in fairseq), 1 onto 4, 4 onto 1 (past T, clipped to the last source token).
  got = uniform_copy_positions(tf.constant([5, 3, 1, 4]), tf.constant([3, 5, 4, 1]), 5).numpy()
  np.testing.assert_array_equal(got, [[0, 2, 4, 4, 4], [0, 0, 1, 2, 2], [0, 0, 0, 0, 0],
                                      [0, 3, 3, 3, 3]])
  rng = np.random.default_rng(0)
  source, target = rng.integers(1, 40, 50), rng.integers(1, 40, 50)
  got = uniform_copy_positions(tf.constant(source), tf.constant(target), 40).numpy()
  t = np.arange(40)[None]
  want = np.round(t * (source[:, None] - 1.0) / np.maximum(target[:, None] - 1.0, 1.0))
  want = np.minimum(want, source[:, None] - 1)
  real = t < target[:, None]
  np.testing.assert_array_equal(got[real], want[real])


def test_the_length_classes_are_the_clipped_offsets_and_lengths_the_likeliest():
  predictor = LengthPredictor(max_offset=3)
  source = tf.constant([5, 5, 5, 10, 1])
  target = tf.constant([5, 7, 12, 4, 1])
  np.testing.assert_array_equal(predictor.targets(source, target).numpy(),
                                np.clip([0, 2, 7, -6, 0], -3, 3) + 3)
  logits = tf.constant(np.random.default_rng(1).normal(size=(5, 7)), tf.float32)
  lengths, log_probs = predictor.lengths(logits, source, 3, max_length=11)
  log_softmax = logits.numpy() - np.log(np.exp(logits.numpy()).sum(-1, keepdims=True))
  best = np.argsort(-log_softmax, axis=1, kind="stable")[:, :3]
  np.testing.assert_array_equal(lengths.numpy(),
                                np.clip(source.numpy()[:, None] + best - 3, 2, 11))
  np.testing.assert_allclose(log_probs.numpy(), np.take_along_axis(log_softmax, best, 1),
                             rtol=1e-5)


def test_each_target_token_has_one_code_whatever_its_position_or_padding(pairs):
  model = untrained()
  model.loss_and_weight(pairs)   # builds
  targets = pairs["targets"]
  codes, vectors = model.quantize_targets(targets)
  codes, targets = codes.numpy(), targets.numpy()
  real = targets != PAD_ID
  assert (codes[~real] == 0).all()
  code_of = {}
  for token, code in zip(targets[real], codes[real]):
    assert code_of.setdefault(token, code) == code, token   # a word class, position-free
  assert len(set(code_of.values())) > 1
  codebook = model.quantizer.codebook.numpy()
  np.testing.assert_allclose(vectors.numpy()[real], codebook[codes[real]], atol=1e-5)
  padded = tf.pad(pairs["targets"], [[0, 0], [0, 7]])
  np.testing.assert_array_equal(model.quantize_targets(padded)[0].numpy()[:, :targets.shape[1]],
                                codes)


def test_padding_stays_out_of_the_codebook_statistics(pairs):
  """A training step on the targets with 7 more padding columns moves the EMA codebook
  and the latent standardization exactly as without them."""
  after = []
  for extra in (0, 7):
    model = untrained()
    model.loss_and_weight(pairs)
    model.quantize_targets(tf.pad(pairs["targets"], [[0, 0], [0, extra]]), training=True)
    after.append([w.numpy() for w in model.quantizer.weights + model.latent_norm.weights])
  for a, b in zip(*after):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_both_passes_glance_as_glat_and_learn_the_positions_not_glanced_at(pairs, monkeypatch):
  """In a training step, against NumPy from the recorded draws and first passes: the
  predictor's second pass reads the gold codes at ceil(ratio x wrong) random positions;
  the decoder reads the gold code vectors there and the first pass's codes' vectors
  elsewhere; its second pass reads the gold tokens at ceil(ratio x wrong tokens)
  positions; the loss is the cross-entropies of the other positions plus the weighted
  length term."""
  model = untrained(glancing_ratio=0.8, glancing_final_ratio=0.2, train_steps=40,
                    label_smoothing=0.0)
  features = {key: value[:12] for key, value in pairs.items()}
  model.loss_and_weight(features, training=True)   # builds
  model.quantizer.num_updates.assign(10)
  ratio = 0.8 - 11 / 40 * 0.6   # num_updates is 11 once the step's EMA update ran
  draws, quantized, predictor_calls, decoder_calls = [], [], [], []
  uniform, predictor_call, decode = tf.random.uniform, model.latent_predictor.call, model.decode
  quantize = model.quantize_targets

  def recorded(record, function):
    def wrapped(*args, **kwargs):
      record.append((args, kwargs, function(*args, **kwargs)))
      return record[-1][2]
    return wrapped

  monkeypatch.setattr(tf.random, "uniform", recorded(draws, uniform))
  monkeypatch.setattr(model.latent_predictor, "call", recorded(predictor_calls, predictor_call))
  monkeypatch.setattr(model, "decode", recorded(decoder_calls, decode))
  monkeypatch.setattr(model, "quantize_targets", recorded(quantized, quantize))
  total, weight = model.loss_and_weight(features, training=True)
  targets = features["targets"].numpy()
  mask = targets != PAD_ID
  gold, gold_vectors = (t.numpy() for t in quantized[0][2])
  codebook = model.quantizer.codebook.numpy().astype(np.float64)
  (_, _, first_codes), (args, kwargs, second_codes) = predictor_calls
  predicted = first_codes.numpy().argmax(-1)
  code_glanced = numpy_glancing_mask(predicted != gold, mask, ratio, draws[0][2].numpy())
  assert code_glanced.any() and (mask & ~code_glanced).any()
  np.testing.assert_array_equal(args[4].numpy()[mask], gold[mask])
  np.testing.assert_array_equal(args[5].numpy(), code_glanced)
  (first_args, _, first_tokens), (token_args, _, logits) = decoder_calls
  want_vectors = np.where(code_glanced[:, :, None], gold_vectors, codebook[predicted])
  for call_args in (first_args, token_args):
    np.testing.assert_allclose(call_args[1].numpy()[mask], want_vectors[mask], atol=1e-5)
  first_tokens = first_tokens.numpy().argmax(-1)
  token_glanced = numpy_glancing_mask(first_tokens != targets, mask, ratio, draws[1][2].numpy())
  assert token_glanced.any()
  np.testing.assert_array_equal(token_args[5].numpy(), targets)
  np.testing.assert_array_equal(token_args[6].numpy(), token_glanced)

  def cross_entropy(logits, labels, where):
    logits = logits.astype(np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(log_softmax, labels[..., None], -1)[..., 0][where].sum()

  source_lengths = (features["inputs"].numpy() != PAD_ID).sum(1)
  lengths = mask.sum(1)
  length_logits = model.length_predictor(*model.encode(features["inputs"])).numpy()
  offsets = np.clip(lengths - source_lengths, -32, 32) + 32
  length_terms = [cross_entropy(length_logits[i], offsets[i], ()) * lengths[i]
                  for i in range(len(lengths))]
  want = (cross_entropy(logits.numpy(), targets, mask & ~token_glanced) +
          cross_entropy(second_codes.numpy(), gold, mask & ~code_glanced) +
          0.1 * sum(length_terms))
  np.testing.assert_allclose(float(total), want, rtol=1e-4)
  assert float(weight) == mask.sum()


def test_latent_glat_overfits_and_translates_in_parallel(glat, pairs):
  translations = glat.translate(pairs["inputs"])
  assert exact_matches(translations, pairs["targets"]) >= 24
  # From the targets' own codes and lengths: the ceiling of translation.
  assert exact_matches(glat.reconstruct(pairs["inputs"], pairs["targets"]),
                       pairs["targets"]) >= 24
  for row in translations.numpy():
    assert EOS_ID in row and list(row[list(row).index(EOS_ID) + 1:]) == [PAD_ID] * (
        len(row) - list(row).index(EOS_ID) - 1)


def test_the_metrics_count_right_codes_and_lengths(glat, multi30k_tokenizer):
  features = features_of(multi30k_tokenizer, first_short_pairs("val", 16))
  sums = {name: (float(a), float(b)) for name, (a, b) in glat.metric_sums(features).items()}
  targets = features["targets"].numpy()
  mask = targets != PAD_ID
  gold = glat.quantize_targets(features["targets"])[0].numpy()
  memory, memory_mask = glat.encode(features["inputs"])
  lengths = mask.sum(1)
  copied = glat.copy_source(features["inputs"], tf.constant(lengths), targets.shape[1])
  predicted = glat.latent_predictor(copied, tf.constant(mask), memory, memory_mask).numpy()
  assert sums["latent_accuracy"] == ((predicted.argmax(-1) == gold)[mask].sum(), mask.sum())
  source_lengths = (features["inputs"].numpy() != PAD_ID).sum(1)
  best = glat.length_predictor(memory, memory_mask).numpy().argmax(-1)
  assert sums["length_accuracy"] == ((best - 32 == np.clip(lengths - source_lengths, -32, 32))
                                     .sum(), len(lengths))
  assert 0 < sums["reconstruction_nll_per_token"][0] and sums["nll_per_token"][1] == mask.sum()


@pytest.mark.parametrize("options", [{}, {"num_candidates": 3}, {"num_candidates": 3,
                                                                  "teacher": True}])
def test_a_sentence_gets_the_same_translation_alone_and_in_any_batch(glat, pairs, options,
                                                                     multi30k_tokenizer):
  """64 real sources (32 learned, 32 unseen) alone, in one batch and in shuffled batches of
  13; candidates: the 3 likeliest lengths, scored by the model or by a Transformer."""
  if options.get("teacher"):
    keras.utils.set_random_seed(1)
    teacher_hparams = registry.hparams("transformer_tiny")
    teacher = model_class(teacher_hparams).from_hparams(teacher_hparams)
    teacher.loss_and_weight(pairs)
    options = {"num_candidates": 3, "scorer": teacher.candidate_log_likelihoods}
  unseen = padded_ids(multi30k_tokenizer, [en for en, _ in first_short_pairs("val", 32)])
  sources = [row[row != PAD_ID] for ids in (pairs["inputs"], unseen) for row in ids.numpy()]
  assert_same_alone_and_in_any_batch(lambda ids: glat.translate(ids, **options), sources)


def test_candidates_are_the_likeliest_lengths_and_the_best_scored_is_kept(glat, pairs):
  inputs = pairs["inputs"][:8]
  one, _ = glat.translate_candidates(inputs, 1, 64)
  np.testing.assert_array_equal(one[:, 0].numpy(), glat.translate(inputs).numpy())
  ids, scores = glat.translate_candidates(inputs, 3, 64)
  lengths = np.sum(ids.numpy() != PAD_ID, axis=-1)   # each ends with EOS at its length
  memory, memory_mask = glat.encode(inputs)
  want, _ = glat.length_predictor.lengths(glat.length_predictor(memory, memory_mask),
                                          tf.reduce_sum(tf.cast(memory_mask, tf.int32), 1), 3,
                                          64)
  assert (lengths <= want.numpy()).all() and (lengths == want.numpy()).mean() > 0.9
  best = glat.translate(inputs, num_candidates=3).numpy()
  chosen = ids.numpy()[np.arange(8), scores.numpy().argmax(1)]
  for got, want_row in zip(best, chosen):
    assert without_padding(got) == without_padding(want_row)


@pytest.mark.parametrize("options", [{}, {"num_candidates": 3}])
def test_latent_glat_draws_nothing_at_random_when_it_translates(options):
  assert_draws_only_in_training(untrained(), options)


def test_a_beam_or_code_candidates_are_refused_by_name():
  model = untrained()
  inputs = tf.constant([[5, 6, 1]])
  with pytest.raises(ValueError, match="beam_size=4: latent-GLAT decodes every token at once"):
    model.translate(inputs, beam_size=4)
  with pytest.raises(ValueError, match="candidates are its likeliest lengths"):
    model.translate(inputs, num_candidates=2, candidate_codes="first_code")


@pytest.mark.parametrize("num_candidates", [1, 3])
def test_xla_buckets_give_the_same_tokens(glat, pairs, multi30k_tokenizer, num_candidates):
  """Sources and decoding lengths padded to multiples of 8, batches to powers of two, and
  every pass compiled by XLA (translate.Search's xla): the same translations as the graph,
  one per sentence, for batches of 3 and 5 and sentences alone, decoded at a bucket's length
  (the graph's rounded up to 8)."""
  unseen = padded_ids(multi30k_tokenizer, [en for en, _ in first_short_pairs("val", 16)])
  graph, compiled = (tf.function(lambda ids, xla=xla: translate.translate_ids(
      glat, ids, translate.Search(num_candidates=num_candidates, xla=xla)),
      input_signature=[tf.TensorSpec([None, None], tf.int32)]) for xla in (False, True))
  for ids in (pairs["inputs"], unseen, unseen[:1], unseen[5:6], unseen[:3], unseen[4:9]):
    want, got = graph(ids).numpy(), compiled(ids).numpy()
    assert [without_padding(row) for row in got] == [without_padding(row) for row in want]
    assert got.shape[1] == min(-(-want.shape[1] // 8) * 8, glat.hparams.max_length)


def test_xla_buckets_pad_tokens_to_eights_and_rows_to_powers_of_two():
  def row(*tokens):
    return list(tokens) + [PAD_ID] * (8 - len(tokens))

  ids = tf.constant([[5, 6, 1], [7, 1, 0], [8, 9, 1]])
  assert translate.xla_buckets(ids).numpy().tolist() == [row(5, 6, 1), row(7, 1), row(8, 9, 1),
                                                         row(8, 9, 1)]
  for batch_size, rows in ((1, 1), (2, 2), (4, 4), (5, 8), (64, 64), (65, 128)):
    assert translate.xla_buckets(tf.ones([batch_size, 9], tf.int32)).shape == (rows, 16)
