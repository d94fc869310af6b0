"""The autoregressive Transformer and the latent Transformer on real Multi30k pairs.

Each small model overfits 32 real sentence pairs through the training step of
bin/train and then translates them; decoding is checked against teacher forcing,
greedy against beam search, latent lengths against ceil(T / 2^n_c).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import TESTDATA
from vqkeras import beam_search
from vqkeras import registry
from vqkeras import train_step
from vqkeras import translate
from vqkeras.models import model_class
from vqkeras.models.glancing import glancing_mask
from vqkeras.models.latent_transformer import latent_lengths, stop_decided_first
from vqkeras.models.transformer import smoothed_cross_entropy
from vqkeras.files import read_lines
from vqkeras.tokenizer import EOS_ID, PAD_ID

NUM_PAIRS = 32
SIZES = dict(hidden_size=128, filter_size=256, num_layers=2, num_heads=4, dropout=0.0,
             label_smoothing=0.0)


def first_short_pairs(split, count, max_words=10):
  folder = TESTDATA / "multi30k"
  pairs = zip(read_lines(folder / f"{split}.en.gz"), read_lines(folder / f"{split}.de.gz"))
  return [(en, de) for en, de in pairs if len(en.split()) <= max_words][:count]


def padded_ids(tokenizer, lines):
  return tokenizer.tokenize(tf.constant(lines)).to_tensor(default_value=PAD_ID)


def without_padding(row):
  """A decoded row up to and including its EOS."""
  row = list(np.asarray(row))
  return row[:row.index(EOS_ID) + 1] if EOS_ID in row else [t for t in row if t != PAD_ID]


@pytest.fixture(scope="module")
def pairs(multi30k_tokenizer):
  text = first_short_pairs("train", NUM_PAIRS)
  return {"inputs": padded_ids(multi30k_tokenizer, [en for en, _ in text]),
          "targets": padded_ids(multi30k_tokenizer, [de for _, de in text])}


def overfit(hparams, features, steps):
  """A model of hparams trained on one batch by the training step of bin/train."""
  keras.utils.set_random_seed(0)
  model = model_class(hparams).from_hparams(hparams)
  optimizer = keras.optimizers.Adam(3e-3)
  train_step.build(model, optimizer, features)
  step = tf.function(train_step.train_step_fn(model, optimizer))
  for _ in range(steps):
    parts = step(features)
  assert np.isfinite(float(parts["loss"]))
  return model


def exact_matches(translations, targets):
  return sum(without_padding(got) == without_padding(want)
             for got, want in zip(translations.numpy(), targets.numpy()))


@pytest.fixture(scope="module")
def transformer(pairs):
  return overfit(registry.hparams("transformer_tiny").derive(**SIZES), pairs, steps=120)


@pytest.fixture(scope="module")
def latent_transformer(pairs):
  hparams = registry.hparams("vq_ema_tiny").derive(
      **SIZES, bottleneck_bits=8, decay=0.9, mask_startup_steps=60)
  return overfit(hparams, pairs, steps=180)


def test_transformer_overfits_and_translates(transformer, pairs):
  translations = tf.function(transformer.translate)(pairs["inputs"])
  assert exact_matches(translations, pairs["targets"]) >= NUM_PAIRS - 1


def test_latent_transformer_overfits_and_translates(latent_transformer, pairs):
  """The codes come from the latent predictor, the tokens from one parallel pass."""
  translations = tf.function(latent_transformer.translate)(pairs["inputs"])
  assert exact_matches(translations, pairs["targets"]) >= NUM_PAIRS - 4
  # From the targets' own codes, the decoder alone: the ceiling of the translations.
  reconstructions = latent_transformer.reconstruct(pairs["inputs"], pairs["targets"])
  assert exact_matches(reconstructions, pairs["targets"]) >= NUM_PAIRS - 1


def test_incremental_decoding_equals_teacher_forcing(multi30k_tokenizer):
  """The key/value cache gives each position the logits of a full causal pass."""
  text = first_short_pairs("val", 4)
  inputs = padded_ids(multi30k_tokenizer, [en for en, _ in text])
  targets = padded_ids(multi30k_tokenizer, [de for _, de in text])
  hparams = registry.hparams("transformer_tiny").derive(num_layers=2)
  model = model_class(hparams).from_hparams(hparams)
  full = model({"inputs": inputs, "targets": targets}).numpy()
  step, cache = model.decoding_step(inputs)
  previous = tf.fill([len(text)], PAD_ID)
  for position in range(targets.shape[1]):
    logits, cache = step(previous, position, cache)
    expected = full[:, position].copy()
    expected[:, PAD_ID] += beam_search.NEG_INF
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    previous = targets[:, position]


@pytest.fixture(scope="module")
def held_out(multi30k_tokenizer):
  """Unseen sources: the overfit model is unsure of them, so the searches can differ."""
  text = first_short_pairs("val", 16)
  return padded_ids(multi30k_tokenizer, [en for en, _ in text])


def test_beam_search_of_width_one_is_greedy_search(transformer, held_out):
  step, cache = transformer.decoding_step(held_out)
  batch_size = held_out.shape[0]
  beam, _ = beam_search.beam_search(step, cache, batch_size, 1, 64, EOS_ID, alpha=0.0)
  greedy = transformer.translate(held_out, beam_size=1, max_decode_length=64)
  for a, b in zip(beam.numpy(), greedy.numpy()):
    assert without_padding(a) == without_padding(b)


def test_beam_search_finds_translations_at_least_as_likely_as_greedy(transformer, held_out):
  greedy = transformer.translate(held_out, beam_size=1)
  beam = transformer.translate(held_out, beam_size=4, length_penalty=0.0)
  greedy_log_p = transformer.log_likelihood(held_out, greedy).numpy()
  beam_log_p = transformer.log_likelihood(held_out, beam).numpy()
  assert np.all(beam_log_p >= greedy_log_p - 1e-4)
  assert np.any(beam_log_p > greedy_log_p + 1e-3)   # the beam does find better ones here


@pytest.mark.parametrize("compression_steps", [2, 3])
def test_latent_length_is_the_target_length_over_two_to_the_compression_steps(
    multi30k_tokenizer, compression_steps):
  text = first_short_pairs("val", 8, max_words=30)
  inputs = padded_ids(multi30k_tokenizer, [en for en, _ in text])
  targets = padded_ids(multi30k_tokenizer, [de for _, de in text])
  hparams = registry.hparams("vq_em_tiny").derive(compression_steps=compression_steps)
  model = model_class(hparams).from_hparams(hparams)
  latents, lengths = model.latents(targets)
  tokens = (targets.numpy() != PAD_ID).sum(axis=1)          # EOS included
  expected = np.ceil(tokens / 2 ** compression_steps).astype(int)
  np.testing.assert_array_equal(lengths, expected)
  assert latents.shape[1] == expected.max()
  # The decoder sees 2^n_c positions per latent: every target token has one.
  logits = model({"inputs": inputs, "targets": targets})
  assert logits.shape[1] == targets.shape[1]
  np.testing.assert_array_equal(latent_lengths(targets, 2 ** compression_steps), expected)


def test_padding_latents_neither_reach_the_decoder_nor_receive_gradients(multi30k_tokenizer):
  # Padding latents are outside the batch's moments and drift; a gradient reaching them
  # entered the moments' gradient with their large standardized values (the spikes
  # that collapsed the latents of a Multi30k run).
  text = first_short_pairs("val", 8, max_words=30)
  features = {"inputs": padded_ids(multi30k_tokenizer, [en for en, _ in text]),
              "targets": padded_ids(multi30k_tokenizer, [de for _, de in text])}
  hparams = registry.hparams("vq_em_tiny").derive(mask_startup_steps=0)
  model = model_class(hparams).from_hparams(hparams)
  normalize, captured = model.normalize_latents, {}

  def capture(latents, lengths, training=False):
    captured["latents"] = normalize(latents, lengths, training)
    captured["lengths"] = lengths
    return captured["latents"]

  model.normalize_latents = capture
  with tf.GradientTape() as tape:
    total, _ = model.loss_and_weight(features, training=True)
  gradient = np.abs(tape.gradient(total, captured["latents"]).numpy()).max(axis=-1)
  lengths = captured["lengths"].numpy()
  real = np.arange(gradient.shape[1])[None] < lengths[:, None]
  assert (~real).sum() >= 4 and (gradient[real] > 0).all()
  np.testing.assert_array_equal(gradient[~real], 0.0)


def test_latent_predictor_loss_is_the_cross_entropy_of_the_codes_and_stop(multi30k_tokenizer):
  """Against NumPy in float64: soft targets (mean of m one-hots), STOP after the last code."""
  text = first_short_pairs("val", 3)
  inputs = padded_ids(multi30k_tokenizer, [en for en, _ in text])
  hparams = registry.hparams("vq_em_tiny")
  model = model_class(hparams).from_hparams(hparams)
  memory, memory_mask = model.encode(inputs)
  predictor = model.latent_predictor
  codebook_size = hparams.codebook_size
  rng = np.random.default_rng(0)
  samples = rng.integers(0, codebook_size, size=(3, 4, hparams.num_samples)).astype(np.int32)
  lengths = np.array([4, 2, 1], np.int32)
  loss = predictor.loss(samples, lengths, memory, memory_mask).numpy()
  logits = predictor(samples, memory, memory_mask).numpy().astype(np.float64)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  for b in range(3):
    expected = -sum(log_probs[b, l, samples[b, l]].mean() for l in range(lengths[b]))
    expected -= log_probs[b, lengths[b], codebook_size]   # STOP
    np.testing.assert_allclose(loss[b], expected, rtol=1e-5)


def test_the_code_sequence_stops_when_stop_is_likelier_than_all_codes_together():
  """Greedy search over codes, decisions computed by hand: STOP is never the first symbol;
  a STOP likelier than every single code but not than all codes together loses to the
  best code."""
  stop = 4   # codes 0..3, STOP = 4
  probabilities = tf.constant([[0.04, 0.03, 0.02, 0.01, 0.90],    # position 0: a code
                               [0.25, 0.15, 0.15, 0.15, 0.30],    # 0.30 < 0.70: code 0
                               [0.05, 0.25, 0.05, 0.05, 0.60],    # 0.60 > 0.40: STOP
                               [0.25, 0.25, 0.25, 0.25, 0.00]])

  def step(symbols, position, state):
    return tf.math.log(probabilities[position])[None], state

  stops = stop_decided_first(step, stop)
  codes = beam_search.greedy_search(stops, tf.zeros([1]), 1, 8, stop, start_id=stop + 1,
                                 pad_id=stop)
  assert codes.numpy().tolist() == [[0, 0, stop]]
  # An argmax over all symbols would have stopped at once after position 0's code.
  plain = beam_search.greedy_search(step, tf.zeros([1]), 1, 8, stop, start_id=stop + 1,
                                 pad_id=stop)
  assert plain.numpy().tolist() == [[stop]]


def test_the_latent_models_stacks_take_their_own_depths():
  hparams = registry.hparams("vq_em_tiny").derive(num_layers=2, decoder_layers=1,
                                                  predictor_layers=3)
  model = model_class(hparams).from_hparams(hparams)
  assert [len(stack.layers_) for stack in (model.encoder, model.decoder,
                                           model.latent_predictor.decoder)] == [2, 1, 3]


@pytest.mark.parametrize("overrides", ["bottleneck=fsq,fsq_levels=4x4",
                                       "bottleneck=gumbel,bottleneck_bits=4",
                                       "bottleneck=lfq,bottleneck_bits=4",
                                       "bottleneck=bsq,bottleneck_bits=4",
                                       "bottleneck=simvq,bottleneck_bits=4,restart_dead_codes=false"])
def test_each_one_code_bottleneck_trains_and_translates(overrides, pairs):
  """FSQ, LFQ and BSQ (on a learned projection of each latent), the Gumbel-softmax
  bottleneck and SimVQ in the latent model: 16 codes for the predictor beside STOP, each latent's code decodes to
  the vector the decoder reads, a training step moves the bottleneck, translation ends."""
  hparams = registry.hparams("vq_ema_tiny", overrides)   # restarts: on in the translation sets
  assert hparams.codebook_size == 16
  keras.utils.set_random_seed(2)
  model = model_class(hparams).from_hparams(hparams)
  optimizer = keras.optimizers.Adam(3e-3)
  train_step.build(model, optimizer, pairs)
  before = [w.numpy().copy() for w in model.quantizer.trainable_weights]
  step = tf.function(train_step.train_step_fn(model, optimizer))
  for _ in range(2):
    assert np.isfinite(float(step(pairs)["loss"]))
  assert before and all(not np.allclose(b, w.numpy())
                        for b, w in zip(before, model.quantizer.trainable_weights))
  assert model.latent_predictor.stop == 16
  targets = model.quantize_targets(pairs["targets"])
  real = tf.sequence_mask(targets.lengths).numpy()
  codes = targets.codes.numpy()[real]
  assert codes.min() >= 0 and codes.max() < 16
  decoded = model.quantizer.decode(targets.codes[:, :, None]).numpy()[real]
  np.testing.assert_allclose(decoded, targets.quantized.numpy()[real], atol=1e-5)
  translations = model.translate(pairs["inputs"][:4], max_decode_length=16).numpy()
  assert translations.shape[0] == 4 and translations.shape[1] <= 16


def test_codes_of_given_lengths_are_the_greedy_codes_of_teacher_forcing(multi30k_tokenizer):
  """The codes the parallel decoder learns from in its stage: at each position the code
  (never STOP) the predictor ranks first given the codes before, computed here by a full
  teacher-forced pass per position; STOP from each row's length on."""
  text = first_short_pairs("val", 3)
  inputs = padded_ids(multi30k_tokenizer, [en for en, _ in text])
  hparams = registry.hparams("vq_em_tiny")
  keras.utils.set_random_seed(1)
  model = model_class(hparams).from_hparams(hparams)
  memory, memory_mask = model.encode(inputs)
  predictor = model.latent_predictor
  lengths = np.array([3, 1, 5], np.int32)
  codes = predictor.predict_of_lengths(memory, memory_mask, tf.constant(lengths)).numpy()
  assert codes.shape == (3, 5)
  for b in range(3):
    prefix = np.zeros([1, 0, 1], np.int32)
    for position in range(lengths[b]):
      logits = predictor(prefix, memory[b:b + 1], memory_mask[b:b + 1]).numpy()
      best = int(np.argmax(logits[0, position, :hparams.codebook_size]))
      assert codes[b, position] == best, (b, position)
      prefix = np.concatenate([prefix, [[[best]]]], axis=1).astype(np.int32)
    assert (codes[b, lengths[b]:] == predictor.stop).all()


