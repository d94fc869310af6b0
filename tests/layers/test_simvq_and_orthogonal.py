"""VectorQuantizer's remedies for codebook collapse: SimVQ's linear map of a frozen basis
and the orthogonal regularization, against float64 NumPy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from replicas import per_replica
from round_trip import check_round_trips
from vqkeras.layers import VectorQuantizer


def patches_and_basis(cifar_patches, size=32, depth=8, seed=0):
  """Inputs: real patches through a fixed projection; the basis: random codes."""
  rng = np.random.default_rng(seed)
  x = cifar_patches[:256].astype(np.float64) @ rng.normal(size=(48, depth)) / 7.0
  return x, rng.normal(size=(size, depth)) * 0.5


def simvq(basis, **kwargs):
  layer = VectorQuantizer(len(basis), update="gradient", codebook_transform="linear",
                          codebook_initializer=keras.initializers.Constant(basis[None]),
                          seed=0, **kwargs)
  layer.build((None, basis.shape[1]))
  return layer


def test_simvq_codes_are_the_basis_times_the_learned_map(cifar_patches):
  x, basis = patches_and_basis(cifar_patches)
  layer = simvq(basis)
  w = np.random.default_rng(1).normal(size=(8, 8)) * 0.4 + np.eye(8)
  layer.code_transform.assign(w[None])
  codebook = basis @ w
  np.testing.assert_allclose(layer.codebook.numpy(), codebook, rtol=1e-5, atol=1e-6)
  out = layer(x.astype(np.float32), return_codes=True)
  nearest = np.argmin(((x[:, None] - codebook[None]) ** 2).sum(-1), -1)
  np.testing.assert_array_equal(out.codes.numpy()[:, 0], nearest)
  np.testing.assert_allclose(out.quantized.numpy(), codebook[nearest], rtol=1e-5, atol=1e-6)
  assert [v.path.split("/")[-1] for v in layer.trainable_weights] == ["code_transform"]


def test_simvq_codebook_loss_gradient_reaches_the_map_and_moves_every_code(cifar_patches):
  """dL/dW = C^T G, G_k = sum over the positions of code k of 2 (e_k - x) / (N d); one
  step moves all K codes, used or not."""
  x, basis = patches_and_basis(cifar_patches)
  layer = simvq(basis)
  with tf.GradientTape() as tape:
    out = layer(x.astype(np.float32), training=True, return_codes=True)
    codebook_loss = layer.losses[1]
  codes = out.codes.numpy()[:, 0]
  g = np.zeros_like(basis)
  np.add.at(g, codes, 2 * (basis[codes] - x) / (len(x) * 8))
  grad = tape.gradient(codebook_loss, layer.code_transform).numpy()[0]
  np.testing.assert_allclose(grad, basis.T @ g, rtol=1e-4, atol=1e-7)
  assert len(np.unique(codes)) < len(basis)   # some codes unused...
  before = layer.codebook.numpy()
  layer.code_transform.assign_sub(0.5 * grad[None])
  moved = np.abs(layer.codebook.numpy() - before).max(-1) > 0
  assert moved.all()   # ...and all of them move


def test_mirrored_simvq_and_orthogonal_train_as_one_device(cifar_patches, mirrored_strategy):
  """Two replicas: the map's and the codebook's gradients (codebook, commitment and
  orthogonal losses as the train step sums them) equal one device's on the global batch."""
  x, basis = patches_and_basis(cifar_patches, size=16)
  x = x[:128].astype(np.float32)

  def gradients(strategy):
    with strategy.scope():
      layers = [simvq(basis, orthogonal_weight=0.2),
                VectorQuantizer(16, update="gradient", orthogonal_weight=0.2,
                                orthogonal_used_only=True, seed=0,
                                codebook_initializer=keras.initializers.Constant(basis[None]))]
      layers[1].build((None, 8))   # simvq() builds its layer
    replicas, global_batch = strategy.num_replicas_in_sync, len(x)

    def replica_step(x):
      with tf.GradientTape() as tape:
        loss = 0.0
        for layer in layers:
          loss += tf.reduce_sum(layer(x, training=True)) / global_batch
          loss += tf.add_n(layer.losses) / replicas
      variables = [layer.trainable_weights[0] for layer in layers]
      return tape.gradient(loss, variables)

    @tf.function
    def step(x):
      grads = strategy.run(replica_step, args=(x,))
      return [strategy.reduce("SUM", g, axis=None) for g in grads]

    return step(per_replica(strategy, x))

  want = gradients(tf.distribute.OneDeviceStrategy("/cpu:0"))
  got = gradients(mirrored_strategy)
  for a, b in zip(want, got):
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-7)


def orthogonal_reference(codebook, used=None):
  unit = codebook / np.linalg.norm(codebook, axis=-1, keepdims=True)
  if used is not None:
    unit = unit[used]
  n = len(unit)
  return ((unit @ unit.T) ** 2).sum() / n ** 2 - 1 / n


@pytest.mark.parametrize("used_only", [False, True])
def test_orthogonal_loss_by_hand(cifar_patches, used_only):
  x, codebook = patches_and_basis(cifar_patches)
  layer = VectorQuantizer(len(codebook), update="gradient", orthogonal_weight=0.3,
                          orthogonal_used_only=used_only, seed=0,
                          codebook_initializer=keras.initializers.Constant(codebook[None]))
  valid = np.arange(len(x)) % 2 == 0
  out = layer(x.astype(np.float32), training=True, mask=valid, return_codes=True)
  used = np.isin(np.arange(len(codebook)), out.codes.numpy()[valid, 0]) if used_only else None
  assert used is None or not used.all()
  np.testing.assert_allclose(float(layer.losses[2]), 0.3 * orthogonal_reference(codebook, used),
                             rtol=1e-5)
  # Orthogonal codes cost nothing (a fixed point of the regularization).
  eye = np.eye(8)
  flat = VectorQuantizer(8, update="gradient", orthogonal_weight=1.0,
                         codebook_initializer=keras.initializers.Constant(eye[None]))
  flat(x.astype(np.float32), training=True)
  assert abs(float(flat.losses[2])) < 1e-7


def test_simvq_round_trips(tmp_path, cifar_patches):
  check_round_trips(VectorQuantizer(16, update="gradient", codebook_transform="linear",
                                    orthogonal_weight=0.1, seed=2, name="simvq"),
                    8, cifar_patches, tmp_path)


@pytest.mark.parametrize("kwargs, message", [
    (dict(update="ema", codebook_transform="linear"), "invalid update='ema'.*SimVQ"),
    (dict(update="gradient", codebook_transform="affine"), "invalid codebook_transform"),
    (dict(update="gradient", codebook_transform="linear", restart_dead_codes=True),
     "invalid restart_dead_codes"),
    (dict(update="soft_em", orthogonal_weight=0.1), "invalid orthogonal_weight=0.1.*EMA"),
    (dict(update="gradient", orthogonal_weight=-1.0), "invalid orthogonal_weight=-1.0"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
  with pytest.raises(ValueError, match=message):
    VectorQuantizer(16, **kwargs)


def test_kmeans_init_is_refused_under_simvq(cifar_patches):
  x, basis = patches_and_basis(cifar_patches)
  with pytest.raises(ValueError, match="invalid codebook_transform='linear'.*kmeans_init"):
    simvq(basis).kmeans_init(x.astype(np.float32))
