"""Trains a small VQ-VAE on real CIFAR-10 records, reconstructs and samples.

The short end-to-end job of the README: the trainer of bin/train runs
`vq_em_cifar_small` (the paper's autoencoder, narrower, with a soft-EM
bottleneck and a Transformer prior over the codes) on the CIFAR-10 records in
../shared/data/cifar10 (--raw_dir), else on tensorflow-datasets' copy, downloaded into
--data_dir; then held-out images beside their reconstructions, and images
sampled from the prior, go to PNGs.

  python examples/train_cifar_vqvae.py --steps=600 --model_dir=runs/example
"""

import argparse
import pathlib
import sys

from vqkeras import startup

startup.quiet()   # before TensorFlow loads

import numpy as np
import tensorflow as tf

from vqkeras import images
from vqkeras import problem
from vqkeras import run as run_lib
from vqkeras import trainer as trainer_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--raw_dir", default=str(REPO.parent / "shared" / "data" / "cifar10"))
  parser.add_argument("--data_dir", default=str(REPO / "runs" / "data"))
  parser.add_argument("--model_dir", default=str(REPO / "runs" / "example"))
  parser.add_argument("--hparams", default="vq_em_cifar_small")
  parser.add_argument("--steps", type=int, default=600)
  return parser.parse_args()


def main():
  args = parse_args()
  config = run_lib.RunConfig(problem="image_cifar10", hparams=args.hparams,
                             data_dir=args.data_dir, raw_dir=args.raw_dir,
                             model_dir=args.model_dir)
  try:
    run = run_lib.Run(config, tf.distribute.get_strategy())
  except problem.DataNotFound:
    sys.exit(f"error: CIFAR-10 is not in --raw_dir={args.raw_dir} and cannot be downloaded "
             f"from here: put cifar-10-binary.tar.gz (https://www.cs.toronto.edu/~kriz/"
             f"cifar.html) in that directory, or run with internet access.")
  trainer_lib.Trainer(run).train(args.steps, eval_every=args.steps, checkpoint_every=args.steps,
                                 log_every=100)

  held_out, _ = run.problem.arrays("validation", args.data_dir, args.raw_dir)
  reconstructions = run.model.reconstruct(held_out[:8]).numpy()
  path = pathlib.Path(args.model_dir) / "reconstructions.png"
  images.write_png(path, images.labelled_grid(np.stack([held_out[:8], reconstructions]),
                                              ["held-out images", "reconstructions"]))
  print(f"wrote {path} (top: held-out images, bottom: their reconstructions)")
  samples = run.model.sample(16, seed=(1, 0)).numpy()
  path = pathlib.Path(args.model_dir) / "samples.png"
  images.write_png(path, images.labelled_grid(samples.reshape((2, 8) + samples.shape[1:]),
                                              ["samples of the prior", ""]))
  print(f"wrote {path} (16 images sampled from the Transformer prior over the codes)")


if __name__ == "__main__":
  main()
