"""bin/decode and bin/eval: translations of text files, BLEU, images as PNG grids."""

import json
import re

import numpy as np
import pytest
import tensorflow as tf

from conftest import decoding_text, run_tool, TESTDATA
from vqkeras import problem as problem_lib
from vqkeras import registry
from vqkeras.files import read_lines


def test_decode_writes_samples_and_reconstructions(cifar_run, tmp_path):
  common = cifar_run
  result = run_tool("decode", *common, "--num_images=10", "--decode_hparams=temperature=0.7",
                    "--image_scale=1", f"--decode_to_file={tmp_path / 'samples.png'}")
  assert result.returncode == 0, result.stderr
  samples = tf.io.decode_png(tf.io.read_file(str(tmp_path / "samples.png"))).numpy()
  assert samples.shape == (2 * 32, 8 * 32, 3)            # 10 samples, rows of 8
  # The default: each pixel 4 x 4, 4 white pixels around each image, a label band of
  # 5 x 2 pixels of text and 4 of margin on each side above each row.
  result = run_tool("decode", *common, "--num_images=10", "--decode_hparams=temperature=0.7",
                    f"--decode_to_file={tmp_path / 'big.png'}")
  assert result.returncode == 0, result.stderr
  big = tf.io.decode_png(tf.io.read_file(str(tmp_path / "big.png"))).numpy()
  band = 10 + 2 * 4
  assert big.shape == (2 * (band + 128) + 4, 8 * (128 + 4) + 4, 3)
  first = big[band:band + 128, 4:4 + 128]
  np.testing.assert_array_equal(first[::4, ::4], samples[:32, :32])   # the same draw
  assert (big[:band, 300:] == 255).all() and (big[:band, :100] == 0).any()   # a label
  result = run_tool("decode", *common, "--num_samples=4", "--reconstructions",   # old name
                    "--image_scale=1", f"--decode_to_file={tmp_path / 'pairs.png'}")
  assert result.returncode == 0, result.stderr
  pairs = tf.io.decode_png(tf.io.read_file(str(tmp_path / "pairs.png")))
  assert pairs.shape == (32, 8 * 32, 3)                  # 4 images and their reconstructions
  result = run_tool("decode", *common, "--decode_hparams=temperature=-1",
                    f"--decode_to_file={tmp_path / 'x.png'}")
  assert result.returncode == 2 and "temperature: -1.0; expected a float > 0" in result.stderr


def test_decode_file_has_one_line_per_input_line(translation_run, tmp_path):
  long_line = " ".join(["A dog runs through the green grass."] * 20)   # > max_length tokens
  source = tmp_path / "source.en"
  source.write_bytes("A man rides a bike.\n\n   \nTwo dogs play.\n".encode() +
                     long_line.encode() + b"\nbroken \xff\xfe bytes\nno final newline")
  output = tmp_path / "output.de"
  result = run_tool("decode", *translation_run, f"--decode_from_file={source}",
                    f"--decode_to_file={output}",
                    f"--decode_hparams={decoding_text(translation_run)},batch_size=3")
  assert result.returncode == 0, result.stderr
  lines = output.read_text(encoding="utf-8").split("\n")
  assert lines[-1] == "" and len(lines[:-1]) == 7
  assert lines[1] == "" and lines[2] == ""               # empty and blank lines stay empty
  assert "line 5:" in result.stderr and "translated the first 63" in result.stderr
  assert "7 lines (2 empty, 1 cut to max_length)" in result.stderr


@pytest.mark.parametrize("translation_run", ["transformer_tiny"], indirect=True)
def test_decode_reads_stdin_and_writes_stdout(translation_run):
  result = run_tool("decode", *translation_run, input="A man rides a bike.\n\nTwo dogs play.\n")
  assert result.returncode == 0, result.stderr
  assert len(result.stdout.split("\n")) == 4 and result.stdout.split("\n")[1] == ""


def test_eval_reports_bleu_with_its_signature(translation_run):
  result = run_tool("eval", *translation_run, "--decode_hparams=beam_size=1",
                    "--bleu_sentences=100")
  assert result.returncode == 0, result.stderr
  metrics = json.loads(result.stdout.strip().splitlines()[-1])
  assert metrics["bleu_sentences"] == 100
  assert 0.0 <= metrics["bleu"] <= 100.0
  assert "tok:13a" in metrics["bleu_signature"] and "version:" in metrics["bleu_signature"]
  assert metrics["beam_size"] == 1


