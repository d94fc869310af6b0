"""A run: a problem, its hyper-parameters, the model built from them and its directory.

Every tool loads a run through `Run` (bin/train trains it, bin/eval, bin/decode and
bin/export restore it). The run's --model_dir holds:
  config.json      the problem and hyper-parameters; a different run is refused there
  checkpoints/     tf.train.CheckpointManager: model (codebook EMA state and the
                   layers' random state included), optimizer, step
  train/, eval/    TensorBoard events (vqkeras/reporting.py)
"""

import dataclasses
import json
import pathlib

import keras
import tensorflow as tf

from vqkeras import distribute
from vqkeras import files
from vqkeras import hparams_lib
from vqkeras import registry
from vqkeras import train_step
from vqkeras.models import model_class


# How long a run trains (and how it splits those steps) and how it decodes by default, not
# what it is: a run may be resumed, evaluated or decoded with other values (as with
# --train_steps and --decode_hparams), and a set may change them without orphaning its runs.
NOT_THE_RUN_HPARAMS = ("train_steps", "predictor_only_steps", "decoder_only_steps",
                       "beam_size", "latent_beam_size", "length_penalty")


class ModelDirMismatch(ValueError):
  """--model_dir holds a run of another problem or other hyper-parameters."""


class TrainingError(RuntimeError):
  """Training cannot go on: the loss or the weights became NaN or Inf."""


@dataclasses.dataclass
class RunConfig:
  """What a run is, besides the hyper-parameters' values: the flags of bin/train."""
  problem: str
  hparams: str
  hparams_overrides: str = ""
  data_dir: str = ""
  raw_dir: str = ""
  model_dir: str = ""
  seed: int = 1
  mixed_precision: str = "none"     # none, mixed_float16 or mixed_bfloat16
  jit_compile: bool = False         # XLA on each replica's step (compiled per batch shape)


def recorded_config(model_dir, data_dir, raw_dir=""):
  """The RunConfig of the run recorded in model_dir/config.json.

  Raises:
    FileNotFoundError: no run there.
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
  return RunConfig(problem=recorded["problem"], hparams=recorded["hparams"],
                   hparams_overrides=overrides, data_dir=str(data_dir),
                   raw_dir=str(raw_dir or ""), model_dir=str(model_dir))


def config_record(config, hparams):
  """What config.json holds of a run."""
  return {"problem": config.problem, "hparams": config.hparams,
          "hparams_values": dataclasses.asdict(hparams)}


def check_model_dir(model_dir, config, hparams):
  """Refuses a model_dir that holds another run."""
  path = pathlib.Path(model_dir) / "config.json"
  mine = config_record(config, hparams)
  if path.is_file():
    theirs = json.loads(path.read_text())
    differences = [f"problem: {theirs.get('problem')} here, {mine['problem']} asked"] \
        if theirs.get("problem") != mine["problem"] else []
    differences += [f"{name}: {here!r} here, {asked!r} asked" for name, (here, asked) in
                    hparams_lib.value_differences(
                        type(hparams).recorded_values(theirs.get("hparams_values", {})),
                        mine["hparams_values"]).items()
                    if name not in NOT_THE_RUN_HPARAMS]
    if differences:
      raise ModelDirMismatch(
          f"--model_dir={model_dir} holds a run of --problem={theirs.get('problem')} "
          f"--hparams={theirs.get('hparams')} that differs from this one in:\n  " +
          "\n  ".join(differences) + "\nNothing was changed there; use another --model_dir.")


def record_config(model_dir, config, hparams):
  """Writes config.json in a model_dir that has none (once the model is built, so that
  a refused run leaves nothing behind)."""
  path = pathlib.Path(model_dir) / "config.json"
  if not path.is_file():
    with files.atomic_write(path) as partial:
      partial.write_text(json.dumps(config_record(config, hparams), indent=2, sort_keys=True))


class Run:
  """The model of a problem and hyper-parameter set under a strategy, with its checkpoints.

  Args:
    config: a RunConfig.
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
    check_model_dir(self.model_dir, config, self.hparams)
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision != "none":
      keras.mixed_precision.set_global_policy(config.mixed_precision)
    model_type = model_class(self.hparams)
    with strategy.scope():
      self.model = model_type.from_hparams(self.hparams)
      optimizer = model_type.make_optimizer(self.hparams)
      if config.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
      self.optimizer = optimizer
      # The layers of discrete codes (a VectorQuantizer, the levels of a residual one,
      # FSQ, ...): their health is reported and evaluated.
      self.quantizers = self.model.code_layers()
      self._build()
    if self.chief:
      record_config(self.model_dir, config, self.hparams)
    self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
    # Every worker saves (collectives may be involved); the others' copies stay out of
    # the chief's way in .worker<i>/.
    directory = (self.model_dir / "checkpoints" if self.chief else
                 self.model_dir / f".worker{distribute.worker_index()}" / "checkpoints")
    self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=5)

  @classmethod
  def from_model_dir(cls, model_dir, data_dir, raw_dir="", strategy=None, log=print):
    """The run recorded in model_dir/config.json, restored to its latest checkpoint.

    Raises:
      FileNotFoundError: no run or no checkpoint there.
    """
    run = cls(recorded_config(model_dir, data_dir, raw_dir),
              strategy or tf.distribute.get_strategy(), log=log)
    run.restore(required=True)
    return run

  def dataset(self, split, training, input_context=None, seed=None):
    """The problem's batches of `split` for these hyper-parameters (one replica's share
    under `input_context`)."""
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
        lambda context: self.dataset("train", True, context, seed=seed).repeat())

  def tokenizer(self, log=None):
    """The problem's vocabulary (translation problems)."""
    return self.problem.tokenizer(self.config.data_dir, self.config.raw_dir or None,
                                  self.hparams, *([log] if log else []))

  def _build(self):
    """Creates every variable (in cross-replica context) by running one batch through."""
    train_step.build(self.model, self.optimizer,
                     next(iter(self.dataset("train", training=True).take(1))))
    for quantizer in self.quantizers:
      for metric in quantizer.metrics:
        metric.reset_state()

  @property
  def step(self):
    """The training step reached (the optimizer's iterations)."""
    return int(self.optimizer.iterations.numpy())

  @property
  def latest_checkpoint(self):
    """The path of the latest checkpoint in `model_dir`, or None."""
    return self.manager.latest_checkpoint

  def restore(self, required=False):
    """Restores the latest checkpoint, if any; returns its step.

    Raises:
      FileNotFoundError: `required` and there is no checkpoint.
    """
    latest = self.manager.latest_checkpoint
    if latest:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
      self.log(f"Resuming from step {self.step} ({latest}).")
    elif required:
      raise FileNotFoundError(f"No checkpoint in {self.model_dir}/checkpoints; train first.")
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
