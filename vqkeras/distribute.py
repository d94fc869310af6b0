"""Choosing a tf.distribute strategy: one device, all local GPUs, or many machines."""

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


def split_cpu(num_devices):
  """Splits the CPU into `num_devices` logical devices (before TensorFlow first uses it).

  Lets multi-device training run and be tested without GPUs.
  """
  if num_devices <= 1:
    return
  cpus = tf.config.list_physical_devices("CPU")
  try:
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices)
  except RuntimeError as error:
    raise ValueError(f"--cpu_devices={num_devices} must be set before TensorFlow starts; "
                     f"{error}") from error


def _replica_context():
  """The replica context of a multi-replica step, or None (one replica, or cross-replica
  context, where the whole batch is at hand)."""
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return None
  return context


def num_replicas():
  """Replicas in the step that runs this code (1 outside a multi-replica step)."""
  context = _replica_context()
  return 1 if context is None else context.num_replicas_in_sync


def replica_id():
  """This replica's index in the step (0 outside a multi-replica step)."""
  context = _replica_context()
  return 0 if context is None else context.replica_id_in_sync_group


def sum_over_replicas(values):
  """Sums a tensor or a nest of tensors over the replicas of the step, in one all-reduce."""
  context = _replica_context()
  if context is None:
    return values
  return context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def gather_over_replicas(values):
  """A tensor's values of every replica of the step, concatenated along axis 0."""
  context = _replica_context()
  if context is None:
    return values
  return context.all_gather(values, axis=0)


def global_mean(values, weights=None):
  """A replica's share of the mean of `values` `[n]` over the global batch's entries
  (`weights` `[n]`: 1 for entries to count, 0 for the rest; None counts every entry).

  Keras scales each replica's losses by 1/replicas and sums them, so a replica adds
  replicas x its sum over the global count: replicas holding different numbers of valid
  entries (token batches) would bias a mean of per-replica means.
  """
  weights = tf.ones_like(values) if weights is None else tf.cast(weights, values.dtype)
  count = sum_over_replicas(tf.reduce_sum(weights))
  return num_replicas() * tf.math.divide_no_nan(tf.reduce_sum(values * weights), count)


def make_strategy(name="auto"):
  """The strategy called `name`.

  auto: MirroredStrategy over the local GPUs when there are several, else over
  the logical CPUs when --cpu_devices split them, else the default strategy.
  multi_worker: MultiWorkerMirroredStrategy configured by the TF_CONFIG variable.
  """
  if name not in STRATEGIES:
    raise ValueError(f"Unknown --strategy={name!r}; expected one of {', '.join(STRATEGIES)}.")
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                       "(the cluster's workers and this worker's index).")
    # Before anything lists devices: collectives must be set up as TensorFlow starts.
    return tf.distribute.MultiWorkerMirroredStrategy()
  gpus = tf.config.list_logical_devices("GPU")
  cpus = tf.config.list_logical_devices("CPU")
  if name == "mirrored" or (name == "auto" and (len(gpus) > 1 or len(cpus) > 1)):
    devices = [d.name for d in gpus] if len(gpus) > 1 else [d.name for d in cpus]
    return tf.distribute.MirroredStrategy(devices)
  device = gpus[0].name if gpus else cpus[0].name
  return tf.distribute.OneDeviceStrategy(device)


def is_chief():
  """True on the worker that writes checkpoints and summaries (the only one without TF_CONFIG)."""
  config = json.loads(os.environ.get("TF_CONFIG", "{}"))
  task = config.get("task", {})
  if not task:
    return True
  return task.get("type") == "chief" or (task.get("type") == "worker" and
                                        task.get("index") == 0 and
                                        "chief" not in config.get("cluster", {}))


def worker_index():
  """This worker's index in TF_CONFIG (0 without it)."""
  return json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0)