def test_translations_end_with_eos_and_respect_max_decode_length(latent_transformer,
                                                                 transformer, held_out):
  for model in (transformer, latent_transformer):
    for limit in (3, 64):
      ids = model.translate(held_out, max_decode_length=limit).numpy()
      assert ids.shape[1] <= limit
      for row in ids:
        row = list(row)
        end = row.index(EOS_ID) + 1 if EOS_ID in row else len(row) - row[::-1].index(
            next(t for t in row[::-1] if t != PAD_ID)) if any(row) else 0
        assert PAD_ID not in row[:end] and set(row[end:]) <= {PAD_ID}
        assert EOS_ID not in row[:end - 1]


@pytest.mark.parametrize("name", ["transformer_tiny", "vq_ema_tiny", "vq_glat_tiny"])
def test_mirrored_step_reproduces_one_device_on_the_global_batch(name, pairs, mirrored_strategy):
  # Rows of different lengths put unequal numbers of tokens and latents on the two
  # replicas: the losses must be normalized by the global counts. Hard EM and no
  # dropout keep the step deterministic; mask_startup_steps=0 makes the gold fraction
  # exactly 1 at step 0 and 0 after; latent-GLAT glances at no position (its draws then
  # pick nothing).
  hparams = registry.hparams(name).derive(**SIZES)
  if name.startswith("vq_ema"):
    hparams = hparams.derive(mask_startup_steps=0)
  if name.startswith("vq_glat"):
    hparams = hparams.derive(glancing_ratio=0.0, glancing_final_ratio=0.0)
  batch = {key: value[:8] for key, value in pairs.items()}
  tokens = tf.reduce_sum(tf.cast(batch["targets"] > 0, tf.int32), axis=1).numpy()
  assert tokens[:4].sum() != tokens[4:].sum()

  def build(strategy):
    with strategy.scope():
      keras.utils.set_random_seed(0)
      model = model_class(hparams).from_hparams(hparams)
      optimizer = keras.optimizers.SGD(0.1)
      train_step.build(model, optimizer, batch)
    return model, optimizer

  single, single_optimizer = build(tf.distribute.OneDeviceStrategy("/cpu:0"))
  mirrored, mirrored_optimizer = build(mirrored_strategy)
  for a, b in zip(single.weights, mirrored.weights):
    b.assign(a)
  single_step = tf.function(train_step.train_step_fn(single, single_optimizer))
  replica_step = train_step.train_step_fn(mirrored, mirrored_optimizer)
  halves = mirrored_strategy.experimental_distribute_values_from_function(
      lambda context: {key: value[4 * context.replica_id_in_sync_group:][:4]
                       for key, value in batch.items()})

  @tf.function
  def mirrored_step(features):
    parts = mirrored_strategy.run(replica_step, args=(features,))
    return mirrored_strategy.experimental_local_results(parts)[0]

  for _ in range(3):
    want, got = single_step(batch), mirrored_step(halves)
    np.testing.assert_allclose(float(got["loss"]), float(want["loss"]), rtol=1e-4)
    # The commitment loss is a mean over the global batch's latents, not a mean of
    # the replicas' means (the halves hold different numbers of latents).
    np.testing.assert_allclose(float(got["auxiliary"]), float(want["auxiliary"]), rtol=1e-5)
    assert float(got["weight"]) == float(want["weight"])
  for a, b in zip(single.weights, mirrored.weights):
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_smoothed_cross_entropy_against_numpy(label_smoothing):
  """The loss computed without the `[tokens, vocab]` target equals the full soft-target
  cross-entropy minus the target's entropy, in float64."""
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 5, 11)) * 3
  targets = rng.integers(1, 11, size=(2, 5))
  targets[1, 3:] = 0   # padding
  total, weight = smoothed_cross_entropy(tf.constant(logits, tf.float32),
                                         tf.constant(targets, tf.int32), label_smoothing)
  low = label_smoothing / 10
  soft = np.full(logits.shape, low)
  np.put_along_axis(soft, targets[..., None], 1.0 - label_smoothing, axis=-1)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  entropy = -(soft * np.log(np.where(soft > 0, soft, 1.0))).sum(-1)
  expected = ((-(soft * log_probs).sum(-1) - entropy) * (targets != 0)).sum()
  np.testing.assert_allclose(float(total), expected, rtol=1e-5)
  assert float(weight) == 8


