"""Checkpoint averaging (vqkeras/averaging.py, bin/average_checkpoints)."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import TESTDATA, run_tool
from vqkeras import averaging
from vqkeras import run as run_lib

FLAGS = ["--problem=image_cifar10", "--hparams=vq_ema_cifar_tiny",
         f"--raw_dir={TESTDATA / 'cifar10'}"]


def is_float(variable):
  return np.issubdtype(variable.numpy().dtype, np.floating)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
  """A run with checkpoints at steps 1, 2 and 3 of random float weights (the EMA codebook
  statistics included), and each checkpoint's values, in the order of model.variables (a
  model built again numbers its layers on)."""
  root = tmp_path_factory.mktemp("averaging")
  config = run_lib.RunConfig(problem="image_cifar10", hparams="vq_ema_cifar_tiny",
                             data_dir=str(root / "data"), raw_dir=str(TESTDATA / "cifar10"),
                             model_dir=str(root / "run"))
  run = run_lib.Run(config, tf.distribute.get_strategy(), log=lambda _: None)
  rng = np.random.default_rng(0)
  saved = {}
  for step in (1, 2, 3):
    for variable in filter(is_float, run.model.variables):
      variable.assign(rng.normal(size=variable.shape).astype(variable.numpy().dtype))
    run.optimizer.iterations.assign(step)
    run.save()
    saved[step] = [v.numpy() for v in run.model.variables]
  return run, saved


def test_the_average_of_the_last_checkpoints_is_their_mean_in_float64(saved_run, tmp_path):
  run, saved = saved_run
  paths = averaging.checkpoint_paths(run.model_dir, last=2)
  assert [averaging.checkpoint_step(path) for path in paths] == [2, 3]
  averaging.average_checkpoints(run, paths, tmp_path / "averaged")
  reloaded = run_lib.Run.from_model_dir(tmp_path / "averaged", run.config.data_dir,
                                        run.config.raw_dir, log=lambda _: None)
  assert reloaded.step == 3
  floats = 0
  for i, variable in enumerate(reloaded.model.variables):
    if is_float(variable):
      floats += 1
      want = (saved[2][i].astype(np.float64) + saved[3][i]) / 2
      np.testing.assert_allclose(variable.numpy(), want, rtol=1e-6, atol=1e-7)
    else:   # seeds and counters: the last checkpoint's
      np.testing.assert_array_equal(variable.numpy(), saved[3][i])
  assert floats >= 10
  for i, variable in enumerate(run.model.variables):   # the averaged run is not changed
    np.testing.assert_array_equal(variable.numpy(), saved[3][i])


def test_checkpoints_are_chosen_by_step_and_a_missing_step_names_the_kept_ones(saved_run):
  run, _ = saved_run
  paths = averaging.checkpoint_paths(run.model_dir, steps=[3, 1])
  assert [averaging.checkpoint_step(path) for path in paths] == [1, 3]
  assert len(averaging.checkpoint_paths(run.model_dir)) == 3
  with pytest.raises(FileNotFoundError, match="No checkpoint of step 7 .* keeps steps 1, 2, 3"):
    averaging.checkpoint_paths(run.model_dir, steps=[1, 7])


def test_the_tool_writes_a_new_run_and_refuses_to_overwrite_one(saved_run, tmp_path):
  run, saved = saved_run
  flags = FLAGS + [f"--data_dir={run.config.data_dir}", f"--model_dir={run.model_dir}",
                   f"--output_dir={tmp_path / 'averaged'}"]
  result = run_tool("average_checkpoints", *flags, "--steps=1,3")
  assert result.returncode == 0, result.stderr
  assert "averaged steps 1, 3 into" in result.stdout
  written = (tmp_path / "averaged" / "checkpoints" / "ckpt-3.index").read_bytes()
  result = run_tool("average_checkpoints", *flags, "--last=2")
  assert result.returncode == 2 and "holds checkpoints already" in result.stderr, result.stderr
  assert (tmp_path / "averaged" / "checkpoints" / "ckpt-3.index").read_bytes() == written
  reloaded = run_lib.Run.from_model_dir(tmp_path / "averaged", run.config.data_dir,
                                        run.config.raw_dir, log=lambda _: None)
  for i, variable in enumerate(reloaded.model.variables):
    if is_float(variable):
      np.testing.assert_allclose(variable.numpy(),
                                 (saved[1][i].astype(np.float64) + saved[3][i]) / 2,
                                 rtol=1e-6, atol=1e-7)
