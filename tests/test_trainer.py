"""The training loop and the run directory: distribution, resuming, signals, the NaN guard,
the model_dir check."""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, TESTDATA
from vqkeras import hparams_lib
from vqkeras import registry
from vqkeras import run as run_lib
from vqkeras import trainer as trainer_lib
from vqkeras import train_step
from vqkeras.files import read_lines
from vqkeras.models import ImageVQVAE, model_class

CIFAR_FLAGS = ["--problem=image_cifar10", f"--raw_dir={TESTDATA / 'cifar10'}"]


def config(tmp_path, name, hparams="vq_ema_cifar_tiny", overrides=""):
  return run_lib.RunConfig(
      problem="image_cifar10", hparams=hparams, hparams_overrides=overrides,
      data_dir=str(tmp_path / "data"), raw_dir=str(TESTDATA / "cifar10"),
      model_dir=str(tmp_path / name), seed=3)


def quiet(_):
  pass


def train(settings, steps, **options):
  """Trains the run of `settings` to `steps`; its history."""
  options = {"checkpoint_every": 0, "log_every": 100, **options}
  run = run_lib.Run(settings, tf.distribute.get_strategy(), log=quiet)
  return trainer_lib.Trainer(run).train(steps, **options)


@pytest.mark.parametrize("clip", [0.0, 0.02])
def test_mirrored_training_reproduces_one_device_on_the_global_batch(tmp_path,
                                                                     mirrored_strategy,
                                                                     monkeypatch, clip):
  # Dropout masks cannot match when the batch is split differently: none here. And SGD:
  # Adam's per-element normalization turns float summation-order noise on near-zero
  # gradients (LayerNorm makes some exactly zero) into +-learning-rate sign flips.
  # Clipping must clip the global batch's gradient, not each replica's share (Keras'
  # global_clipnorm does the latter).
  deterministic = f"prior_dropout=0.0,clip_grad_norm={clip}"
  monkeypatch.setattr(ImageVQVAE, "make_optimizer",
                      staticmethod(lambda hparams: keras.optimizers.SGD(0.5)))
  runs = {}
  for name, strategy in (("single", tf.distribute.OneDeviceStrategy("/cpu:0")),
                         ("mirrored", mirrored_strategy)):
    run = run_lib.Run(config(tmp_path, name, overrides=deterministic), strategy, log=quiet)
    rows = trainer_lib.Trainer(run).train(6, checkpoint_every=0, log_every=1)["train"]
    runs[name] = run, rows
  (single, single_rows), (mirrored, mirrored_rows) = runs["single"], runs["mirrored"]
  single_losses, mirrored_losses = ([row["loss"] for row in rows]
                                    for rows in (single_rows, mirrored_rows))
  assert single.step == mirrored.step == 6 and len(single_losses) == 6
  if clip:   # the clipping is active: every step's gradient is longer than the bound
    norms = [row["gradient_norm_max"] for row in mirrored_rows]
    assert len(norms) == 6 and min(norms) > 4 * clip
  # The reported loss is the global-batch mean: a wrong normalization would double it.
  np.testing.assert_allclose(mirrored_losses, single_losses, rtol=1e-4)
  for a, b in zip(single.model.weights, mirrored.model.weights):
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
  codebook = mirrored.quantizers[0].embeddings
  copies = [v.numpy() for v in codebook.value.values]
  np.testing.assert_array_equal(copies[0], copies[1])


