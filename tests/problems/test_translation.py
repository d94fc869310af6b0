"""Translation problems on real Multi30k text, their errors, and the tfds and download paths."""

import io
import shutil
import urllib.error

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import TESTDATA, multi30k_lines
from vqkeras import problem as problem_lib
from vqkeras import registry
from vqkeras.input_pipeline import bucket_boundaries
from vqkeras.tokenizer import EOS_ID, PAD_ID

QUIET = lambda _: None  # pylint: disable=unnecessary-lambda-assignment



@pytest.fixture(scope="module")
def tiny():
  return registry.hparams("transformer_tiny")


def test_pairs_are_the_aligned_lines(tmp_path):
  pairs = registry.problem("translate_ende_multi30k").text_pairs(
      "validation", tmp_path, TESTDATA / "multi30k", QUIET)
  got = [(s.decode(), t.decode()) for s, t in pairs.take(20).as_numpy_iterator()]
  assert got == list(zip(multi30k_lines("val.en.gz")[:20], multi30k_lines("val.de.gz")[:20]))


def test_tokenization_round_trips_ordinary_sentences(multi30k_data_dir, tiny):
  tokenizer = registry.problem("translate_ende_multi30k").tokenizer(multi30k_data_dir, None, tiny)
  assert tokenizer.vocab_size == tiny.vocab_size
  sentences = multi30k_lines("val.en.gz")[:100] + multi30k_lines("val.de.gz")[:100] + [
      "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.", "«Ça va?» — 3,5 €"]
  ids = tokenizer.tokenize(tf.constant(sentences))
  assert all(row[-1] == EOS_ID for row in ids.numpy())
  padded = ids.to_tensor(default_value=PAD_ID)
  assert [s.decode() for s in tokenizer.detokenize(padded).numpy()] == sentences
  assert [s.decode() for s in tokenizer.detokenize(ids).numpy()] == sentences


def test_batches_respect_the_token_budget(multi30k_data_dir, tiny):
  dataset = registry.problem("translate_ende_multi30k").dataset(
      "train", multi30k_data_dir, TESTDATA / "multi30k", tiny, training=True, seed=3)
  examples = 0
  for batch in dataset.take(60):
    inputs, targets = batch["inputs"].numpy(), batch["targets"].numpy()
    assert len(inputs) * max(inputs.shape[1], targets.shape[1]) <= tiny.batch_size
    assert max(inputs.shape[1], targets.shape[1]) <= tiny.max_length
    for row in [*inputs, *targets]:
      ended = row[row != PAD_ID]
      assert ended.size and ended[-1] == EOS_ID
    examples += len(inputs)
  assert examples > 60


def test_prepare_counts_and_the_pipeline_drops_empty_and_long_pairs(tmp_path, tiny):
  raw = tmp_path / "raw"
  raw.mkdir()
  english, german = multi30k_lines("train.en.gz"), multi30k_lines("train.de.gz")
  english[5], german[6] = "", "   "                      # two pairs with an empty side
  english[7] = " ".join(english[7:40])                     # far longer than max_length
  (raw / "train.en").write_text("\n".join(english) + "\n", encoding="utf-8")
  (raw / "train.de").write_text("\n".join(german) + "\n", encoding="utf-8")
  hparams = tiny.derive(vocab_size=500)
  multi30k = registry.problem("translate_ende_multi30k")
  stats = multi30k.prepare(tmp_path / "data", raw, hparams, QUIET)
  assert stats["pairs"] == len(english) and stats["empty"] == 2 and stats["too_long"] >= 1
  kept = sum(len(b["inputs"]) for b in multi30k.dataset(
      "train", tmp_path / "data", raw, hparams, training=False))
  assert kept == stats["kept"]


def test_parallel_files_of_different_lengths_are_refused(tmp_path, tiny):
  raw = tmp_path / "raw"
  raw.mkdir()
  (raw / "newstest2013.en").write_text("a\nb\nc\n")
  (raw / "newstest2013.de").write_text("a\nb\n")
  with pytest.raises(problem_lib.DataError, match=r"newstest2013.en has 3 lines.*"
                                                    r"newstest2013.de has 2"):
    registry.problem("translate_ende").text_pairs("validation", tmp_path, raw, QUIET)


def test_separators_inside_a_line_keep_parallel_files_aligned(tmp_path):
  # Web text holds U+2028, U+0085 and form feeds inside sentences; str.splitlines
  # would split there and shift every later pair. Evaluation (lines) and training
  # (dataset) must read the same pairs.
  english = ["One\u2028line.", "Form\x0cfeed and\x85next line.", "Windows line end."]
  german = ["Eine Zeile.", "Seitenvorschub.", "Zeilenende."]
  (tmp_path / "dev.en").write_bytes("".join(line + "\n" for line in english[:2]).encode() +
                                    (english[2] + "\r\n").encode())
  (tmp_path / "dev.de").write_text("".join(line + "\n" for line in german), encoding="utf-8")
  files = problem_lib.ParallelTextFiles(tmp_path, "dev", ("en", "de"))
  assert files.lines() == (english, german)
  read = [(s.decode(), t.decode()) for s, t in files.dataset().as_numpy_iterator()]
  assert read == list(zip(english, german))


