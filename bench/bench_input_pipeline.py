"""Input pipeline throughput against what one training step consumes, side by side.

For each problem with its default small hyper-parameters: tokens (or images) per
second that the tf.data pipeline delivers alone, and that the training step
(vqkeras.train_step) consumes on the same batches. The pipeline must deliver at
least 5x what training consumes, so that it is never the bottleneck.

  python bench/bench_input_pipeline.py [--data_dir=/tmp/vqkeras_bench]
"""

import argparse
import pathlib
import time

from vqkeras import startup

startup.quiet()   # before TensorFlow loads

import keras
import tensorflow as tf

from vqkeras import registry
from vqkeras import train_step
from vqkeras.models import model_class
from vqkeras.tokenizer import PAD_ID

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def count_tokens(batch):
  return int(tf.reduce_sum(tf.cast(tf.not_equal(batch["targets"], PAD_ID), tf.int32)))


def count_images(batch):
  return int(tf.shape(batch["image"])[0])


def pipeline_rate(dataset, count, batches):
  """Units per second the pipeline delivers on its own (after a warm-up)."""
  iterator = iter(dataset)
  for _ in range(5):
    next(iterator)
  start, units = time.perf_counter(), 0
  for _ in range(batches):
    units += count(next(iterator))
  return units / (time.perf_counter() - start)


def training_rate(model, dataset, count, steps):
  """Units per second one training step consumes, on batches taken ahead of time."""
  optimizer = keras.optimizers.Adam(1e-3)
  step = train_step.make_train_step(model, optimizer, train_step.feature_signature(dataset))
  batches = list(dataset.take(steps + 2))
  for batch in batches[:2]:
    step(batch)
  start = time.perf_counter()
  for batch in batches[2:]:
    step(batch)["loss"].numpy()
  return sum(count(b) for b in batches[2:]) / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="/tmp/vqkeras_bench")
  parser.add_argument("--steps", type=int, default=8)
  args = parser.parse_args()

  cases = [
      ("translate_ende_multi30k", "transformer_small", SHARED / "multi30k", count_tokens,
       "target tokens/s"),
      ("image_cifar10", "vq_em_cifar_small", SHARED / "cifar10", count_images, "images/s"),
  ]
  print(f"{'problem':25s} {'hparams':20s} {'unit':16s} {'pipeline':>10s} {'training':>10s} "
        f"{'ratio':>7s}")
  for problem_name, hparams_name, raw_dir, count, unit in cases:
    problem, hparams = registry.problem(problem_name), registry.hparams(hparams_name)
    dataset = problem.dataset("train", args.data_dir, raw_dir, hparams, training=True, seed=0)
    dataset = dataset.repeat()
    delivered = pipeline_rate(dataset, count, batches=100)
    model = model_class(hparams).from_hparams(hparams)
    consumed = training_rate(model, dataset, count, args.steps)
    print(f"{problem_name:25s} {hparams_name:20s} {unit:16s} {delivered:10.0f} "
          f"{consumed:10.0f} {delivered / consumed:6.1f}x", flush=True)


if __name__ == "__main__":
  main()
