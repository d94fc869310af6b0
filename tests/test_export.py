"""bin/export: SavedModels that a process with only tensorflow and tensorflow_text serves.

Every signature is called in a fresh Python process that imports tensorflow and
tensorflow_text and nothing of ours; its outputs must equal the Python model's.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from conftest import decoding_of, decoding_text, flag_value, run_tool, TESTDATA
from vqkeras import registry
from vqkeras import translate
from vqkeras.files import read_lines
from vqkeras.run import Run

QUIET = lambda _: None  # pylint: disable=unnecessary-lambda-assignment
SENTENCES = ["A man rides a bike.", "", "   ", "Two dogs play in the snow.",
             " ".join(["A dog runs through the green grass."] * 20)]   # over max_length
SENTENCE_BYTES = [s.encode() for s in SENTENCES] + [b"broken \xff\xfe bytes"]

# Runs in the fresh process: argv = export dir, requests json, outputs json.
SERVE = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # the SentencePiece ops
    loaded = tf.saved_model.load(sys.argv[1])
    requests = json.loads(open(sys.argv[2]).read())
    def to_json(array):
      if array.dtype == object:   # strings, as hex of their bytes
        return {"hex": [s.hex() for s in array.ravel()], "shape": array.shape}
      return {"values": array.tolist(), "dtype": str(array.dtype)}
    results = {}
    for name, (signature, inputs) in requests.items():
      function = loaded.signatures[signature]
      args = {key: tf.constant([bytes.fromhex(v) for v in value["value"]], tf.string)
                   if value["dtype"] == "hex" else tf.constant(value["value"], value["dtype"])
              for key, value in inputs.items()}
      try:
        results.update({f"{name}/{key}": to_json(value.numpy())
                        for key, value in function(**args).items()})
      except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
        results[f"{name}/refused"] = str(error)
    open(sys.argv[3], "w").write(json.dumps(results))
    print("ours imported:", sorted(m for m in sys.modules if m.split(".")[0] in
                                   ("vqkeras", "problems", "hparams")))
""")


