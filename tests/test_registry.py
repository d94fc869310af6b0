"""Problem and hyper-parameter registries, overrides, and bin/datagen."""

import dataclasses
import subprocess
import sys

import pytest

from conftest import REPO, TESTDATA
from vqkeras import hparams_lib
from vqkeras import registry


def test_every_set_is_valid_and_every_family_has_cpu_variants():
  registry.hparams("vq_em")   # loads the registry
  names = registry.HPARAMS.names()
  for name in names:
    registry.hparams(name).validate()
  for base in ("transformer", "vq_em", "vq_ema", "vq_gradient", "vq_em_cifar", "vq_ema_cifar",
               "vq_gradient_cifar"):
    assert f"{base}_tiny" in names and f"{base}_small" in names


def test_every_set_has_a_model():
  from vqkeras.models import Model, model_class  # pylint: disable=import-outside-toplevel
  for name in registry.HPARAMS.names():
    assert issubclass(model_class(registry.hparams(name)), Model), name
  with pytest.raises(ValueError, match="No model is registered for .* HParams; classes with a "
                                       "model: ImageVQVAEHParams, LatentGlatHParams, "
                                       "LatentTransformerHParams"):
    model_class(hparams_lib.HParams())


def test_a_set_derives_by_naming_only_its_changes():
  assert registry.hparams("vq_ema").differences(registry.hparams("vq_em")) == {
      "bottleneck": ("ema", "soft_em")}
  assert set(registry.hparams("vq_gradient_cifar_tiny").differences(
      registry.hparams("vq_em_cifar_tiny"))) == {"bottleneck"}


def test_overrides_are_parsed_by_field_type():
  hparams = registry.hparams(
      "vq_em_cifar_tiny", "codebook_size=64, learning_rate=3e-4,restart_dead_codes=true,"
      "bottleneck=ema")
  assert (hparams.codebook_size, hparams.learning_rate, hparams.restart_dead_codes,
          hparams.bottleneck) == (64, 3e-4, True, "ema")
  assert isinstance(hparams.codebook_size, int)


@pytest.mark.parametrize("name, overrides, message", [
    ("vq_emm", "", r"Unknown hparams set 'vq_emm'. Did you mean 'vq_em'"),
    ("vq_em", "num_layer=2", r"Unknown hyper-parameter .* 'num_layer'. Did you mean 'num_layers'"),
    ("vq_em", "num_layers=2.5", r"num_layers: '2.5' is not an integer"),
    ("vq_em", "dropout=high", r"dropout: 'high' is not a number"),
    ("vq_em_cifar", "restart_dead_codes=yes", r"'yes' is not true or false"),
    ("vq_em", "bottleneck=kmeans", r"bottleneck: 'kmeans'; expected gradient or ema or soft_em"),
    ("vq_em", "bottleneck=rvq", r"bottleneck: 'rvq'; expected one of .*fsq, gumbel, lfq, bsq, simvq "
     r"\(the latent predictor predicts one code per latent"),
    ("vq_em", "num_heads=7", r"num_heads: 7; expected a divisor of hidden_size=512"),
    ("vq_em", "learning_rate", r"expected name=value"),
])
def test_bad_names_and_values_say_what_is_valid(name, overrides, message):
  with pytest.raises(ValueError, match=message):
    registry.hparams(name, overrides)


def test_unknown_problem_lists_the_choices():
  with pytest.raises(ValueError, match=r"Unknown problem 'translate_en'. Did you mean "
                                       r"'translate_ende'.*Valid choices: image_cifar10, "):
    registry.problem("translate_en")


def test_records_are_frozen():
  with pytest.raises(dataclasses.FrozenInstanceError):
    registry.hparams("vq_em").num_layers = 3
  assert isinstance(registry.hparams("vq_em"), hparams_lib.HParams)


def run_datagen(*args):
  return subprocess.run([sys.executable, str(REPO / "bin" / "datagen"), *args],
                        capture_output=True, text=True, timeout=300)


def test_datagen_prepares_a_problem(tmp_path):
  result = run_datagen("--problem=translate_ende_multi30k", "--hparams=transformer_tiny",
                       f"--data_dir={tmp_path}", f"--raw_dir={TESTDATA / 'multi30k'}")
  assert result.returncode == 0, result.stderr
  assert "training pairs 500" in result.stdout
  assert (tmp_path / "translate_ende_multi30k.sentencepiece1000.model").is_file()


def test_datagen_reports_a_mistake_without_a_traceback(tmp_path):
  result = run_datagen("--problem=image_cifar", f"--data_dir={tmp_path}")
  assert result.returncode == 2
  assert "error: Unknown problem 'image_cifar'. Did you mean 'image_cifar10'" in result.stderr
  assert "Traceback" not in result.stderr