def test_smoothed_cross_entropy_gradient_against_numpy():
  """The written-out gradient equals softmax - smoothed target, in float64."""
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(3, 4, 9)) * 2
  targets = rng.integers(1, 9, size=(3, 4))
  z = tf.constant(logits, tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(z)
    total, _ = smoothed_cross_entropy(z, tf.constant(targets, tf.int32), 0.2)
  low = 0.2 / 8
  soft = np.full(logits.shape, low)
  np.put_along_axis(soft, targets[..., None], 0.8, axis=-1)
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  np.testing.assert_allclose(tape.gradient(total, z).numpy(), probs - soft, atol=1e-6)


def batches_of(count, size, rng):
  """The indices 0..count-1 shuffled and cut into batches of `size`."""
  order = rng.permutation(count)
  return [order[i:i + size] for i in range(0, count, size)]


def unpadded(ids):
  """A batch's rows of ids without their padding columns: as the row would come alone."""
  return ids[:, :max(1, int(tf.reduce_max(tf.reduce_sum(tf.cast(ids != PAD_ID, tf.int32), 1))))]


def test_the_latent_decoder_gives_a_sentence_the_same_logits_in_any_batch(multi30k_tokenizer):
  """From the targets' own codes: compression and decompression read no padding."""
  text = first_short_pairs("val", 64, max_words=30)
  inputs = padded_ids(multi30k_tokenizer, [en for en, _ in text])
  targets = padded_ids(multi30k_tokenizer, [de for _, de in text])
  keras.utils.set_random_seed(0)
  model = model_class(registry.hparams("vq_em_tiny")).from_hparams(
      registry.hparams("vq_em_tiny"))
  model.loss_and_weight({"inputs": inputs[:2], "targets": targets[:2]})
  full = model({"inputs": inputs, "targets": targets}).numpy()
  lengths = np.sum(targets.numpy() != PAD_ID, axis=1)
  rng = np.random.default_rng(0)
  for size in (1, 5, 13):
    for batch in batches_of(len(text), size, rng):
      got = model({"inputs": unpadded(tf.gather(inputs, batch)),
                   "targets": unpadded(tf.gather(targets, batch))}).numpy()
      for row, i in enumerate(batch):
        np.testing.assert_allclose(got[row, :lengths[i]], full[i, :lengths[i]], atol=1e-4)


@pytest.mark.parametrize("kind,beam_size,candidates", [
    ("transformer", 1, None), ("transformer", 4, None), ("latent_transformer", 1, None),
    ("latent_transformer", 2, None), ("latent_transformer", 1, "own"),
    ("latent_transformer", 1, "teacher"), ("latent_transformer", 1, "first_code")])
def test_a_sentence_gets_the_same_translation_alone_and_in_any_batch(
    kind, beam_size, candidates, request, pairs, multi30k_tokenizer):
  """64 real sources (32 the model has learned, 32 unseen) translated alone, in one batch
  and in shuffled batches of 13; candidates: 4 of them, scored by the model itself or by
  the Transformer as teacher."""
  model = request.getfixturevalue(kind)
  unseen = padded_ids(multi30k_tokenizer, [en for en, _ in first_short_pairs("val", 32)])
  sources = [row[row != PAD_ID] for ids in (pairs["inputs"], unseen) for row in ids.numpy()]
  options = {}
  if candidates == "first_code":
    options = {"num_candidates": 4, "candidate_codes": "first_code"}
  elif candidates:
    options = {"num_candidates": 4, "scorer": None if candidates == "own" else
               request.getfixturevalue("transformer").candidate_log_likelihoods}
  assert_same_alone_and_in_any_batch(
      lambda ids: model.translate(ids, beam_size=beam_size, **options), sources)


def assert_same_alone_and_in_any_batch(translate, sources):
  """`translate` (ids to ids, traced once) gives each of `sources` (unpadded id rows) the
  same translation in one batch of all, alone and in shuffled batches of 13."""
  translate = tf.function(translate, input_signature=[tf.TensorSpec([None, None], tf.int32)])

  def translations(batch):
    ids = tf.ragged.constant([sources[i] for i in batch], dtype=tf.int32).to_tensor()
    return [without_padding(row) for row in translate(ids).numpy()]

  reference = translations(range(len(sources)))
  rng = np.random.default_rng(0)
  for size in (1, 13):
    for batch in batches_of(len(sources), size, rng):
      for i, translation in zip(batch, translations(batch)):
        assert translation == reference[i], (size, i)


@pytest.mark.parametrize("candidates", [None, "own", "teacher"])
def test_xla_stages_of_the_latent_transformer_give_the_graphs_tokens(
    candidates, request, latent_transformer, pairs, multi30k_tokenizer):
  """translate.Search's xla: sources padded to multiples of 8 tokens and batches to powers
  of two rows, the encoder and the parallel decoder (with the candidates' scores) compiled
  by XLA, the code search a graph loop between: the graph's translations, one per sentence,
  for batches of 3 and 5 and sentences alone."""
  teacher = request.getfixturevalue("transformer") if candidates == "teacher" else None
  options = {"num_candidates": 4, "teacher": teacher} if candidates else {}
  unseen = padded_ids(multi30k_tokenizer, [en for en, _ in first_short_pairs("val", 16)])
  graph, compiled = (tf.function(lambda ids, xla=xla: translate.translate_ids(
      latent_transformer, ids, translate.Search(xla=xla, **options)),
      input_signature=[tf.TensorSpec([None, None], tf.int32)]) for xla in (False, True))
  for ids in (pairs["inputs"], unseen, unseen[:1], unseen[5:6], unseen[:3], unseen[4:9]):
    want, got = graph(ids).numpy(), compiled(ids).numpy()
    assert [without_padding(row) for row in got] == [without_padding(row) for row in want]


@pytest.mark.parametrize("beam_size", [1, 4])
def test_an_xla_encoder_of_the_transformer_gives_the_graphs_tokens(
    beam_size, transformer, held_out, pairs, multi30k_tokenizer):
  """translate.Search's xla for the Transformer: sources padded to multiples of 8 tokens
  and batches to powers of two rows, the encoder compiled by XLA, the search a graph loop:
  the graph's translations, one per sentence, for batches of 3 and 5 and sentences alone."""
  graph, compiled = (tf.function(lambda ids, xla=xla: translate.translate_ids(
      transformer, ids, translate.Search(beam_size, 0.6, xla=xla)),
      input_signature=[tf.TensorSpec([None, None], tf.int32)]) for xla in (False, True))
  for ids in (pairs["inputs"], held_out, held_out[:1], held_out[5:6], held_out[:3],
              held_out[4:9]):
    want, got = graph(ids).numpy(), compiled(ids).numpy()
    assert [without_padding(row) for row in got] == [without_padding(row) for row in want]


def test_one_candidate_of_a_beam_of_one_is_greedy_decoding(latent_transformer, held_out):
  ids, _ = latent_transformer.translate_candidates(held_out, 1, 1, 64)
  greedy = latent_transformer.translate(held_out)
  for a, b in zip(ids[:, 0].numpy(), greedy.numpy()):
    assert without_padding(a) == without_padding(b)


def test_candidates_are_scored_as_each_alone_and_the_best_is_chosen(latent_transformer,
                                                                    held_out):
  """Own scores against the latent predictor's log p(codes | each goes on), by teacher
  forcing, plus the decoder's log-likelihood of the tokens of each candidate decoded alone."""
  model, k = latent_transformer, 4
  ids, scores = model.translate_candidates(held_out, k, k, 64)
  memory, memory_mask = model.encode(held_out)
  codes, lengths, _ = model.latent_predictor.candidates(memory, memory_mask, 8, k)
  for i in range(held_out.shape[0]):
    for j in range(k):
      if lengths[i, j] in (0, 8):   # not found, or cut without its STOP
        continue
      one = codes[i:i + 1, j, :lengths[i, j]]
      symbol_log_probs = tf.nn.log_softmax(model.latent_predictor(
          one[:, :, None], memory[i:i + 1], memory_mask[i:i + 1])[0]).numpy()
      symbol_log_probs = symbol_log_probs.astype(np.float64)
      stop = model.latent_predictor.stop
      code_log_p = sum(symbol_log_probs[t, c] - np.log1p(-np.exp(symbol_log_probs[t, stop]))
                       for t, c in enumerate(one[0].numpy()))
      logits = model.code_logits(one, lengths[i:i + 1, j], memory[i:i + 1],
                                 memory_mask[i:i + 1])
      alone = model.tokens_of(logits, lengths[i:i + 1, j], 64)
      assert without_padding(alone[0]) == without_padding(ids[i, j])
      log_probs = tf.nn.log_softmax(logits[0]).numpy().astype(np.float64)
      tokens = without_padding(alone[0])
      token_log_p = sum(log_probs[t, token] for t, token in enumerate(tokens))
      np.testing.assert_allclose(scores[i, j], code_log_p + token_log_p, rtol=1e-4,
                                 atol=1e-3)
  chosen = model.translate(held_out, num_candidates=k)
  best = np.argmax(scores.numpy(), axis=1)
  for i in range(held_out.shape[0]):
    assert without_padding(chosen[i]) == without_padding(ids[i, best[i]])


def test_first_code_candidates_are_the_likeliest_first_codes_each_finished_greedily(
    latent_transformer, held_out):
  """Against teacher forcing in float64: candidate j starts with the j-th likeliest first
  code, every later code is the likeliest given the ones before and that the sequence
  goes on, STOP comes where it is likelier than all codes together; its score is the sum
  of the codes' log-probabilities given that the sequence goes on."""
  predictor, k, max_latents = latent_transformer.latent_predictor, 3, 8
  memory, memory_mask = latent_transformer.encode(held_out)
  codes, lengths, scores = predictor.first_code_candidates(memory, memory_mask, max_latents, k)
  stop = predictor.stop
  for i in range(held_out.shape[0]):
    for j in range(k):
      length = int(lengths[i, j])
      one = codes[i:i + 1, j, :max(length, 1)]
      log_probs = tf.nn.log_softmax(predictor(one[:, :, None], memory[i:i + 1],
                                              memory_mask[i:i + 1])[0]).numpy()
      log_probs = log_probs.astype(np.float64)
      go_on = log_probs[:, :stop] - np.log1p(-np.exp(log_probs[:, stop:stop + 1]))
      first_order = np.argsort(-go_on[0], kind="stable")
      assert one[0, 0] == first_order[j]
      for t in range(1, length):
        assert log_probs[t, stop] <= np.log(0.5) and one[0, t] == go_on[t].argmax()
      if length < max_latents:
        assert log_probs[length, stop] > np.log(0.5)
      np.testing.assert_array_equal(codes[i, j, length:], stop)
      expected = sum(go_on[t, c] for t, c in enumerate(one[0].numpy()[:length]))
      np.testing.assert_allclose(scores[i, j], expected, rtol=1e-4, atol=1e-4)
  ids, _ = latent_transformer.translate_candidates(held_out, 1, k, 64,
                                                   candidate_codes="first_code")
  greedy = latent_transformer.translate(held_out)
  for i in range(held_out.shape[0]):   # the likeliest first code finished greedily is greedy
    assert without_padding(ids[i, 0]) == without_padding(greedy[i])


def test_the_teacher_score_of_a_candidate_is_its_log_likelihood_token_by_token(
    transformer, latent_transformer, held_out):
  ids, _ = latent_transformer.translate_candidates(held_out, 3, 3, 64)
  scores = transformer.candidate_log_likelihoods(held_out, ids).numpy()
  for j in range(3):
    step, cache = transformer.decoding_step(held_out)
    previous = tf.fill([held_out.shape[0]], PAD_ID)
    expected = np.zeros(held_out.shape[0])
    for position in range(ids.shape[2]):
      logits, cache = step(previous, position, cache)
      log_probs = tf.nn.log_softmax(logits).numpy().astype(np.float64)
      target = ids[:, j, position].numpy()
      expected += np.where(target != PAD_ID, log_probs[np.arange(len(target)), target], 0.0)
      previous = ids[:, j, position]
    np.testing.assert_allclose(scores[:, j], expected, rtol=1e-4, atol=5e-3)   # float32 sums
  chosen = latent_transformer.translate(held_out, num_candidates=3,
                                        scorer=transformer.candidate_log_likelihoods)
  for i, best in enumerate(np.argmax(scores, axis=1)):
    assert without_padding(chosen[i]) == without_padding(ids[i, best])


def test_latent_metrics_are_the_predictors_nll_and_accuracy_on_the_nearest_codes(
    latent_transformer, multi30k_tokenizer):
  text = first_short_pairs("val", 16)
  features = {"inputs": padded_ids(multi30k_tokenizer, [en for en, _ in text]),
              "targets": padded_ids(multi30k_tokenizer, [de for _, de in text])}
  sums = latent_transformer.metric_sums(features)
  model = latent_transformer
  memory, memory_mask = model.encode(features["inputs"])
  quantized = model.quantize_targets(features["targets"])
  codes = quantized.codes.numpy()
  log_probs = tf.nn.log_softmax(model.latent_predictor(
      quantized.codes[:, :, None], memory, memory_mask)).numpy().astype(np.float64)
  nll = right = count = 0.0
  for i, length in enumerate(quantized.lengths.numpy()):
    symbols = list(codes[i, :length]) + [model.latent_predictor.stop]
    for t, symbol in enumerate(symbols):
      nll -= log_probs[i, t, symbol]
      right += np.argmax(log_probs[i, t]) == symbol
      count += 1
  np.testing.assert_allclose(sums["latent_nll_per_latent"], (nll, count), rtol=1e-4)
  np.testing.assert_allclose(sums["latent_accuracy"], (right, count))


@pytest.mark.parametrize("options", [{}, {"beam_size": 2}, {"num_candidates": 3}])
def test_the_soft_em_model_draws_nothing_at_random_when_it_translates(options):
  """Decoding is a function of the checkpoint and the settings: no random op in the traced
  translation (loops and conditionals included); the training step does draw (soft EM)."""
  hparams = registry.hparams("vq_em_tiny")
  assert_draws_only_in_training(model_class(hparams).from_hparams(hparams), options)


def assert_draws_only_in_training(model, options):
  """No random op in the traced translation of `model` with `options` (loops and
  conditionals included); some in its training loss."""
  from test_step_memory import graph_tensors   # pylint: disable=import-outside-toplevel
  features = {"inputs": tf.constant([[5, 6, 1]]), "targets": tf.constant([[7, 8, 9, 1]])}
  model.loss_and_weight(features)

  def random_ops(function, *specs):
    graph = tf.function(function).get_concrete_function(*specs).graph
    return {t.op.type for t in graph_tensors(graph) if "Random" in t.op.type}

  spec = tf.TensorSpec([None, None], tf.int32)
  assert not random_ops(lambda ids: model.translate(ids, **options), spec)
  assert random_ops(lambda f: model.loss_and_weight(f, training=True)[0],
                    {"inputs": spec, "targets": spec})


def numpy_glancing_mask(wrong, in_use, ratio, scores):
  """GLAT's selection in float64: per row, ceil(ratio x wrong real latents) real latents
  of the lowest scores."""
  picked = np.zeros_like(in_use)
  for b in range(len(wrong)):
    count = int(np.ceil(round(ratio * (wrong[b] & in_use[b]).sum(), 6)))
    real = np.flatnonzero(in_use[b])
    picked[b, real[np.argsort(scores[b, real], kind="stable")[:count]]] = True
  return picked


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 1.0])
def test_glancing_picks_ceil_ratio_times_wrong_real_latents(ratio):
  rng = np.random.default_rng(1)
  wrong = rng.random((6, 10)) < 0.6
  in_use = np.arange(10)[None] < np.array([10, 7, 3, 1, 10, 5])[:, None]
  wrong[4] = False   # a row the predictor gets right reads no target code
  scores = rng.random((6, 10))
  picked = glancing_mask(tf.constant(wrong), tf.constant(in_use), ratio,
                         tf.constant(scores, tf.float32)).numpy()
  np.testing.assert_array_equal(picked, numpy_glancing_mask(wrong, in_use, ratio, scores))
  assert not picked[~in_use].any() and not picked[4].any()


