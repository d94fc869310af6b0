"""Checkpoint averaging: a run's model weights averaged over several of its checkpoints.

Vaswani et al. 2017 translate with the average of the last 5 checkpoints (Tensor2Tensor's
avg_checkpoints, fairseq's average_checkpoints). The average is written as a run of its
own (bin/average_checkpoints), which every tool then reads as any run. Choosing the
checkpoints needs no TensorFlow (examples/translate_multi30k.py imports this module).
"""

import dataclasses
import pathlib

import numpy as np


def checkpoint_paths(model_dir, last=0, steps=()):
  """The checkpoints of the run in model_dir to average, oldest first: those of `steps`,
  else the `last` latest (0: every one there). Every `ckpt-<step>` file there counts, the
  ones the run's CheckpointManager no longer lists included.

  Raises:
    FileNotFoundError: model_dir has no checkpoint, or none of a step asked for (the
      message names the steps there).
  """
  directory = pathlib.Path(model_dir) / "checkpoints"
  kept = sorted((str(index.with_suffix("")) for index in directory.glob("ckpt-*.index")),
                key=checkpoint_step)
  if not kept:
    raise FileNotFoundError(f"No checkpoint in {directory}; train first.")
  if not steps:
    return kept[-last:] if last else kept
  by_step = {checkpoint_step(path): path for path in kept}
  missing = [step for step in steps if step not in by_step]
  if missing:
    raise FileNotFoundError(
        f"No checkpoint of step {', '.join(map(str, missing))} in {directory}; it keeps "
        f"steps {', '.join(map(str, sorted(by_step)))}.")
  return [by_step[step] for step in sorted(set(steps))]


def checkpoint_step(path):
  """The step of a CheckpointManager path `.../ckpt-<step>`."""
  return int(path.rsplit("-", 1)[1])


def average_checkpoints(run, paths, output_dir):
  """A run like `run` (a Run) with every float variable of its model (weights, EMA
  codebook statistics) the mean of its values in the checkpoints `paths`; the other
  variables and the optimizer are the last checkpoint's. Saved in output_dir (a new run
  directory) as a checkpoint of the last one's step; `run` is not changed.

  Raises:
    FileExistsError: output_dir holds checkpoints already (nothing is written).
    TrainingError: the average is not finite (not saved).
  """
  averaged = type(run)(dataclasses.replace(run.config, model_dir=str(output_dir)),
                       run.strategy, log=run.log)
  if averaged.latest_checkpoint:
    raise FileExistsError(f"--output_dir={output_dir} holds checkpoints already "
                          f"({averaged.latest_checkpoint}); give a new directory.")
  floats = [v for v in averaged.model.variables if np.issubdtype(v.numpy().dtype, np.floating)]
  sums = [np.zeros(v.shape, np.float64) for v in floats]
  for path in paths:
    averaged.checkpoint.restore(path).assert_existing_objects_matched()
    for total, variable in zip(sums, floats):
      total += variable.numpy()
  for total, variable in zip(sums, floats):   # the last checkpoint is restored
    variable.assign((total / len(paths)).astype(variable.numpy().dtype))
  averaged.save()
  return averaged