def serve_in_fresh_process(export_path, requests, tmp_path):
  """Calls signatures in a process that imports only tensorflow and tensorflow_text."""
  request_file, output = tmp_path / "requests.json", tmp_path / "outputs.json"
  request_file.write_text(json.dumps(requests))
  result = subprocess.run([sys.executable, "-c", SERVE, str(export_path), str(request_file),
                           str(output)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  assert "ours imported: []" in result.stdout
  def from_json(value):
    if isinstance(value, str):
      return value
    if "hex" in value:
      return np.array([bytes.fromhex(h) for h in value["hex"]], object).reshape(value["shape"])
    return np.array(value["values"], value["dtype"])
  return {name: from_json(value) for name, value in json.loads(output.read_text()).items()}


def tensor(value, dtype):
  return {"value": value, "dtype": dtype}


def exported(tmp_path_factory, flags, *export_args):
  """The export directory of a trained run."""
  export_dir = tmp_path_factory.mktemp("export")
  result = run_tool("export", *flags, f"--export_dir={export_dir}", *export_args)
  assert result.returncode == 0, result.stderr
  assert f"exported {export_dir / '3'}" in result.stdout
  return export_dir


@pytest.fixture(scope="module")
def translation_export(tmp_path_factory, translation_run):
  return translation_run, exported(tmp_path_factory, translation_run,
                                   f"--decode_hparams={decoding_text(translation_run)}")


def test_translation_export_serves_text_and_ids_as_the_python_model(translation_export,
                                                                    multi30k_data_dir, tmp_path):
  flags, export_dir = translation_export
  model_dir = flag_value(flags, "model_dir")
  versions = [p.name for p in export_dir.iterdir()]
  assert versions == ["3"]                       # the training step, nothing half-written
  run = Run.from_model_dir(model_dir, multi30k_data_dir, TESTDATA / "multi30k", log=QUIET)
  tokenizer = run.tokenizer()
  ids, _ = translate.source_ids(tokenizer, tf.constant(SENTENCE_BYTES), 64)
  served = serve_in_fresh_process(export_dir / "3", {
      # Raw bytes, invalid UTF-8 included, as a client sends them.
      "text": ("serving_default", {"inputs": tensor([s.hex() for s in SENTENCE_BYTES], "hex")}),
      "ids": ("translate_ids", {"inputs": tensor(ids.numpy().tolist(), "int32")}),
      "empty_batch": ("serving_default", {"inputs": tensor([], "string")}),
  }, tmp_path)
  search = translate.Search(length_penalty=run.hparams.length_penalty, **decoding_of(flags))
  expected = translate.translate_text(run.model, tokenizer, tf.constant(SENTENCE_BYTES),
                                      search).numpy()
  served_text = [s.decode("utf-8") for s in served["text/outputs"]]
  assert served_text == [s.decode("utf-8") for s in expected]
  assert served_text[1] == "" and served_text[2] == ""      # empty and blank stay empty
  assert all(served_text[i] for i in (0, 3, 4, 5))          # over-long and broken ones too
  expected_ids = translate.translate_ids(run.model, ids, search).numpy()
  np.testing.assert_array_equal(served["ids/outputs"], expected_ids)
  assert served["empty_batch/outputs"].shape == (0,)


def test_an_export_with_a_teacher_serves_its_candidates_alike_alone_and_in_a_batch(
    latent_and_teacher_runs, multi30k_data_dir, tmp_path_factory, tmp_path):
  """The latent model's 3 candidates scored by the Transformer, both in one SavedModel:
  16 real sentences in one request equal each sentence alone and Python decoding."""
  latent_flags, teacher_flags = latent_and_teacher_runs
  teacher_dir = flag_value(teacher_flags, "model_dir")
  export_dir = exported(tmp_path_factory, latent_flags, "--decode_hparams=num_candidates=3",
                        f"--teacher_dir={teacher_dir}")
  raw_dir = TESTDATA / "multi30k"
  sentences = [line.encode() for line in read_lines(raw_dir / "val.en.gz")[:16]]
  requests = {"all": ("serving_default", {"inputs": tensor([s.hex() for s in sentences], "hex")})}
  requests.update({f"alone_{i}": ("serving_default", {"inputs": tensor([s.hex()], "hex")})
                   for i, s in enumerate(sentences)})
  served = serve_in_fresh_process(export_dir / "3", requests, tmp_path)
  for i in range(len(sentences)):
    assert served[f"alone_{i}/outputs"][0] == served["all/outputs"][i], i
  model = Run.from_model_dir(flag_value(latent_flags, "model_dir"), multi30k_data_dir, raw_dir,
                             log=QUIET).model
  teacher = Run.from_model_dir(teacher_dir, multi30k_data_dir, raw_dir, log=QUIET).model
  tokenizer = registry.problem("translate_ende_multi30k").tokenizer(
      multi30k_data_dir, None, model.hparams)
  search = translate.Search(1, model.hparams.length_penalty, 3, teacher)
  expected = translate.translate_text(model, tokenizer, tf.constant(sentences), search).numpy()
  assert list(served["all/outputs"]) == list(expected)


def test_an_xla_export_serves_the_graphs_translations(translation_run, multi30k_data_dir,
                                                      tmp_path_factory, tmp_path):
  """xla=true: the served model pads its sources to buckets and compiles its parallel passes
  with XLA; 16 real sentences in one request and alone translate as the graph does unpadded
  (the Transformer with a beam of 2, the latent models with 2 candidates)."""
  searches = {"beam_size": 2} if flag_value(translation_run, "hparams").startswith(
      "transformer") else {"num_candidates": 2}
  export_dir = exported(tmp_path_factory, translation_run, "--decode_hparams=xla=true," +
                        ",".join(f"{name}={value}" for name, value in searches.items()))
  raw_dir = TESTDATA / "multi30k"
  sentences = [line.encode() for line in read_lines(raw_dir / "val.en.gz")[:16]]
  requests = {"all": ("serving_default", {"inputs": tensor([s.hex() for s in sentences], "hex")})}
  requests.update({f"alone_{i}": ("serving_default", {"inputs": tensor([s.hex()], "hex")})
                   for i, s in enumerate(sentences[:4])})
  served = serve_in_fresh_process(export_dir / "3", requests, tmp_path)
  run = Run.from_model_dir(flag_value(translation_run, "model_dir"), multi30k_data_dir, raw_dir,
                           log=QUIET)
  search = translate.Search(length_penalty=run.hparams.length_penalty, **searches)
  expected = translate.translate_text(run.model, run.tokenizer(), tf.constant(sentences),
                                      search).numpy()
  assert list(served["all/outputs"]) == list(expected)
  for i in range(4):
    assert served[f"alone_{i}/outputs"][0] == expected[i], i


@pytest.fixture(scope="module")
def image_export(tmp_path_factory, cifar_run):
  return cifar_run, exported(tmp_path_factory, cifar_run)


def test_image_export_samples_encodes_and_decodes_as_the_python_model(image_export, cifar_images,
                                                                      tmp_path):
  flags, export_dir = image_export
  model = Run.from_model_dir(flag_value(flags, "model_dir"), flag_value(flags, "data_dir"),
                             TESTDATA / "cifar10", log=QUIET).model
  images = cifar_images[:4]
  codes = model.encode_images(images).numpy()
  served = serve_in_fresh_process(export_dir / "3", {
      "sample": ("sample", {"num_images": tensor(3, "int32"), "seed": tensor([7, 1], "int32"),
                            "temperature": tensor(0.8, "float32")}),
      "encode": ("encode", {"images": tensor(images.tolist(), "uint8")}),
      "decode": ("decode", {"codes": tensor(codes.tolist(), "int32")}),
      "float_images": ("encode", {"images": tensor(images.astype(np.float32).tolist(),
                                                    "float32")}),
      "wrong_shape": ("encode", {"images": tensor(images[:, :16].tolist(), "uint8")}),
  }, tmp_path)
  np.testing.assert_array_equal(served["sample/images"], model.sample(3, 0.8, (7, 1)).numpy())
  assert served["sample/images"].dtype == np.uint8 and served["sample/images"].shape[0] == 3
  np.testing.assert_array_equal(served["encode/codes"], codes)
  np.testing.assert_array_equal(served["decode/images"], model.decode_codes(codes).numpy())
  assert "float_images/refused" in served and "wrong_shape/refused" in served


def test_saved_model_cli_lists_the_signatures(image_export, translation_export):
  for export_dir, names in ((image_export[1], ["sample", "encode", "decode", "serving_default"]),
                            (translation_export[1], ["serving_default", "translate_ids"])):
    result = subprocess.run(["saved_model_cli", "show", "--all", "--dir",
                             str(export_dir / "3")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in names:
      assert f"signature_def['{name}']" in result.stdout


def test_export_never_overwrites_a_version(image_export):
  flags, export_dir = image_export
  before = sorted(p.name for p in (export_dir / "3").rglob("*"))
  result = run_tool("export", *flags, f"--export_dir={export_dir}")
  assert result.returncode == 2 and "versions are never overwritten" in result.stderr
  assert "Traceback" not in result.stderr
  assert sorted(p.name for p in (export_dir / "3").rglob("*")) == before
