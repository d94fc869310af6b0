"""The CIFAR VQ-VAE: bits/dim by hand, the prior's likelihood step by step, sampling, learning."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import TESTDATA
from vqkeras import registry
from vqkeras import train_step
from vqkeras.models import ImageVQVAE
from vqkeras.problems.image_cifar10 import read_cifar10_binary


@pytest.fixture(scope="module")
def images():
  return read_cifar10_binary([TESTDATA / "cifar10" / "cifar-10-batches-bin" /
                              "data_batch_1.bin"])[0]


def tiny_model(images, prior_factorization):
  keras.utils.set_random_seed(0)
  hparams = registry.hparams("vq_em_cifar_tiny").derive(prior_factorization=prior_factorization,
                                                       num_blocks=4)
  model = ImageVQVAE.from_hparams(hparams)
  model.loss_and_weight({"image": images[:2]})
  return model


@pytest.fixture(params=["positions", "raster"])
def model(images, request):
  """The model with each prior: both must be exact likelihoods in the same order."""
  return tiny_model(images, request.param)


@pytest.fixture
def positions_model(images):
  return tiny_model(images, "positions")


def prior_transformers(prior):
  if hasattr(prior, "stack"):
    return [prior.stack]
  return [prior.position_transformer, prior.block_transformer]


def test_shapes(positions_model, images):
  model = positions_model
  assert model(images[:3]).shape == (3, 32, 32, 3, 256)
  codes = model.encode_images(images[:3])
  assert codes.shape == (3, 8, 8, 4) and codes.dtype == tf.int32
  assert model.decode_codes(codes).shape == (3, 32, 32, 3)


def test_bits_per_dim_of_uniform_distributions_by_hand(model, images):
  """Zero output layers give uniform pixels (8 bits) and uniform codes (log2 K bits each)."""
  for layer in (model.decoder.layers[-1], model.prior.head):
    for weight in layer.weights:
      weight.assign(tf.zeros_like(weight))
  sums = model.metric_sums({"image": images[:4]})
  dims = 4 * 32 * 32 * 3
  codes_per_image = 8 * 8 * 4
  expected_prior = codes_per_image * math.log2(32) / (32 * 32 * 3)   # 0.2083 bits/dim
  got = {name: float(total) / float(weight) for name, (total, weight) in sums.items()}
  assert float(sums["bits_per_dim_total"][1]) == dims
  np.testing.assert_allclose(got["bits_per_dim_reconstruction"], 8.0, rtol=1e-6)
  np.testing.assert_allclose(got["bits_per_dim_prior"], expected_prior, rtol=1e-6)
  np.testing.assert_allclose(got["bits_per_dim_total"], 8.0 + expected_prior, rtol=1e-6)
  # The mean of a uniform pixel is 127.5: 0 on the model's [-1, 1] scale.
  scaled = images[:4].astype(np.float64) / 127.5 - 1
  np.testing.assert_allclose(got["mse"], (scaled ** 2).mean(), rtol=1e-5)


def test_prior_likelihood_equals_a_token_by_token_evaluation(model, images):
  prior = model.prior
  codes = model.encode_images(images[:2]).numpy()
  full = prior.negative_log_likelihood(codes).numpy()
  tokens = codes.reshape(2, -1)
  rng = np.random.default_rng(0)
  step_by_step = np.zeros(2)
  for t in range(tokens.shape[1]):
    # Everything from t on is replaced: the logits at t must depend on tokens < t only.
    scrambled = tokens.copy()
    scrambled[:, t:] = rng.integers(0, 32, size=scrambled[:, t:].shape)
    logits = prior(scrambled.reshape(codes.shape)).numpy().reshape(2, -1, 32)[:, t]
    log_probs = logits - np.log(np.exp(logits.astype(np.float64)).sum(-1, keepdims=True))
    step_by_step -= log_probs[np.arange(2), tokens[:, t]]
  np.testing.assert_allclose(full, step_by_step, rtol=1e-4)


def test_samples_are_valid_images(model):
  samples = model.sample(3, temperature=1.0, seed=(4, 5))
  assert samples.shape == (3, 32, 32, 3) and samples.dtype == tf.uint8
  codes = model.prior.sample(3, seed=(4, 5)).numpy()
  assert codes.shape == (3, 8, 8, 4) and codes.min() >= 0 and codes.max() < 32


def test_each_sampled_code_is_the_draw_from_its_teacher_forced_distribution(model):
  # Sampling decodes one position at a time with a cache; the prior's call reads the
  # whole grid at once. Token t is drawn with the seed folded with t, so redrawing
  # every token from the teacher-forced logits of the sampled grid must give it back.
  prior, seed, temperature = model.prior, tf.constant((4, 5)), 0.7
  for stack in prior_transformers(prior):   # sharper distributions than at initialization
    for layer in stack.layers_:
      for weight in layer.feed_forward.weights:
        weight.assign(weight * 4.0)
  codes = prior.sample(3, temperature, seed=seed)
  logits = tf.reshape(prior(codes), [3, -1, prior.codebook_size]) / temperature
  redrawn = [tf.random.stateless_categorical(
      logits[:, t], 1, tf.random.experimental.stateless_fold_in(seed, t), dtype=tf.int32)[:, 0]
             for t in range(logits.shape[1])]
  np.testing.assert_array_equal(tf.stack(redrawn, axis=1).numpy(),
                                tf.reshape(codes, [3, -1]).numpy())
  assert len(np.unique(codes.numpy())) > 8   # draws, not one repeated code


@pytest.mark.parametrize("bottleneck, overrides, codebook_size", [
    ("rvq", dict(num_blocks=4), 32),                                    # 4 levels of 32
    ("fsq", dict(num_blocks=4, fsq_levels="5x3", latent_depth=8), 15),  # 4 groups of 2
    ("gumbel", dict(num_blocks=1), 32),
    ("rvq", dict(num_blocks=2, groups=2), 32),                          # 2 groups x 2 levels
    ("rfsq", dict(num_blocks=3, fsq_levels="5x3", latent_depth=2), 15),  # 3 stages of 2
    ("lfq", dict(num_blocks=2, codebook_size=16, latent_depth=8), 16),  # 2 codes of 4 bits
    ("bsq", dict(num_blocks=2, codebook_size=16, latent_depth=8), 16),
    ("simvq", dict(num_blocks=2, orthogonal_weight=0.1), 32),
])
def test_each_bottleneck_sizes_the_prior_and_trains(images, bottleneck, overrides,
                                                    codebook_size):
  """Every kind but the VQ rules in the same model: B codes of K per position
  size the prior (uniform outputs: 8 bits/dim and 64 * B * log2(K) prior bits per image,
  by hand), codes round trip, and a training step gives a finite loss."""
  keras.utils.set_random_seed(0)
  hparams = registry.hparams("vq_em_cifar_tiny").derive(bottleneck=bottleneck, **overrides)
  blocks = hparams.num_blocks * hparams.groups
  model = ImageVQVAE.from_hparams(hparams)
  optimizer = keras.optimizers.Adam(1e-3)
  train_step.build(model, optimizer, {"image": images[:8]})
  step = train_step.make_train_step(model, optimizer)
  assert all(np.isfinite(float(step({"image": images[8 * i:8 * i + 8]})["loss"]))
             for i in range(2))
  codes = model.encode_images(images[:3])
  assert codes.shape == (3, 8, 8, blocks) and codes.numpy().max() < codebook_size
  assert model.decode_codes(codes).shape == (3, 32, 32, 3)
  for layer in (model.decoder.layers[-1], model.prior.head):
    for weight in layer.weights:
      weight.assign(tf.zeros_like(weight))
  sums = model.metric_sums({"image": images[:4]})
  got = {name: float(total) / float(weight) for name, (total, weight) in sums.items()}
  np.testing.assert_allclose(got["bits_per_dim_reconstruction"], 8.0, rtol=1e-6)
  np.testing.assert_allclose(got["bits_per_dim_prior"],
                             64 * blocks * math.log2(codebook_size) / 3072, rtol=1e-6)


def test_the_logistic_mixture_likelihood_gives_an_exact_bound(images):
  """Zero decoder outputs: every component is the logistic at 127.5 with scale 127.5,
  so each value's probability is a difference of two sigmoids (by hand, float64)."""
  keras.utils.set_random_seed(0)
  hparams = registry.hparams("vq_em_cifar_tiny").derive(pixel_likelihood="logistic_mixture",
                                                       num_mixtures=4)
  model = ImageVQVAE.from_hparams(hparams)
  optimizer = keras.optimizers.Adam(1e-3)
  train_step.build(model, optimizer, {"image": images[:8]})
  step = train_step.make_train_step(model, optimizer)
  assert np.isfinite(float(step({"image": images[8:16]})["loss"]))
  assert model.decoder.layers[-1].filters == 3 * 3 * 4
  assert model.decode_codes(model.encode_images(images[:2])).shape == (2, 32, 32, 3)
  for weight in model.decoder.layers[-1].weights:
    weight.assign(tf.zeros_like(weight))
  sums = model.metric_sums({"image": images[:4]})
  v = images[:4].astype(np.float64)
  sigmoid = lambda x: 1 / (1 + np.exp(-(x - 127.5) / 127.5))   # pylint: disable=unnecessary-lambda-assignment
  p = np.where(v == 255, 1.0, sigmoid(v + 0.5)) - np.where(v == 0, 0.0, sigmoid(v - 0.5))
  np.testing.assert_allclose(float(sums["bits_per_dim_reconstruction"][0]) /
                             float(sums["bits_per_dim_reconstruction"][1]),
                             -np.log2(p).mean(), rtol=1e-5)


def test_a_few_steps_on_real_records_lower_the_loss(positions_model, images):
  model = positions_model
  optimizer = keras.optimizers.Adam(3e-3)
  batches = images[:96].reshape((6, 16) + images.shape[1:])   # 10 passes over 96 images
  train_step.build(model, optimizer, {"image": batches[0]})
  step = train_step.make_train_step(model, optimizer)
  losses = [float(step({"image": batches[i % 6]})["loss"]) for i in range(60)]
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1, losses
