"""Speed of the training loop: MirroredStrategy against one device, and the loop's overhead.

In one process, on the same model (`vq_em_cifar_small` on the CIFAR records) and
global batch: steps/s of bin/train's loop under MirroredStrategy on 2 logical CPU
devices and under the default strategy; and the loop against a bare tf.function
step on batches already in memory: the loop (input pipeline, distribution, NaN
check, progress) must cost under 5% of the step.

  python bench/bench_trainer.py
"""

import argparse
import os
import pathlib
import tempfile
import time

from vqkeras import startup

startup.quiet()   # before TensorFlow loads

import tensorflow as tf

from vqkeras import distribute

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def loop_seconds_per_step(strategy, steps, data_dir, hparams):
  """Seconds per step of Trainer.train, after a warm-up that traces the step."""
  from vqkeras import run as run_lib  # pylint: disable=import-outside-toplevel
  from vqkeras import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as model_dir:
    config = run_lib.RunConfig(problem="image_cifar10", hparams=hparams, data_dir=data_dir,
                               raw_dir=str(SHARED / "cifar10"), model_dir=model_dir)
    run = run_lib.Run(config, strategy, log=lambda _: None)
    trainer = trainer_lib.Trainer(run)
    trainer.train(10, checkpoint_every=0, log_every=10**9)
    start = time.perf_counter()
    trainer.train(10 + steps, checkpoint_every=0, log_every=10**9)
    return (time.perf_counter() - start) / steps, run


def bare_seconds_per_step(run, steps):
  """Seconds per step of a tf.function step on batches held in memory (no loop around it)."""
  from vqkeras import train_step  # pylint: disable=import-outside-toplevel
  from vqkeras.models import model_class  # pylint: disable=import-outside-toplevel
  hparams = run.hparams
  model_type = model_class(hparams)
  model, optimizer = model_type.from_hparams(hparams), model_type.make_optimizer(hparams)
  dataset = run.dataset("train", training=True)
  batches = list(dataset.take(steps + 10))
  step = train_step.make_train_step(model, optimizer, train_step.feature_signature(dataset))
  for batch in batches[:10]:
    step(batch)["loss"].numpy()
  start = time.perf_counter()
  for batch in batches[10:]:
    result = step(batch)
  result["loss"].numpy()
  return (time.perf_counter() - start) / steps


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--hparams", default="vq_em_cifar_small")
  parser.add_argument("--data_dir", default="/tmp/vqkeras_bench")
  args = parser.parse_args()
  distribute.split_cpu(2)
  mirrored, _ = loop_seconds_per_step(distribute.make_strategy("mirrored"), args.steps,
                                      args.data_dir, args.hparams)
  single, run = loop_seconds_per_step(tf.distribute.get_strategy(), args.steps,
                                      args.data_dir, args.hparams)
  bare = bare_seconds_per_step(run, args.steps)
  print(f"{args.hparams}, global batch {run.hparams.batch_size}, {args.steps} steps, "
        f"{os.cpu_count()} CPU cores")
  print(f"  loop, MirroredStrategy on 2 logical CPUs: {1 / mirrored:7.2f} steps/s")
  print(f"  loop, default strategy:                   {1 / single:7.2f} steps/s   "
        f"mirrored / default: {single / mirrored:.2f}x the speed")
  print(f"  bare tf.function step, batches in memory: {1 / bare:7.2f} steps/s   "
        f"loop overhead: {(single - bare) / bare:+.1%} of the step (target < 5%)")


if __name__ == "__main__":
  main()
