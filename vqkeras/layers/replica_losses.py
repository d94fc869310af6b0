"""Layer losses kept per replica thread, for layers that sum over replicas inside the step."""

import threading

import keras


class ReplicaLocalLosses:
  """Mixin for a `keras.layers.Layer` whose `add_loss` losses are kept per thread.

  Keras keeps `add_loss` losses in one list per layer. MirroredStrategy runs the
  replicas in threads that take turns at every cross-replica sum, and a layer that
  sums inside the step lets another replica run in between: with a shared list one
  replica clears or reads another's losses (its gradients then vanish).
  """

  def _replica_losses(self):
    store = self.__dict__.get("_replica_loss_store")
    if store is None:
      # Set outside Keras' attribute tracking: a thread-local is not layer state.
      store = self.__dict__["_replica_loss_store"] = threading.local()
    if not hasattr(store, "losses"):
      store.losses = []
    return store.losses

  def add_loss(self, loss):
    if keras.src.backend.in_stateless_scope():
      return super().add_loss(loss)
    self._replica_losses().extend(keras.tree.flatten(loss))

  def _get_own_losses(self):
    if keras.src.backend.in_stateless_scope():
      return super()._get_own_losses()
    return list(self._replica_losses())

  def _clear_losses(self):
    super()._clear_losses()
    self._replica_losses().clear()
