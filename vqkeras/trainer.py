"""The training loop behind bin/train and bin/eval: one loop for one device, many, many machines.

A custom loop (Keras' fit does not run MultiWorkerMirroredStrategy) around
`vqkeras.train_step`'s step. It keeps in --model_dir:
  config.json      the problem and hyper-parameters; a different run is refused there
  checkpoints/     tf.train.CheckpointManager: model (codebook EMA state and the
                   layers' random state included), optimizer, step
  train/, eval/    TensorBoard events
Re-running the same command resumes from the latest checkpoint. SIGTERM
(preemption) checkpoints and exits; a NaN or Inf loss stops training and keeps
the last good checkpoint.
"""

import dataclasses
import json
import math
import pathlib
import signal
import time

import keras
import tensorflow as tf

from vqkeras import beam_search
from vqkeras import bleu
from vqkeras import distribute
from vqkeras import files
from vqkeras import hparams_lib
from vqkeras import registry
from vqkeras import train_step
from vqkeras import translate
from vqkeras.layers import VectorQuantizer


class TrainingError(RuntimeError):
  """Training cannot go on (diverged, or a model_dir that belongs to another run)."""


# How long a run trains (and how it splits those steps), not what it is: a run may be
# resumed, evaluated or decoded with another value (as with --train_steps).
BUDGET_HPARAMS = ("train_steps", "predictor_only_steps")


class ModelDirMismatch(ValueError):
  """--model_dir holds a run of another problem or other hyper-parameters."""


def _first_replica(value):
  return value.values[0] if hasattr(value, "values") else value


def format_seconds(seconds):
  seconds = int(seconds)
  hours, rest = divmod(seconds, 3600)
  return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


@dataclasses.dataclass
class TrainConfig:
  """What a run of bin/train is, besides the hyper-parameters."""
  problem: str
  hparams: str
  hparams_overrides: str = ""
  data_dir: str = ""
  raw_dir: str = ""
  model_dir: str = ""
  seed: int = 1
  mixed_precision: str = "none"     # none, mixed_float16 or mixed_bfloat16
  jit_compile: bool = False         # XLA on each replica's step (compiled per batch shape)