def test_eval_scores_candidates_with_a_teacher_and_decode_refuses_misuse(
    latent_and_teacher_runs):
  latent, teacher = latent_and_teacher_runs
  teacher_dir = next(f for f in teacher if f.startswith("--model_dir=")).split("=", 1)[1]
  result = run_tool("eval", *latent, "--decode_hparams=num_candidates=2",
                    f"--teacher_dir={teacher_dir}", "--bleu_sentences=20")
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout.strip().splitlines()[-1])["bleu_sentences"] == 20
  result = run_tool("decode", *latent, "--decode_hparams=num_candidates=2,candidate_codes=first_code",
                    input="A man rides a bike.\n")
  if "--hparams=vq_glat_tiny" in latent:   # its candidates are lengths: no codes to branch on
    assert result.returncode == 2 and "candidates are its likeliest lengths" in result.stderr
  else:
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
  refusals = [(teacher, ["--decode_hparams=num_candidates=2"], "only the latent model"),
              (latent, [f"--teacher_dir={teacher_dir}"], "give num_candidates > 1"),
              (latent, ["--decode_hparams=num_candidates=2,candidate_codes=first"],
               "expected beam or first_code")]
  for run, extra, message in refusals:
    result = run_tool("decode", *run, *extra, input="A man rides a bike.\n")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_distilled_problem_pairs_training_sources_with_the_teachers_translations(tmp_path):
  distilled = registry.problem("translate_ende_multi30k_distilled")
  raw_dir = TESTDATA / "multi30k"
  with pytest.raises(problem_lib.DataError, match="bin/decode --problem=translate_ende_multi30k"):
    distilled.text_pairs("train", tmp_path, raw_dir, lambda _: None)
  sources = read_lines(raw_dir / "train.en.gz")
  teacher = [f"teacher {i}" for i in range(len(sources))]
  distilled.distilled_path(tmp_path).write_text("\n".join(teacher) + "\n", encoding="utf-8")
  pairs = distilled.text_pairs("train", tmp_path, raw_dir, lambda _: None)
  got = [(s.decode(), t.decode()) for s, t in pairs.take(5).as_numpy_iterator()]
  assert got == list(zip(sources[:5], teacher[:5]))
  validation = distilled.text_pairs("validation", tmp_path, raw_dir, lambda _: None)
  assert (next(iter(validation))[1].numpy().decode() ==
          read_lines(raw_dir / "val.de.gz")[0])             # references stay the real ones
  assert distilled.vocab_path(tmp_path, registry.hparams("transformer_tiny")) == \
      registry.problem("translate_ende_multi30k").vocab_path(
          tmp_path, registry.hparams("transformer_tiny"))


TRAINING_FLAGS = ("--train_steps", "--checkpoint_every", "--eval_every", "--log_every",
                  "--jit_compile")


@pytest.mark.parametrize("tool", ["decode", "eval", "export", "train"])
def test_each_tool_offers_only_the_flags_it_reads(tool):
  result = run_tool(tool, "--helpfull")   # absl's help exits with 1
  assert "--model_dir" in result.stdout, result.stderr
  listed = set(re.findall(r"--\[?(?:no)?\]?(\w+):", result.stdout))
  for shared in ("problem", "hparams", "data_dir", "model_dir", "strategy", "cpu_devices"):
    assert shared in listed, (tool, shared)
  training = {flag.lstrip("-") for flag in TRAINING_FLAGS}
  assert training <= listed if tool == "train" else not training & listed, (tool, listed)
  assert ("decode_hparams" in listed) == (tool != "train")


@pytest.mark.parametrize("translation_run", ["vq_glat_tiny"], indirect=True)
def test_decode_refuses_a_beam_for_latent_glat_before_translating(translation_run):
  result = run_tool("decode", *translation_run, "--decode_hparams=beam_size=4",
                    input="A dog.\n")
  assert result.returncode == 2, result.stderr
  assert "beam_size=4: latent-GLAT decodes every token at once" in result.stderr
  assert "Traceback" not in result.stderr