@pytest.mark.parametrize("compression_steps", [2, 3])
def test_the_glancing_decoder_reads_target_codes_where_picked_and_predicted_ones_elsewhere(
    multi30k_tokenizer, monkeypatch, compression_steps):
  """The decoder's input against a NumPy reference built from the quantizer's codebook:
  the target's straight-through code vector at ceil(ratio x wrong) latents, the code
  vector of the predictor's argmax elsewhere; the ratio anneals from glancing_ratio to
  glancing_final_ratio over the joint steps."""
  text = first_short_pairs("val", 6, max_words=30)
  features = {"inputs": padded_ids(multi30k_tokenizer, [en for en, _ in text]),
              "targets": padded_ids(multi30k_tokenizer, [de for _, de in text])}
  hparams = registry.hparams("vq_ema_tiny").derive(
      mask_startup_steps=0, glancing_ratio=0.5, glancing_final_ratio=0.25, train_steps=40,
      compression_steps=compression_steps)
  model = model_class(hparams).from_hparams(hparams)
  captured = {}
  decode_latents = model.decode_latents

  def capture(quantized, lengths, *args, **kwargs):
    captured["decoder_input"] = quantized
    return decode_latents(quantized, lengths, *args, **kwargs)

  draws = []
  uniform = tf.random.uniform

  def recorded_uniform(shape, *args, **kwargs):
    draws.append(uniform(shape, *args, **kwargs))
    return draws[-1]

  monkeypatch.setattr(tf.random, "uniform", recorded_uniform)
  model.decode_latents = capture
  model.loss_and_weight(features, training=True)   # builds; the EMA moves the codebook
  model.quantizer.num_updates.assign(30)           # 3/4 through the joint steps
  np.testing.assert_allclose(float(model.glancing_ratio()), 0.5 - 0.75 * 0.25, rtol=1e-6)
  quantize, predictor_call = model.quantize_targets, model.latent_predictor.call
  seen = {}
  model.quantize_targets = lambda *a, **k: seen.setdefault("targets", quantize(*a, **k))
  model.latent_predictor.call = lambda *a, **k: seen.setdefault("logits", predictor_call(*a, **k))
  draws.clear()
  model.loss_and_weight(features, training=True)
  ratio = 0.5 - 31 / 40 * 0.25   # num_updates is 31 once the step's EMA update ran
  codebook = model.quantizer.codebook.numpy().astype(np.float64)   # [K, hidden]
  targets = seen["targets"]
  logits = seen["logits"].numpy()
  predicted = logits[:, :-1, :hparams.codebook_size].argmax(-1)
  codes, lengths = targets.codes.numpy(), targets.lengths.numpy()
  in_use = np.arange(codes.shape[1])[None] < lengths[:, None]
  latent_draws = [d.numpy() for d in draws if d.shape == codes.shape]
  assert len(latent_draws) == 1   # the gold-token schedule draws per token, not per latent
  picked = numpy_glancing_mask(predicted != codes, in_use, ratio, latent_draws[0])
  assert picked.any() and (~picked & in_use).any()
  expected = np.where(picked[:, :, None], targets.quantized.numpy(), codebook[predicted])
  got = captured["decoder_input"].numpy()
  np.testing.assert_allclose(got[in_use], expected[in_use], rtol=1e-5, atol=1e-6)


