"""The private Keras 3 calls vqkeras needs, here only, each where Keras offers no public way.

tests/test_keras_compat.py fails when a Keras release changes one of them.
"""

import threading

import keras


def _in_stateless_scope():
  # Public as keras.StatelessScope, but not the test of being inside one.
  return keras.src.backend.in_stateless_scope()


class PerReplicaLosses:
  """A mixin for a layer whose `add_loss` losses stay with the replica thread that added them.

  Keras keeps `add_loss` losses in one list per layer. MirroredStrategy runs the
  replicas in threads that take turns at every cross-replica sum, and a layer that
  sums inside the step (as VectorQuantizer does) lets one replica clear or read
  another's losses from a shared list (the other's gradients then vanish). Keras
  has no public hook for where a layer keeps its losses: this overrides the two it
  calls, `_get_own_losses` (from `losses`) and `_clear_losses` (before each call).
  In a StatelessScope (Keras' functional calls) the scope keeps the losses, per call,
  and Keras' own code runs.
  """

  def _replica_losses(self):
    store = self.__dict__.setdefault("_per_replica_losses", threading.local())
    if not hasattr(store, "losses"):
      store.losses = []
    return store.losses

  def add_loss(self, loss):
    if _in_stateless_scope():
      return super().add_loss(loss)
    self._replica_losses().extend(keras.tree.flatten(loss))
    return None

  def _get_own_losses(self):
    if _in_stateless_scope():
      return super()._get_own_losses()
    return list(self._replica_losses())

  def _clear_losses(self):
    super()._clear_losses()
    self._replica_losses().clear()