def test_clip_by_global_norm_scales_every_gradient_by_one_factor():
  gradients = [tf.constant([3.0, 0.0]), None, tf.constant([[4.0]])]   # global norm 5
  clipped, norm = train_step.clip_by_global_norm(gradients, 1.0)
  assert float(norm) == 5.0 and clipped[1] is None
  np.testing.assert_allclose(clipped[0].numpy(), [0.6, 0.0], rtol=1e-6)
  np.testing.assert_allclose(clipped[2].numpy(), [[0.8]], rtol=1e-6)
  unchanged, _ = train_step.clip_by_global_norm(gradients, 10.0)
  np.testing.assert_array_equal(unchanged[0].numpy(), [3.0, 0.0])
  # An embedding's sparse gradient with a repeated row: the norm of the dense sum, 2.
  repeated = tf.IndexedSlices(tf.constant([[1.0], [1.0]]), tf.constant([0, 0]),
                              tf.constant([2, 1]))
  clipped, norm = train_step.clip_by_global_norm([repeated], 1.0)
  assert float(norm) == 2.0
  np.testing.assert_allclose(clipped[0].numpy(), [[1.0], [0.0]], rtol=1e-6)
  # Under mixed_float16 the gradients carry the loss scale; the bound is on the true norm.
  scaled, norm = train_step.clip_by_global_norm([g * 1024.0 for g in (gradients[0],)] + [None],
                                              1.0, loss_scale=1024.0)
  assert float(norm) == 3.0
  np.testing.assert_allclose(scaled[0].numpy(), [1024.0, 0.0], rtol=1e-6)   # true norm 1


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  run = run_lib.Run(config(tmp_path, "run"), tf.distribute.get_strategy(), log=quiet)
  original = run.model.loss_and_weight

  def poisoned(features, training=False):
    total, weight = original(features, training)
    # NaN from the 6th step on (the one that starts after 5 updates).
    return tf.where(run.optimizer.iterations >= 5, np.nan, total), weight

  run.model.loss_and_weight = poisoned
  with pytest.raises(trainer_lib.TrainingError, match=r"became nan .* at step 6.* "
                                                      r"last good checkpoint is .*ckpt-4"):
    trainer_lib.Trainer(run).train(20, checkpoint_every=2, log_every=100)
  assert run.latest_checkpoint.endswith("ckpt-4")


def test_weights_that_are_not_finite_are_not_saved(tmp_path):
  run = run_lib.Run(config(tmp_path, "run"), tf.distribute.get_strategy(), log=quiet)
  trainer_lib.Trainer(run).train(2, checkpoint_every=2, log_every=100)
  weight = run.model.trainable_variables[0]
  weight.assign(np.full(weight.shape, np.inf, np.float32))
  with pytest.raises(trainer_lib.TrainingError,
                     match=rf"NaN or Inf at step 2 \({weight.path}\); not saved. The last good "
                           rf"checkpoint is .*ckpt-2"):
    run.save()
  assert run.manager.checkpoints == [run.latest_checkpoint]


def test_a_model_dir_of_another_run_is_refused_untouched(tmp_path):
  train(config(tmp_path, "run"), 2, checkpoint_every=1)
  before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}
  with pytest.raises(run_lib.ModelDirMismatch,
                     match=r"hparams=vq_ema_cifar_tiny that differs .*\n  codebook_size: 32 "
                           r"here, 64 asked"):
    run_lib.Run(config(tmp_path, "run", overrides="codebook_size=64"),
                tf.distribute.get_strategy(), log=quiet)
  assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")} == before
  # Another training budget is the same run: it resumes.
  resumed = run_lib.Run(config(tmp_path, "run", overrides="train_steps=3"),
                        tf.distribute.get_strategy(), log=quiet)
  resumed.restore()
  assert resumed.step == 2


@pytest.mark.parametrize("refused", ["decay=1.5", "epsilon=0", "beta=-1", "temperature=0"])
def test_a_refused_run_leaves_the_model_dir_usable(tmp_path, monkeypatch, refused):
  """A value out of range is refused before anything is written; a model that fails to
  build writes no config.json either; the corrected run then starts there."""
  with pytest.raises(hparams_lib.HParamsError, match=refused.split("=")[0]):
    run_lib.Run(config(tmp_path, "run", overrides=refused), tf.distribute.get_strategy(),
                log=quiet)
  assert not (tmp_path / "run" / "config.json").exists()
  build = run_lib.Run._build   # pylint: disable=protected-access

  def failing_build(self):
    raise ValueError("the model refused its inputs")

  monkeypatch.setattr(run_lib.Run, "_build", failing_build)
  with pytest.raises(ValueError, match="refused its inputs"):
    run_lib.Run(config(tmp_path, "run", overrides="codebook_size=16"),
                tf.distribute.get_strategy(), log=quiet)
  assert not (tmp_path / "run" / "config.json").exists()
  monkeypatch.setattr(run_lib.Run, "_build", build)
  train(config(tmp_path, "run", overrides="decay=0.5"), 1)
  recorded = json.loads((tmp_path / "run" / "config.json").read_text())
  assert recorded["hparams_values"]["decay"] == 0.5


