"""Trains a small VQ-VAE on real CIFAR-10 records and writes reconstructions.

The short end-to-end job of the README: a few hundred steps of the paper's
autoencoder (narrower) with a soft-EM bottleneck on the CIFAR-10 records in
../shared/data, then held-out MSE, codebook health and a PNG of test images
beside their reconstructions.

  python examples/train_cifar_vqvae.py --steps=300 --output=runs/example
"""

import argparse
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
import keras

from vqkeras import images
from vqkeras.models import ImageVQVAE
from vqkeras.problems.image_cifar10 import read_cifar10_binary

REPO = pathlib.Path(__file__).resolve().parents[1]


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "cifar10" /
                                                 "cifar-10-batches-bin"))
  parser.add_argument("--output", default=str(REPO / "runs" / "example"))
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--update", default="soft_em", choices=["gradient", "ema", "soft_em"])
  parser.add_argument("--seed", type=int, default=1)
  return parser.parse_args()


def to_model_range(x):
  return tf.cast(x, tf.float32) / 127.5 - 1.0


def to_uint8(x):
  return np.clip(np.round((np.asarray(x) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def main():
  args = parse_args()
  keras.utils.set_random_seed(args.seed)
  files = sorted(pathlib.Path(args.data_dir).glob("data_batch_*.bin"))
  if not files:
    raise SystemExit(f"No CIFAR-10 data_batch_*.bin files in {args.data_dir}; pass --data_dir.")
  train_images, _ = read_cifar10_binary(files[:-1])
  held_out, _ = read_cifar10_binary(files[-1:])
  print(f"CIFAR-10: {len(train_images)} training images, {len(held_out)} held out "
        f"({files[-1].name})")

  model = ImageVQVAE(channels=64, latent_depth=32, codebook_size=128, num_blocks=2,
                     update=args.update, num_samples=5, decay=0.99, seed=args.seed)
  optimizer = keras.optimizers.Adam(1e-3)
  dataset = (tf.data.Dataset.from_tensor_slices(train_images).shuffle(len(train_images),
                                                                         seed=args.seed)
             .repeat().batch(args.batch_size, drop_remainder=True).map(to_model_range)
             .prefetch(2))

  @tf.function
  def train_step(x):
    with tf.GradientTape() as tape:
      reconstruction = model(x, training=True)
      mse = tf.reduce_mean(tf.square(reconstruction - x))
      loss = mse + tf.add_n(model.losses)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    return mse

  start = time.time()
  for step, x in enumerate(dataset.take(args.steps), 1):
    mse = train_step(x)
    if step % 50 == 0 or step == args.steps:
      health = model.quantizer.health()
      print(f"step {step:5d}  mse {float(mse):.4f}  perplexity {float(health['perplexity']):6.1f}"
            f"  codes used {int(health['codes_used']):3d}/{2 * 128}  "
            f"{step / (time.time() - start):.1f} steps/s", flush=True)

  x = to_model_range(held_out[:256])
  reconstruction = model(x, training=False)
  print(f"held-out reconstruction MSE (images in [-1, 1]): "
        f"{float(tf.reduce_mean(tf.square(reconstruction - x))):.4f}")
  output = pathlib.Path(args.output)
  output.mkdir(parents=True, exist_ok=True)
  grid = images.image_grid(np.stack([held_out[:8], to_uint8(reconstruction[:8])]))
  images.write_png(output / "reconstructions.png", grid)
  print(f"wrote {output / 'reconstructions.png'} (top: held-out images, bottom: reconstructions)")


if __name__ == "__main__":
  main()