def test_translate_ende_reads_local_parallel_files(tmp_path, tiny):
  raw = tmp_path / "raw"
  raw.mkdir()
  for language in ("en", "de"):
    shutil.copy(TESTDATA / "multi30k" / f"train.{language}.gz",
                raw / f"train.{language}.gz")
    shutil.copy(TESTDATA / "multi30k" / f"val.{language}.gz",
                raw / f"newstest2014.{language}.gz")
  ende = registry.problem("translate_ende")
  pairs = ende.text_pairs("test", tmp_path / "data", raw, QUIET)
  first = next(pairs.as_numpy_iterator())
  assert (first[0].decode(), first[1].decode()) == (multi30k_lines("val.en.gz")[0],
                                                   multi30k_lines("val.de.gz")[0])
  batch = next(iter(ende.dataset("test", tmp_path / "data", raw, tiny, training=False)))
  assert batch["inputs"].dtype == tf.int32


def test_translate_ende_tensorflow_datasets_path(tmp_path, monkeypatch, tiny):
  monkeypatch.setattr(problem_lib, "reachable", lambda url: True)
  with tfds.testing.mock_data(num_examples=200):
    ende = registry.problem("translate_ende")
    dataset = ende.dataset("validation", tmp_path / "data", tmp_path / "empty",
                           tiny.derive(vocab_size=300), training=False)
    batch = next(iter(dataset))
  assert batch["inputs"].dtype == tf.int32 and batch["targets"].shape[0] >= 1


def test_translate_ende_offline_without_files_says_what_to_do(tmp_path, monkeypatch, tiny):
  monkeypatch.setattr(problem_lib, "reachable", lambda url: False)
  with pytest.raises(problem_lib.DataError) as error:
    registry.problem("translate_ende").dataset("train", tmp_path / "data", tmp_path / "raw",
                                               tiny, training=True)
  for expected in ("train.en[.gz] and train.de[.gz]", f"--raw_dir={tmp_path / 'raw'}",
                   "download_and_prepare --datasets=wmt14_translate/de-en"):
    assert expected in str(error.value)


def test_multi30k_downloads_missing_files_from_upstream(tmp_path, monkeypatch):
  requested = []

  def fake_urlopen(url, timeout):
    del timeout
    requested.append(url)
    name = url.rsplit("/", 1)[-1]
    return io.BytesIO((TESTDATA / "multi30k" / name).read_bytes())

  monkeypatch.setattr(problem_lib.urllib.request, "urlopen", fake_urlopen)
  raw = tmp_path / "raw"
  pairs = registry.problem("translate_ende_multi30k").text_pairs("validation", tmp_path, raw,
                                                                 QUIET)
  assert requested == [
      "https://github.com/multi30k/dataset/raw/master/data/task1/raw/val.en.gz",
      "https://github.com/multi30k/dataset/raw/master/data/task1/raw/val.de.gz"]
  assert sorted(p.name for p in raw.iterdir()) == ["val.de.gz", "val.en.gz"]
  assert sum(1 for _ in pairs) == len(multi30k_lines("val.en.gz"))


def test_multi30k_offline_names_the_files_and_where(tmp_path, monkeypatch):
  def offline(url, timeout):
    raise urllib.error.URLError("Name or service not known")

  monkeypatch.setattr(problem_lib.urllib.request, "urlopen", offline)
  with pytest.raises(problem_lib.DataError, match=r"Put train.en.gz and train.de.gz there"):
    registry.problem("translate_ende_multi30k").training_text(tmp_path, tmp_path / "raw", QUIET)
  assert not list((tmp_path / "raw").glob("*.partial"))


def test_shards_are_disjoint_and_share_the_budget(multi30k_data_dir, tiny):
  multi30k = registry.problem("translate_ende_multi30k")
  shards = []
  for index in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index,
                                         num_replicas_in_sync=2)
    dataset = multi30k.dataset("validation", multi30k_data_dir, TESTDATA / "multi30k",
                               tiny, training=False, input_context=context)
    rows = set()
    for batch in dataset:
      inputs = batch["inputs"].numpy()
      assert len(inputs) * max(inputs.shape[1], batch["targets"].shape[1]) <= tiny.batch_size // 2
      rows |= {tuple(row[row != PAD_ID]) for row in inputs}
    shards.append(rows)
  assert shards[0] and shards[1] and not shards[0] & shards[1]


def test_bucket_boundaries_cover_every_length():
  boundaries = bucket_boundaries(64)
  assert boundaries[0] == 8 and boundaries[-1] == 65
  assert all(b > a for a, b in zip(boundaries, boundaries[1:]))
