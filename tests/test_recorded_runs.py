"""Runs recorded by an earlier vqkeras (tests/testdata/runs, see its README) still resume,
evaluate, decode and export."""

import json
import shutil

import pytest

from conftest import TESTDATA, run_tool

RUNS = TESTDATA / "runs"


@pytest.fixture(name="recorded")
def fixture_recorded(tmp_path):
  """A copy of the recorded runs (the tools write into a run's directory)."""
  shutil.copytree(RUNS, tmp_path / "runs")
  return tmp_path / "runs"


def flags_of(run_dir, data_dir, raw_dir):
  config = json.loads((run_dir / "config.json").read_text())
  return [f"--problem={config['problem']}", f"--hparams={config['hparams']}",
          f"--data_dir={data_dir}", f"--raw_dir={raw_dir}", f"--model_dir={run_dir}"]


def overrides_of(run_dir):
  values = json.loads((run_dir / "config.json").read_text())["hparams_values"]
  return [f"--hparams_overrides=hidden_size={values['hidden_size']},"
          f"filter_size={values['filter_size']}"] if "hidden_size" in values else [
              "--hparams_overrides=bottleneck=ema"]


@pytest.mark.parametrize("name,data,raw", [
    ("vq_em_tiny", "multi30k_data", "multi30k"), ("vq_ema_cifar_tiny", None, "cifar10")])
def test_a_recorded_run_evaluates_exports_and_resumes(recorded, tmp_path, name, data, raw):
  run_dir = recorded / name
  data_dir = recorded / data if data else tmp_path / "data"
  flags = flags_of(run_dir, data_dir, TESTDATA / raw) + overrides_of(run_dir)
  result = run_tool("eval", *flags, "--bleu_sentences=4")
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout.strip().splitlines()[-1])["step"] == 2
  if data:
    result = run_tool("decode", *flags, input="A man rides a bike.\n")
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
  result = run_tool("export", *flags, f"--export_dir={tmp_path / 'export'}")
  assert result.returncode == 0, result.stderr
  assert (tmp_path / "export" / "2" / "saved_model.pb").exists()
  result = run_tool("train", *flags, "--train_steps=3")
  assert result.returncode == 0, result.stderr
  assert "Resuming from step 2" in result.stdout + result.stderr
  assert (run_dir / "checkpoints" / "ckpt-3.index").exists()