def test_the_predictor_shapes_the_codes_only_with_a_positive_weight(multi30k_tokenizer,
                                                                     monkeypatch):
  """The latent predictor's loss reaches the compression network only through
  predictor_gradient_weight x its cross-entropy of the code posterior (float64 NumPy
  reference of the term); at weight 0 its gradient there is none."""
  text = first_short_pairs("val", 6, max_words=30)
  features = {"inputs": padded_ids(multi30k_tokenizer, [en for en, _ in text]),
              "targets": padded_ids(multi30k_tokenizer, [de for _, de in text])}
  gradients = {}
  for weight in (0.0, 0.5):
    keras.utils.set_random_seed(0)
    hparams = registry.hparams("vq_ema_tiny").derive(mask_startup_steps=0,
                                                     predictor_gradient_weight=weight)
    model = model_class(hparams).from_hparams(hparams)
    model.loss_and_weight(features, training=True)   # builds
    seen = {}
    quantize, predictor_call = model.quantize_targets, model.latent_predictor.call
    monkeypatch.setattr(model, "quantize_targets",
                        lambda *a, **k: seen.setdefault("targets", quantize(*a, **k)))
    monkeypatch.setattr(model.latent_predictor, "call",
                        lambda *a, **k: seen.setdefault("logits", predictor_call(*a, **k)))
    # Only the predictor's part: the token loss goes.
    monkeypatch.setattr(model, "decode_targets", lambda quantized, *a, **k: tf.zeros(
        tf.concat([tf.shape(features["targets"]), [hparams.vocab_size]], 0)))
    with tf.GradientTape() as tape:
      total, _ = model.loss_and_weight(features, training=True)
    variables = model.compress.trainable_variables
    gradients[weight] = [g for g in tape.gradient(total, variables) if g is not None]
    if weight:
      targets, logits = seen["targets"], seen["logits"].numpy().astype(np.float64)
      z = targets.latents.numpy().astype(np.float64)
      codebook = model.quantizer.codebook.numpy().astype(np.float64)
      scores = -((z[:, :, None, :] - codebook[None, None]) ** 2).sum(-1) / hparams.temperature
      q = np.exp(scores - scores.max(-1, keepdims=True))
      q /= q.sum(-1, keepdims=True)
      code_logits = logits[:, :-1, :hparams.codebook_size]
      log_p = code_logits - np.log(np.exp(code_logits).sum(-1, keepdims=True))
      in_use = np.arange(z.shape[1])[None] < targets.lengths.numpy()[:, None]
      expected = -((q * log_p).sum(-1) * in_use).sum(1)
      np.testing.assert_allclose(model.predictability_loss(targets, seen["logits"]).numpy(),
                                 expected, rtol=1e-4)
  assert not any(np.abs(g.numpy()).max() > 0 for g in gradients[0.0])
  assert gradients[0.5] and max(np.abs(g.numpy()).max() for g in gradients[0.5]) > 0
