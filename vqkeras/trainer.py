"""The training loop behind bin/train: one loop for one device, many devices or many machines.

A custom loop (Keras' fit does not run MultiWorkerMirroredStrategy) around
`vqkeras.train_step`'s step, on a `vqkeras.run.Run`. Re-running the same command
resumes from the latest checkpoint. SIGTERM (preemption) checkpoints and exits; a
NaN or Inf loss stops training and keeps the last good checkpoint. A model trained
in stages (`training_stage`) has each stage's step traced when it begins.
"""

import math
import signal

import tensorflow as tf

from vqkeras import evaluation
from vqkeras import reporting
from vqkeras import train_step
from vqkeras.run import TrainingError


def _first_replica(value, strategy):
  """The first replica's value of a step's output (the value itself on one device)."""
  return strategy.experimental_local_results(value)[0]


class Trainer:
  """Trains a run.

  Args:
    run: a `vqkeras.run.Run`.
  """

  def __init__(self, run):
    self.run = run
    self.evaluator = evaluation.Evaluator(run)
    self._stop_signal = None

  def _distributed_step(self, iterator):
    run = self.run
    step_fn = train_step.train_step_fn(run.model, run.optimizer, run.hparams.clip_grad_norm)
    if run.config.jit_compile:
      step_fn = tf.function(step_fn, jit_compile=True)

    @tf.function(input_signature=[iterator.element_spec])
    def step(features):
      parts = run.strategy.run(step_fn, args=(features,))
      return {name: _first_replica(value, run.strategy) for name, value in parts.items()}
    return step

  def _on_signal(self, signum, frame):
    del frame
    self._stop_signal = signum

  def train(self, train_steps, eval_every=0, checkpoint_every=500, log_every=50):
    """Trains up to `train_steps` (global) steps, resuming from the latest checkpoint.

    Returns:
      {"train": the reported rows (one per log_every steps and the last step: loss,
      auxiliary, rates, learning rate, codebook health), "eval": the evaluations'
      metrics, "stopped_by": the signal that stopped training, or None}.
    """
    run = self.run
    history = {"train": [], "eval": [], "stopped_by": None}
    start_step = run.restore()
    if start_step >= train_steps:
      run.log(f"Already trained to step {start_step} >= --train_steps={train_steps}.")
      return history
    iterator = iter(run.training_batches(start_step))
    stage, step_fn = None, None
    report = reporting.TrainingReport(run.model_dir, run.optimizer, run.quantizers,
                                      run.model.loss_unit, start_step, run.chief, run.log)
    previous = signal.signal(signal.SIGTERM, self._on_signal)
    last_good = run.latest_checkpoint
    try:
      while run.step < train_steps:
        current = run.model.training_stage(run.step, train_steps)
        if step_fn is None or current != stage:
          stage = current
          if stage is not None:
            run.model.enter_training_stage(stage)
            run.log(f"Step {run.step}: training stage {stage}.")
          step_fn = self._distributed_step(iterator)   # traced for the stage's variables
        parts = {name: value.numpy() for name, value in step_fn(next(iterator)).items()}
        step = run.step
        if not (math.isfinite(parts["loss"]) and math.isfinite(parts["auxiliary"])):
          raise TrainingError(
              f"The loss became {parts['loss']} (auxiliary {parts['auxiliary']}) at step "
              f"{step}; training stopped without saving it. The last good checkpoint is "
              f"{last_good or 'none (no checkpoint was written yet)'}; rerunning resumes from "
              f"it. A lower learning_rate (--hparams_overrides) usually helps.")
        report.add(parts)
        if step % log_every == 0 or step == train_steps:
          history["train"].append(report.report(step, train_steps, parts))
        if checkpoint_every and step % checkpoint_every == 0:
          last_good = run.save()
        if eval_every and step % eval_every == 0 and step < train_steps:
          history["eval"].append(self.evaluator.evaluate("validation"))
        if self._stop_signal is not None:
          path = run.save()
          run.log(f"Received signal {self._stop_signal}: saved {path} at step {step}; "
                  f"rerun the same command to resume.")
          history["stopped_by"] = self._stop_signal
          return history
      path = run.save()
      run.log(f"Trained to step {run.step}; saved {path}.")
      if eval_every:
        history["eval"].append(self.evaluator.evaluate("validation"))
      return history
    finally:
      signal.signal(signal.SIGTERM, previous)
      report.flush()