class Trainer:
  """Builds the model of a problem and hyper-parameter set under a strategy, and trains it.

  Args:
    config: a TrainConfig.
    strategy: a tf.distribute strategy (vqkeras.distribute.make_strategy).
    log: function of a line of progress.
  """

  def __init__(self, config, strategy, log=print):
    self.config, self.strategy, self.log = config, strategy, log
    self.problem = registry.problem(config.problem)
    self.hparams = registry.hparams(config.hparams, config.hparams_overrides)
    self.model_dir = pathlib.Path(config.model_dir)
    self.chief = distribute.is_chief()
    if (config.jit_compile and strategy.num_replicas_in_sync > 1 and
        not tf.config.list_logical_devices("GPU")):
      raise ValueError("--jit_compile runs on one CPU device or on GPUs: XLA compiles a CPU "
                       "step for the first device, which cannot read the other logical CPU "
                       "devices' variables. Drop --jit_compile or --cpu_devices.")
    self._check_model_dir()
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision != "none":
      keras.mixed_precision.set_global_policy(config.mixed_precision)
    model_class = registry.model_class(self.hparams)
    with strategy.scope():
      self.model = model_class.from_hparams(self.hparams)
      optimizer = model_class.make_optimizer(self.hparams)
      if config.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
      self.optimizer = optimizer
      self.quantizers = [layer for layer in self.model._flatten_layers()
                         if isinstance(layer, VectorQuantizer)]
      self._build()
    self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
    # Every worker saves (collectives may be involved); the others' copies stay out of
    # the chief's way in .worker<i>/.
    directory = (self.model_dir / "checkpoints" if self.chief else
                 self.model_dir / f".worker{distribute.worker_index()}" / "checkpoints")
    self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=5)
    self._stop_signal = None
    self._translators = {}

  @classmethod
  def from_model_dir(cls, model_dir, data_dir, raw_dir="", strategy=None, log=print):
    """The Trainer of the run recorded in model_dir/config.json, restored to its latest checkpoint.

    Raises:
      FileNotFoundError: no run or no checkpoint there.
    """
    path = pathlib.Path(model_dir) / "config.json"
    if not path.is_file():
      raise FileNotFoundError(f"No run in {model_dir}: {path} is missing; train with bin/train "
                              f"--model_dir={model_dir} first.")
    recorded = json.loads(path.read_text())
    registered = registry.hparams(recorded["hparams"])
    values = type(registered).recorded_values(recorded["hparams_values"])
    overrides = ",".join(f"{name}={value}" for name, value in values.items()
                         if getattr(registered, name, None) != value)
    config = TrainConfig(problem=recorded["problem"], hparams=recorded["hparams"],
                         hparams_overrides=overrides, data_dir=str(data_dir),
                         raw_dir=str(raw_dir or ""), model_dir=str(model_dir))
    trainer = cls(config, strategy or tf.distribute.get_strategy(), log=log)
    if not trainer.manager.latest_checkpoint:
      raise FileNotFoundError(f"No checkpoint in {model_dir}/checkpoints; train first.")
    trainer.restore()
    return trainer

  # Setup.

  def _check_model_dir(self):
    """Refuses a model_dir of another run; records this run's config in a new one."""
    path = self.model_dir / "config.json"
    mine = {"problem": self.config.problem, "hparams": self.config.hparams,
            "hparams_values": dataclasses.asdict(self.hparams)}
    if path.is_file():
      theirs = json.loads(path.read_text())
      differences = [f"problem: {theirs.get('problem')} here, {mine['problem']} asked"] \
          if theirs.get("problem") != mine["problem"] else []
      differences += [f"{name}: {here!r} here, {asked!r} asked" for name, (here, asked) in
                      hparams_lib.value_differences(
                          type(self.hparams).recorded_values(theirs.get("hparams_values", {})),
                          mine["hparams_values"]).items()
                      if name not in BUDGET_HPARAMS]
      if differences:
        raise ModelDirMismatch(
            f"--model_dir={self.model_dir} holds a run of --problem={theirs.get('problem')} "
            f"--hparams={theirs.get('hparams')} that differs from this one in:\n  " +
            "\n  ".join(differences) + "\nNothing was changed there; use another --model_dir.")
    elif self.chief:
      with files.atomic_write(path) as partial:
        partial.write_text(json.dumps(mine, indent=2, sort_keys=True))

  def _dataset(self, split, training, input_context=None, seed=None):
    return self.problem.dataset(split, self.config.data_dir, self.config.raw_dir or None,
                                self.hparams, training=training,
                                seed=self.config.seed if seed is None else seed,
                                input_context=input_context)

  def training_batches(self, start_step):
    """The endless training batches of a run (re)started at `start_step`, distributed.

    The iterator's position is not checkpointed: a resumed run shuffles with the seed
    plus its start step, so it draws a new order instead of replaying the first
    batches of the run.
    """
    seed = self.config.seed + start_step
    return self.strategy.distribute_datasets_from_function(
        lambda context: self._dataset("train", True, context, seed=seed).repeat())

  def _build(self):
    """Creates every variable (in cross-replica context) by running one batch through."""
    batch = next(iter(self._dataset("train", training=True).take(1)))
    self.model.loss_and_weight(batch, training=False)
    self.optimizer.build(self.model.trainable_variables)
    for quantizer in self.quantizers:
      for metric in quantizer.metrics:
        metric.reset_state()

  @property
  def step(self):
    return int(self.optimizer.iterations.numpy())

  def restore(self):
    """Restores the latest checkpoint, if any; returns its step."""
    latest = self.manager.latest_checkpoint
    if latest:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
      self.log(f"Resuming from step {self.step} ({latest}).")
    return self.step

  def save(self):
    """Writes a checkpoint of the current step; refuses weights that are not finite."""
    bad = [v.path for v in self.model.trainable_variables
           if not bool(tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))))]
    if bad:
      raise TrainingError(f"Weights became NaN or Inf at step {self.step} ({', '.join(bad[:3])}"
                          f"{' ...' if len(bad) > 3 else ''}); not saved. The last good "
                          f"checkpoint is {self.manager.latest_checkpoint or 'none'}; rerunning "
                          f"resumes from it. A lower learning_rate usually helps.")
    return self.manager.save(checkpoint_number=self.step)

  # Training.

  def _stage(self, train_steps):
    """The training stage of the current step, for a model trained in stages (one with
    `training_stage(step, train_steps)` and `enter_training_stage(stage)`); else None."""
    if not hasattr(self.model, "training_stage"):
      return None
    return self.model.training_stage(self.step, train_steps)

  def _distributed_step(self, iterator):
    step_fn = train_step.train_step_fn(self.model, self.optimizer, self.hparams.clip_grad_norm)
    if self.config.jit_compile:
      step_fn = tf.function(step_fn, jit_compile=True)

    @tf.function(input_signature=[iterator.element_spec])
    def step(features):
      parts = self.strategy.run(step_fn, args=(features,))
      return {name: _first_replica(value) for name, value in parts.items()}
    return step

  def _on_signal(self, signum, frame):
    del frame
    self._stop_signal = signum

  def train(self, train_steps, eval_every=0, checkpoint_every=500, log_every=50):
    """Trains up to `train_steps` (global) steps, resuming from the latest checkpoint."""
    start_step = self.restore()
    if start_step >= train_steps:
      self.log(f"Already trained to step {start_step} >= --train_steps={train_steps}.")
      return
    iterator = iter(self.training_batches(start_step))
    stage, step_fn = None, None
    writer = tf.summary.create_file_writer(str(self.model_dir / "train")) if self.chief \
        else tf.summary.create_noop_writer()
    previous = signal.signal(signal.SIGTERM, self._on_signal)
    last_good = self.manager.latest_checkpoint
    clock, clock_step, totals = time.perf_counter(), start_step, {}
    try:
      while self.step < train_steps:
        current = self._stage(train_steps)
        if step_fn is None or current != stage:
          stage = current
          if stage is not None:
            self.model.enter_training_stage(stage)
            self.log(f"Step {self.step}: training stage {stage}.")
          step_fn = self._distributed_step(iterator)   # traced for the stage's variables
        parts = {name: value.numpy() for name, value in step_fn(next(iterator)).items()}
        step = self.step
        if not (math.isfinite(parts["loss"]) and math.isfinite(parts["auxiliary"])):
          raise TrainingError(
              f"The loss became {parts['loss']} (auxiliary {parts['auxiliary']}) at step "
              f"{step}; training stopped without saving it. The last good checkpoint is "
              f"{last_good or 'none (no checkpoint was written yet)'}; rerunning resumes from "
              f"it. A lower learning_rate (--hparams_overrides) usually helps.")
        for name in ("examples", "weight"):
          totals[name] = totals.get(name, 0.0) + float(parts[name])
        if "gradient_norm" in parts:   # the largest of the interval shows the spikes
          totals["gradient_norm"] = max(totals.get("gradient_norm", 0.0),
                                        float(parts["gradient_norm"]))
        if step % log_every == 0 or step == train_steps:
          elapsed = time.perf_counter() - clock
          rates = {"steps_per_second": (step - clock_step) / elapsed,
                   "examples_per_second": totals["examples"] / elapsed,
                   f"{self.model.loss_unit}_per_second": totals["weight"] / elapsed}
          if "gradient_norm" in totals:
            parts["gradient_norm"] = totals["gradient_norm"]
          self._report(writer, step, train_steps, parts, rates)
          clock, clock_step, totals = time.perf_counter(), step, {}
        if checkpoint_every and step % checkpoint_every == 0:
          last_good = self.save()
        if eval_every and step % eval_every == 0 and step < train_steps:
          self.evaluate("validation")
        if self._stop_signal is not None:
          path = self.save()
          self.log(f"Received signal {self._stop_signal}: saved {path} at step {step}; "
                   f"rerun the same command to resume.")
          return
      path = self.save()
      self.log(f"Trained to step {self.step}; saved {path}.")
      if eval_every:
        self.evaluate("validation")
    finally:
      signal.signal(signal.SIGTERM, previous)
      writer.flush()

  def _report(self, writer, step, train_steps, parts, rates):
    schedule = self.optimizer.learning_rate
    learning_rate = float(tf.convert_to_tensor(schedule(step) if callable(schedule)
                                               else schedule))
    health = {quantizer.name: {k: float(v) for k, v in quantizer.health().items()}
              for quantizer in self.quantizers}
    remaining = (train_steps - step) / max(rates["steps_per_second"], 1e-9)
    codebook = "  ".join(f"perplexity {h['perplexity']:.1f} codes {h['codes_used']:.0f}"
                         for h in health.values())
    gradient = (f"  gradient norm <= {parts['gradient_norm']:.2f}" if "gradient_norm" in parts
                else "")
    self.log(f"step {step}/{train_steps}  loss {parts['loss']:.4f}  aux {parts['auxiliary']:.4f}"
             f"  {codebook}{gradient}  {rates['steps_per_second']:.2f} steps/s  ETA "
             f"{format_seconds(remaining)}")
    with writer.as_default(step=step):
      tf.summary.scalar("loss", parts["loss"])
      tf.summary.scalar("auxiliary_loss", parts["auxiliary"])
      tf.summary.scalar("learning_rate", learning_rate)
      if "gradient_norm" in parts:
        tf.summary.scalar("gradient_norm_max", parts["gradient_norm"])
      for name, value in rates.items():
        tf.summary.scalar(name, value)
      for quantizer in self.quantizers:
        for name, value in health[quantizer.name].items():
          tf.summary.scalar(f"codebook/{quantizer.name}/{name}", value)
        tf.summary.histogram(f"codebook/{quantizer.name}/code_usage",
                             quantizer.batch_counts.numpy().ravel())

  # Evaluation.

  def evaluate(self, split="validation", decode_options=None, bleu_sentences=None,
               teacher=None):
    """Metrics over all of `split`, and codebook health; written to TensorBoard on the chief.

    The metrics are the model's `metric_sums(features)` ({name: (sum, weight)},
    each reported as sum / weight over the split), or else its loss. A model
    that translates is also scored with BLEU on the split's text (chief only).

    Args:
      decode_options: `beam_search.DecodeHParams` of the BLEU translations (default:
        the model's hyper-parameters').
      bleu_sentences: score the first N sentences of the split only (default: all).
      teacher: the Transformer that scores the latent model's candidates (num_candidates
        of decode_options > 1); None: the model scores them.
    """
    dataset = self.strategy.distribute_datasets_from_function(
        lambda context: self._dataset(split, False, context))

    def replica_eval(features):
      if hasattr(self.model, "metric_sums"):
        return self.model.metric_sums(features)
      return {"loss": self.model.loss_and_weight(features, training=False)}

    @tf.function(input_signature=[dataset.element_spec])
    def eval_step(features):
      sums = self.strategy.run(replica_eval, args=(features,))
      return tf.nest.map_structure(lambda v: self.strategy.reduce("sum", v, axis=None), sums)

    for quantizer in self.quantizers:
      quantizer.perplexity_metric.reset_state()
    totals = {}
    for features in dataset:
      for name, (total, weight) in eval_step(features).items():
        previous = totals.get(name, (0.0, 0.0))
        totals[name] = (previous[0] + float(total), previous[1] + float(weight))
    metrics = {"step": self.step, "split": split}
    metrics.update({name: total / max(weight, 1.0) for name, (total, weight) in totals.items()})
    for quantizer in self.quantizers:
      metrics[f"{quantizer.name}/perplexity"] = float(quantizer.perplexity_metric.result())
      metrics[f"{quantizer.name}/codes_used"] = int(quantizer.codes_used())
    if self.chief:
      with tf.summary.create_file_writer(str(self.model_dir / "eval")).as_default(
          step=self.step):
        for name, value in metrics.items():
          if isinstance(value, (int, float)) and name != "step":
            tf.summary.scalar(name, value)
    if self.chief and hasattr(self.model, "summaries"):
      self._write_summaries(split, next(iter(self._dataset(split, training=False))))
    if self.chief and hasattr(self.model, "translate"):
      metrics.update(self._bleu(split, decode_options, bleu_sentences, teacher))
    self.log(f"eval {split} at step {self.step}: " +
             "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                       for k, v in metrics.items() if k not in ("step", "split")))
    return metrics

  def _bleu(self, split, decode_options=None, sentences=None, teacher=None):
    """BLEU of the split's translations (sacrebleu, detokenized), in TensorBoard with examples."""
    options = decode_options or beam_search.decode_hparams(self.hparams)
    sources, references = self.problem.text_lines(split, self.config.data_dir,
                                                  self.config.raw_dir or None)
    sources, references = sources[:sentences], references[:sentences]
    key = (options.beam_size, options.length_penalty, options.batch_size,
           options.num_candidates, teacher)
    if key not in self._translators:   # one per decoding setting: its functions stay traced
      tokenizer = self.problem.tokenizer(self.config.data_dir, self.config.raw_dir or None,
                                         self.hparams)
      self._translators[key] = translate.Translator(self.model, tokenizer, *key)
    translator = self._translators[key]
    result = bleu.evaluate_bleu(translator, sources, references)
    with tf.summary.create_file_writer(str(self.model_dir / "eval")).as_default(step=self.step):
      tf.summary.scalar(f"bleu_beam{options.beam_size}", result["bleu"])
      shown = range(min(8, len(sources)))
      tf.summary.text(f"{split}/translations", tf.constant(
          [f"{sources[i]}  \n→ {result['translations'][i]}  \n(reference: {references[i]})"
           for i in shown]))
      tf.summary.text("bleu_signature", result["bleu_signature"])
    return {"bleu": result["bleu"], "bleu_signature": result["bleu_signature"],
            "bleu_sentences": len(sources), "beam_size": options.beam_size,
            "decode_seconds_per_sentence": result["decode_seconds"] / max(len(sources), 1)}

  def _write_summaries(self, split, features):
    """The model's pictures and texts of a batch (reconstructions, samples, translations).

    A model opts in with `summaries(features)` returning {"images": {name: uint8
    [n, H, W, C]}, "text": {name: [n] strings}}.
    """
    summaries = self.model.summaries(features)
    with tf.summary.create_file_writer(str(self.model_dir / "eval")).as_default(step=self.step):
      for name, value in summaries.get("images", {}).items():
        tf.summary.image(f"{split}/{name}", value, max_outputs=8)
      for name, value in summaries.get("text", {}).items():
        tf.summary.text(f"{split}/{name}", value)