def test_a_run_recorded_before_a_field_existed_keeps_its_old_behaviour(tmp_path,
                                                                       monkeypatch):
  train(config(tmp_path, "run", overrides="decay=0.5"), 1, checkpoint_every=1)
  path = tmp_path / "run" / "config.json"
  recorded = json.loads(path.read_text())
  del recorded["hparams_values"]["decay"]   # as if decay had been added since
  path.write_text(json.dumps(recorded))
  family = type(registry.hparams("vq_ema_cifar_tiny"))
  monkeypatch.setattr(family, "ADDED_FIELDS", {"decay": 0.5})   # what the code did before
  restored = run_lib.Run.from_model_dir(tmp_path / "run", tmp_path / "data", log=quiet)
  assert restored.hparams.decay == 0.5 and restored.step == 1
  with pytest.raises(run_lib.ModelDirMismatch, match=r"decay: 0.5 here, 0.99 asked"):
    run_lib.Run(config(tmp_path, "run", overrides="decay=0.99"), tf.distribute.get_strategy(),
                log=quiet)


def start_training(model_dir, *extra, env=None):
  return subprocess.Popen(
      [sys.executable, str(REPO / "bin" / "train"), *CIFAR_FLAGS, "--hparams=vq_em_cifar_tiny",
       f"--data_dir={model_dir.parent / 'data'}", f"--model_dir={model_dir}", *extra],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def wait_for_checkpoint(model_dir, process, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if tf.train.latest_checkpoint(str(model_dir / "checkpoints")):
      return
    assert process.poll() is None, process.stdout.read()
    time.sleep(0.2)
  raise AssertionError("no checkpoint appeared")


def test_killed_training_resumes_from_its_latest_checkpoint(tmp_path):
  model_dir = tmp_path / "run"
  process = start_training(model_dir, "--train_steps=100000", "--checkpoint_every=5")
  wait_for_checkpoint(model_dir, process)
  time.sleep(1.0)
  process.send_signal(signal.SIGKILL)
  process.wait()
  latest = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
  step = int(latest.rsplit("-", 1)[1])
  result = subprocess.run(
      [sys.executable, str(REPO / "bin" / "train"), *CIFAR_FLAGS, "--hparams=vq_em_cifar_tiny",
       f"--data_dir={tmp_path / 'data'}", f"--model_dir={model_dir}",
       f"--train_steps={step + 5}"], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert f"Resuming from step {step} " in result.stdout
  assert f"Trained to step {step + 5}" in result.stdout


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
  model_dir = tmp_path / "run"
  process = start_training(model_dir, "--train_steps=100000", "--checkpoint_every=100000")
  deadline = time.time() + 120
  while "step 50/" not in (line := process.stdout.readline()):
    assert process.poll() is None and time.time() < deadline, line
  process.send_signal(signal.SIGTERM)
  output = process.communicate(timeout=120)[0]
  assert process.returncode == 0, output
  assert "Received signal 15: saved" in output
  latest = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
  assert int(latest.rsplit("-", 1)[1]) >= 50


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_workers_on_localhost_end_with_identical_weights(tmp_path):
  ports = [free_port(), free_port()]
  cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
  processes = []
  for index in range(2):
    env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": index}}))
    processes.append(subprocess.Popen(
        [sys.executable, str(REPO / "bin" / "train"), *CIFAR_FLAGS,
         "--hparams=vq_ema_cifar_tiny", f"--data_dir={tmp_path / 'data'}",
         f"--model_dir={tmp_path / 'run'}", "--strategy=multi_worker", "--train_steps=6",
         "--log_every=3"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env))
  outputs = [p.communicate(timeout=300)[0] for p in processes]
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output
  chief = tf.train.load_checkpoint(str(tmp_path / "run" / "checkpoints"))
  worker = tf.train.load_checkpoint(str(tmp_path / "run" / ".worker1" / "checkpoints"))
  names = [name for name in chief.get_variable_to_shape_map() if "model" in name]
  assert {"model/quantizer/embeddings/.ATTRIBUTES/VARIABLE_VALUE",
          "model/quantizer/ema_sum/.ATTRIBUTES/VARIABLE_VALUE"} <= set(names)
  for name in names:
    np.testing.assert_array_equal(chief.get_tensor(name), worker.get_tensor(name), err_msg=name)
  assert chief.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 6


def test_tensorboard_shows_losses_codebook_health_reconstructions_and_samples(tmp_path):
  history = train(config(tmp_path, "run"), 4, eval_every=4, checkpoint_every=0, log_every=2)
  assert [row["step"] for row in history["train"]] == [2, 4]
  assert [metrics["step"] for metrics in history["eval"]] == [4]
  tags = {}
  for folder in ("train", "eval"):
    for path in (tmp_path / "run" / folder).glob("events.out.tfevents.*"):
      for event in tf.compat.v1.train.summary_iterator(str(path)):
        for value in event.summary.value:
          tags.setdefault(folder, set()).add(value.tag)
  assert {"loss", "auxiliary_loss", "learning_rate", "steps_per_second", "examples_per_second",
          "subpixels_per_second", "codebook/quantizer/perplexity",
          "codebook/quantizer/codes_used", "codebook/quantizer/dead_codes",
          "codebook/quantizer/code_usage"} <= tags["train"]
  assert {"bits_per_dim_total", "bits_per_dim_reconstruction", "bits_per_dim_prior", "mse",
          "quantizer/perplexity", "validation/reconstructions",
          "validation/samples"} <= tags["eval"]


@pytest.mark.parametrize("policy", ["mixed_bfloat16"])
def test_mixed_precision_training_runs_and_keeps_the_codebook_float32(tmp_path, policy):
  result = subprocess.run(
      [sys.executable, str(REPO / "bin" / "train"), *CIFAR_FLAGS, "--hparams=vq_em_cifar_tiny",
       f"--data_dir={tmp_path / 'data'}", f"--model_dir={tmp_path / 'run'}", "--train_steps=6",
       "--log_every=3", f"--mixed_precision={policy}"], capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 0, result.stderr
  reader = tf.train.load_checkpoint(str(tmp_path / "run" / "checkpoints"))
  codebook = reader.get_tensor("model/quantizer/embeddings/.ATTRIBUTES/VARIABLE_VALUE")
  assert codebook.dtype == np.float32 and np.isfinite(codebook).all()
  assert "step 6/6" in result.stdout


def test_a_resumed_run_draws_a_new_order_of_batches(tmp_path):
  # The iterator's position is not checkpointed: replaying the first batches after
  # every restart would train on them again and again.
  run = run_lib.Run(config(tmp_path, "run"), tf.distribute.get_strategy(), log=quiet)

  def first_images(start_step):
    return next(iter(run.training_batches(start_step)))["image"].numpy()

  np.testing.assert_array_equal(first_images(0), first_images(0))
  assert not np.array_equal(first_images(0), first_images(40))


def test_a_restored_run_continues_exactly_as_the_uninterrupted_one(tmp_path, multi30k_data_dir):
  # Every piece of training state is in the checkpoint: Adam's moments, the soft-EM
  # codebook statistics and usage, the batch standardization's moving moments.
  settings = run_lib.RunConfig(
      problem="translate_ende_multi30k", hparams="vq_em_tiny",
      hparams_overrides="mask_startup_steps=0", data_dir=str(multi30k_data_dir),
      raw_dir=str(TESTDATA / "multi30k"), model_dir=str(tmp_path / "run"), seed=3)
  run = run_lib.Run(settings, tf.distribute.get_strategy(), log=quiet)
  batches = list(run.dataset("train", training=True).take(8))
  signature = train_step.feature_signature(run.dataset("train", training=True))

  def train_on(run, batches):
    step = train_step.make_train_step(run.model, run.optimizer, signature)
    for batch in batches:
      step(batch)
    return step

  step = train_on(run, batches[:5])
  run.save()
  for batch in batches[5:]:
    step(batch)
  uninterrupted = [v.numpy() for v in run.model.weights + run.optimizer.variables]
  restored = run_lib.Run.from_model_dir(settings.model_dir, settings.data_dir, settings.raw_dir,
                                        log=quiet)
  assert restored.step == 5
  # The soft-EM sampler's seed comes from the process's random seed, not the checkpoint.
  restored.model.quantizer.seed = run.model.quantizer.seed
  train_on(restored, batches[5:])
  variables = restored.model.weights + restored.optimizer.variables
  for want, variable in zip(uninterrupted, variables):
    np.testing.assert_array_equal(variable.numpy(), want, err_msg=variable.path)


def test_each_training_stage_trains_its_part_alone(tmp_path, multi30k_data_dir):
  # A joint run resumed with predictor_only_steps, then with decoder_only_steps: in the
  # predictor's stage only the latent predictor moves, in the decoder's only the
  # decompression and the parallel decoder; the encoder, the codebook, its statistics
  # and the moving moments stay bit-identical throughout.
  def run(overrides, log):
    settings = run_lib.RunConfig(
        problem="translate_ende_multi30k", hparams="vq_em_tiny",
        hparams_overrides=f"mask_startup_steps=0,{overrides}",
        data_dir=str(multi30k_data_dir), raw_dir=str(TESTDATA / "multi30k"),
        model_dir=str(tmp_path / "run"), seed=3)
    return run_lib.Run(settings, tf.distribute.get_strategy(), log=log)

  def check_only_moved(model, before, parts):
    moved = {id(v) for part in parts for v in part.weights}
    changed = 0
    for want, variable in zip(before, model.weights):
      if id(variable) in moved:
        changed += not np.array_equal(variable.numpy(), want)
      else:
        np.testing.assert_array_equal(variable.numpy(), want, err_msg=variable.path)
    assert changed == len(moved)

  joint = run("predictor_only_steps=0", quiet)
  trainer_lib.Trainer(joint).train(3, checkpoint_every=0, log_every=100)
  before = [v.numpy() for v in joint.model.weights]
  logs = []
  staged = run("predictor_only_steps=2", logs.append)
  trainer_lib.Trainer(staged).train(5, checkpoint_every=0, log_every=100)
  assert staged.step == 5 and "Step 3: training stage latent_predictor." in logs
  check_only_moved(staged.model, before, [staged.model.latent_predictor])

  before = [v.numpy() for v in staged.model.weights]
  staged = run("predictor_only_steps=2,decoder_only_steps=2", logs.append)
  history = trainer_lib.Trainer(staged).train(7, checkpoint_every=0, log_every=1)
  assert staged.step == 7 and "Step 5: training stage decoder." in logs
  assert all(np.isfinite(row["loss"]) for row in history["train"])
  model = staged.model
  check_only_moved(model, before, [model.decompress, model.decoder])
  assert [model.training_stage(step, 7) for step in (2, 3, 4, 5, 6)] == [
      "joint", "latent_predictor", "latent_predictor", "decoder", "decoder"]
  with pytest.raises(ValueError, match="predictor_only_steps=2 and decoder_only_steps=2 leave "
                     "no joint training"):
    model.training_stage(0, 4)


def real_translation_batches(tokenizer, count=3, size=8):
  folder = TESTDATA / "multi30k"
  lines = {side: read_lines(folder / f"train.{side}.gz")[:count * size] for side in ("en", "de")}
  # One shape for all batches: XLA compiles once per shape.
  ids = {side: tokenizer.tokenize(tf.constant(lines[side])).to_tensor(shape=[None, 40])
         for side in lines}
  return [{name: ids[side][i * size:(i + 1) * size]
           for name, side in (("inputs", "en"), ("targets", "de"))} for i in range(count)]


@pytest.mark.parametrize("name,changes", [
    ("transformer_tiny", {}),
    # Random draws (dropout, soft-EM samples, restarts) differ under XLA: the same
    # distributions, other numbers. Without them the steps are deterministic.
    ("vq_ema_tiny", dict(mask_startup_steps=0, restart_dead_codes=False)),
    ("vq_ema_cifar_tiny", dict(prior_dropout=0.0)),
])
def test_an_xla_step_trains_as_the_plain_step(name, changes, multi30k_tokenizer, cifar_images):
  hparams = registry.hparams(name).derive(**changes)
  # Two steps: the second's loss reads the first's update. Later, a latent whose two
  # nearest codes are within rounding of each other can take the other code under XLA's
  # other summation order, and the losses part by a discrete step (seen at step 3).
  if "cifar" in name:
    batches = [{"image": cifar_images[8 * i:8 * (i + 1)]} for i in range(2)]
  else:
    batches = real_translation_batches(multi30k_tokenizer, count=2)
  losses = {}
  for jit_compile in (False, True):
    keras.utils.set_random_seed(0)
    model_type = model_class(hparams)
    model, optimizer = model_type.from_hparams(hparams), model_type.make_optimizer(hparams)
    train_step.build(model, optimizer, batches[0])
    step = train_step.make_train_step(model, optimizer, jit_compile=jit_compile)
    losses[jit_compile] = [float(step(batch)["loss"]) for batch in batches]
  np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
  assert losses[False][-1] != losses[False][0]   # the steps moved the weights


def test_xla_on_several_cpu_devices_is_refused_with_what_to_do(tmp_path, mirrored_strategy):
  run = dataclasses.replace(config(tmp_path, "xla"), jit_compile=True)
  with pytest.raises(ValueError, match="--jit_compile"):
    run_lib.Run(run, mirrored_strategy, log=quiet)
  assert not (tmp_path / "xla").exists()
