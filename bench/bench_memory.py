"""Memory and speed of a training step at the papers' sizes, one process per hyper-parameter set.

For each set a fresh process builds the model and its optimizer, runs training steps at
the set's own batch (4096 tokens per step for translation, 128 images for CIFAR-10),
and prints its peak memory (the process's peak RSS on a CPU; the device's peak where a
GPU is visible), the seconds per step, the parameter count and an analytic lower
bound beside the measurement: 16 bytes per trainable parameter (weight, gradient, two
Adam slots), 4 per other variable, and the activations the backward pass must read
(counted per layer below). Then it times decoding (beam 4, batch 64, or 16 samples of
the image prior) and a SavedModel export at the same size.

Batches: images are real CIFAR-10 records; translation batches have the shapes the
input pipeline makes for a 4096-token budget (bucket_batch_sizes) at the shortest, a
typical and the longest length of WMT'14 (every position a real token, random ids), as
no WMT'14 text is on this machine. Memory depends on the shapes, not on which words.

  python bench/bench_memory.py                       # every base set
  python bench/bench_memory.py --sets=vq_em,vq_em_cifar --steps=2
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

from vqkeras import startup

startup.quiet()   # before TensorFlow loads

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
BASE_SETS = ("transformer_base", "vq_em", "vq_ema", "vq_gradient", "vq_em_cifar",
             "vq_ema_cifar", "vq_gradient_cifar")
# Translation lengths measured: the shortest bucket, a typical WMT'14 sentence, max_length.
LENGTHS = (8, 32, 256)
GB = 2 ** 30
FLOAT = 4


# Activations the backward pass reads, in floats (a lower bound: no dropout masks, no
# copies, no temporaries of the forward pass).

def stack_activations(tokens, length, layers, hparams, memory_length=0):
  """Per Transformer layer and position: the residual stream and layer norm output of each
  sublayer (2h each), queries, keys and values (3h), attention weights (heads x keys),
  attention output (h); with cross-attention its queries, weights and output (2h + heads
  x memory length); the feed-forward's ReLU output (filter)."""
  h, heads = hparams["hidden_size"], hparams["num_heads"]
  per_token = 2 * h + 3 * h + heads * length + h + 2 * h + hparams["filter_size"]
  if memory_length:
    per_token += 2 * h + 2 * h + heads * memory_length
  return layers * tokens * per_token


def transformer_activations(hp, batch, length):
  tokens = batch * length
  encoder = stack_activations(tokens, length, hp["num_layers"], hp)
  decoder = stack_activations(tokens, length, hp["num_layers"], hp, memory_length=length)
  memory_keys_values = hp["num_layers"] * tokens * 2 * hp["hidden_size"]
  return encoder + decoder + memory_keys_values + tokens * hp["vocab_size"]   # softmax


def latent_transformer_activations(hp, batch, length):
  h, steps = hp["hidden_size"], hp["compression_steps"]
  tokens, latents = batch * length, batch * -(-length // 2 ** steps)
  encoder = stack_activations(tokens, length, hp["num_layers"], hp)
  # Residual convolutions: residual stream, layer norm output, three ReLU outputs.
  compress = steps * tokens * 5 * h + sum(tokens // 2 ** i * h for i in range(steps))
  decompress = sum(latents * 2 ** i * (5 * h + 2 * h) for i in range(steps))
  latent_length = length // 2 ** steps + 1
  predictor = stack_activations(batch * latent_length, latent_length, hp["num_layers"], hp,
                                memory_length=length)
  predictor += batch * latent_length * (2 ** hp["bottleneck_bits"] + 1)   # its softmax
  decoder = stack_activations(tokens, length, hp["num_layers"], hp, memory_length=length)
  memory_keys_values = 2 * hp["num_layers"] * tokens * 2 * h
  bottleneck = latents * (h + hp["num_samples"] * h)   # latents and sampled code vectors
  return (encoder + compress + predictor + decompress + decoder + memory_keys_values +
          bottleneck + tokens * hp["vocab_size"])


def image_vqvae_activations(hp, batch):
  c, side = hp["channels"], 32
  s2, s4 = (side // 2) ** 2, (side // 4) ** 2
  # Encoder: conv outputs at 16x16 and 8x8, per residual block relu(x), its 3x3 conv's
  # ReLU output and the block output; the decoder mirrors it; the 768-channel logits'
  # softmax at 32x32.
  encoder = s2 * c + s4 * c + 2 * 3 * s4 * c + s4 * c + s4 * hp["latent_depth"]
  decoder = s4 * c + 2 * 3 * s4 * c + s4 * c + s2 * c + side * side * 3 * 256
  prior_hp = {"hidden_size": hp["prior_hidden_size"], "num_heads": hp["prior_num_heads"],
              "filter_size": hp["prior_filter_size"]}
  blocks = hp["num_blocks"]
  if hp["prior_factorization"] == "positions":
    prior = (stack_activations(s4, s4, hp["prior_num_layers"], prior_hp) +
             stack_activations(s4 * blocks, blocks, hp["prior_block_layers"], prior_hp))
  else:
    prior = stack_activations(s4 * blocks, s4 * blocks, hp["prior_num_layers"], prior_hp)
  prior += s4 * blocks * hp["codebook_size"]   # its softmax
  return batch * (encoder + decoder + prior)


def rss_gb():
  with open("/proc/self/statm") as statm:
    return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GB


def peak_gb(tf):
  """The device's peak memory where a GPU is visible, else the process's peak RSS."""
  if tf.config.list_physical_devices("GPU"):
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / GB, "GPU peak"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB, "peak RSS"


def translation_batches(hparams, rng):
  from vqkeras import input_pipeline  # pylint: disable=import-outside-toplevel
  boundaries = input_pipeline.bucket_boundaries(hparams.max_length)
  sizes = input_pipeline.bucket_batch_sizes(boundaries, hparams.batch_size)
  batches = []
  for length in LENGTHS:
    length = min(length, hparams.max_length)
    bucket = next(i for i, boundary in enumerate(boundaries) if length < boundary)
    ids = rng.integers(3, hparams.vocab_size, size=(sizes[bucket], length)).astype("int32")
    ids[:, -1] = 1   # EOS
    batches.append({"inputs": ids, "targets": ids[::-1].copy()})
  return batches


def cifar_batches(hparams, rng, count):
  from vqkeras.problems.image_cifar10 import read_cifar10_binary  # pylint: disable=import-outside-toplevel
  folder = SHARED / "cifar10" / "cifar-10-batches-bin"
  paths = sorted(folder.glob("data_batch_*.bin")) or sorted(
      (REPO / "tests" / "testdata" / "cifar10").glob("*.bin"))
  if not paths:
    raise SystemExit(f"No CIFAR-10 records in {folder}.")
  images = read_cifar10_binary(paths)[0]
  return [{"image": images[rng.choice(len(images), hparams.batch_size)],
           "label": rng.integers(0, 10, hparams.batch_size)} for _ in range(count)]


def text_tokenizer(directory):
  """A small SentencePiece tokenizer of Multi30k's validation text: the export needs one;
  its vocabulary does not change the model's size."""
  import gzip  # pylint: disable=import-outside-toplevel
  from vqkeras import tokenizer  # pylint: disable=import-outside-toplevel
  path = SHARED / "multi30k" / "val.en.gz"
  if not path.is_file():
    path = REPO / "tests" / "testdata" / "multi30k" / "train.en.gz"
  with gzip.open(path, "rt", encoding="utf-8") as lines:
    sentences = [line.strip() for line in lines]
  model_path = pathlib.Path(directory) / "tokenizer.model"
  tokenizer.train_sentencepiece(sentences, 1000, model_path)
  return tokenizer.Tokenizer(model_path)


def activation_floats(values, shapes, images):
  if images:
    return image_vqvae_activations(values, values["batch_size"])
  count = (latent_transformer_activations if "compression_steps" in values
           else transformer_activations)
  return max(count(values, *shape) for shape in shapes)


def measure(name, steps, jit_compile):
  """Runs in the child process: builds `name`, trains, decodes, exports; returns a dict."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from vqkeras import export  # pylint: disable=import-outside-toplevel
  from vqkeras import registry  # pylint: disable=import-outside-toplevel
  from vqkeras import train_step  # pylint: disable=import-outside-toplevel
  from vqkeras import models  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  hparams = registry.hparams(name)
  model_type = models.model_class(hparams)
  model, optimizer = model_type.from_hparams(hparams), model_type.make_optimizer(hparams)
  images = isinstance(model, models.ImageModel)
  if images:
    shapes = [(hparams.batch_size, 32, 32, 3)]
    batches = cifar_batches(hparams, rng, steps + 1)
  else:
    per_shape = translation_batches(hparams, rng)
    shapes = [batch["inputs"].shape for batch in per_shape]
    # One step warms each shape up (tracing, oneDNN's kernels), `steps` are timed.
    batches = [batch for batch in per_shape for _ in range(steps + 1)]
  train_step.build(model, optimizer, {k: v[:2] for k, v in batches[0].items()})
  signature = tf.nest.map_structure(
      lambda v: tf.TensorSpec([None] * v.ndim, tf.as_dtype(v.dtype)), batches[0])
  step = train_step.make_train_step(model, optimizer, signature, hparams.clip_grad_norm,
                                  jit_compile=jit_compile)
  trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  other = sum(int(np.prod(v.shape)) for v in model.non_trainable_variables)
  rss_before = rss_gb()
  seconds = []
  for i, batch in enumerate(batches):
    start = time.perf_counter()
    float(step(batch)["loss"])
    if i % (steps + 1):
      seconds.append(time.perf_counter() - start)
  values = dataclasses.asdict(hparams)
  result = {"set": name, "params": trainable + other, "peak_kind": peak_gb(tf)[1],
            "peak_gb": peak_gb(tf)[0], "rss_before_steps_gb": rss_before,
            "seconds_per_step": float(np.mean(seconds)),
            "shapes": [list(shape) for shape in shapes],
            "bound_gb": (16 * trainable + FLOAT * other +
                         FLOAT * activation_floats(values, shapes, images)) / GB}
  with tempfile.TemporaryDirectory() as directory:
    if images:
      sample = tf.function(lambda: model.sample(16, 1.0, (1, 2)))
      start = time.perf_counter()
      sample().numpy()
      result["decode"] = ["16 samples of the prior", time.perf_counter() - start]
      serving = export.ImageServing(model, (32, 32, 3))
    else:
      length = min(32, hparams.max_length)
      inputs = translation_batches(hparams, rng)[1]["inputs"][:64, :length]
      translate = tf.function(lambda ids: model.translate(
          ids, beam_size=4, length_penalty=0.6, max_decode_length=2 * length))
      start = time.perf_counter()
      translate(inputs).numpy()
      result["decode"] = [f"beam 4, batch 64, {length} -> at most {2 * length} tokens",
                          time.perf_counter() - start]
      serving = export.TranslationServing(model, text_tokenizer(directory), 4, 0.6)
    start = time.perf_counter()
    export.export(serving, pathlib.Path(directory) / "export", 1)
    result["export_seconds"] = time.perf_counter() - start
  result["peak_with_decoding_gb"] = peak_gb(tf)[0]
  return result


def run_child(name, steps, jit_compile):
  """`measure(name)` in a fresh process (peak memory is per process)."""
  command = [sys.executable, __file__, f"--child={name}", f"--steps={steps}"]
  if jit_compile:
    command.append("--jit_compile")
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  if done.returncode or not lines:
    tail = "\n".join(done.stderr.splitlines()[-5:])
    return {"set": name, "error": f"exit code {done.returncode}: {tail}"}
  return json.loads(lines[-1])


def print_table(results, cpu_count):
  print(f"Training steps at the sets' own batch ({cpu_count} CPU cores); bound: weights, "
        f"gradients, Adam slots and the activations the backward pass reads")
  header = (f"{'set':<20} {'params':>8} {'start GB':>8} {'peak GB':>8} {'bound GB':>8} "
            f"{'peak/bound':>10} "
            f"{'s/step':>7} {'decode s':>8} {'export s':>8}  shapes")
  print(header)
  for r in results:
    if "error" in r:
      print(f"{r['set']:<20} failed: {r['error']}")
      continue
    print(f"{r['set']:<20} {r['params'] / 1e6:7.1f}M {r['rss_before_steps_gb']:8.2f} "
          f"{r['peak_gb']:8.2f} {r['bound_gb']:8.2f} "
          f"{r['peak_gb'] / r['bound_gb']:9.2f}x {r['seconds_per_step']:7.2f} "
          f"{r['decode'][1]:8.1f} {r['export_seconds']:8.1f}  "
          f"{' '.join('x'.join(map(str, s)) for s in r['shapes'])}")
  kinds = sorted({r["peak_kind"] for r in results if "peak_kind" in r})
  print(f"(start: RSS with the model and optimizer built, before the first step; peak: "
        f"{', '.join(kinds)} of the process over the training steps; decode: translating "
        f"64 sentences with beam 4, or 16 samples of the image prior, one call with its tracing)")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sets", default=",".join(BASE_SETS))
  parser.add_argument("--steps", type=int, default=2, help="timed steps per batch shape")
  parser.add_argument("--jit_compile", action="store_true", help="XLA on the training step")
  parser.add_argument("--json", default="", help="also write the results here")
  parser.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(measure(args.child, args.steps, args.jit_compile)))
    return
  results = []
  for name in args.sets.split(","):
    results.append(run_child(name, args.steps, args.jit_compile))
    print(json.dumps(results[-1]), flush=True)
  print_table(results, os.cpu_count())
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
