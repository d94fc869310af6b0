"""The bottlenecks on CIFAR-10 at the same training budget.

Trains vq_ema_cifar_small, vq_em_cifar_small, vq_gradient_cifar_small,
vq_rvq_cifar_small, vq_grvq_cifar_small, vq_fsq_cifar_small, vq_rfsq_cifar_small,
vq_lfq_cifar_small, vq_bsq_cifar_small, vq_simvq_cifar_small and the Gumbel-softmax
bottleneck (the same model, only the bottleneck differs; Gumbel has one code of 128 per
position where the VQ sets have two), and vq_em_cifar_small with the discretized logistic mixture likelihood
instead of the 256-way categorical, for the same number of steps on the CIFAR-10 records
in ../shared/data, with the same seed, then prints one table of held-out bits/dim (reconstruction, prior,
total), reconstruction MSE, perplexity and codes used of each code layer (residual VQ:
one per level) and steps/s. Roy et al. 2018 report soft EM beating hard EM.

  python bench/bench_cifar_bottlenecks.py --steps=1000
  python bench/bench_cifar_bottlenecks.py --steps=500 --only=vq_em_cifar_small,vq_lfq_cifar_small
"""

import argparse
import json
import pathlib
import tempfile
import time

import figures
from vqkeras import startup

startup.quiet()   # before TensorFlow loads

import tensorflow as tf

from vqkeras import run as run_lib
from vqkeras import trainer as trainer_lib

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
# (hparams, overrides)
SETS = (("vq_ema_cifar_small", ""), ("vq_em_cifar_small", ""), ("vq_gradient_cifar_small", ""),
        ("vq_rvq_cifar_small", ""), ("vq_grvq_cifar_small", ""), ("vq_fsq_cifar_small", ""),
        ("vq_rfsq_cifar_small", ""), ("vq_lfq_cifar_small", ""), ("vq_bsq_cifar_small", ""),
        ("vq_simvq_cifar_small", ""),
        ("vq_em_cifar_small", "bottleneck=gumbel,num_blocks=1"),
        ("vq_em_cifar_small", "pixel_likelihood=logistic_mixture"))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--data_dir", default="/tmp/vqkeras_bench")
  parser.add_argument("--seed", type=int, default=1)
  parser.add_argument("--only", default="",
                      help="Comma-separated hparams names: train only the sets of these.")
  parser.add_argument("--json", help="Also write the rows here (JSON), and the bar chart "
                      "of bits/dim beside it (PNG) unless --plot names another file.")
  parser.add_argument("--plot", help="Draw held-out bits/dim per bottleneck here (PNG).")
  parser.add_argument("--from_json", help="Only draw the chart of the rows of an earlier "
                      "--json (no training).")
  args = parser.parse_args()
  if args.from_json:
    rows = json.loads(pathlib.Path(args.from_json).read_text())
    plot_rows(rows, args.plot or str(pathlib.Path(args.from_json).with_suffix(".png")))
    return
  only = set(filter(None, args.only.split(",")))
  unknown = only - {hparams for hparams, _ in SETS}
  if unknown:
    parser.error(f"--only names no set of this benchmark: {', '.join(sorted(unknown))}; "
                 f"choose among {', '.join(sorted({h for h, _ in SETS}))}.")
  rows = []
  for hparams, overrides in SETS:
    if only and hparams not in only:
      continue
    name = hparams + (f" {overrides}" if overrides else "")
    with tempfile.TemporaryDirectory() as model_dir:
      config = run_lib.RunConfig(problem="image_cifar10", hparams=hparams,
                                 hparams_overrides=overrides, data_dir=args.data_dir,
                                 raw_dir=str(SHARED / "cifar10"), model_dir=model_dir,
                                 seed=args.seed)
      run = run_lib.Run(config, tf.distribute.get_strategy(),
                        log=lambda line: print(f"  {name}: {line}", flush=True))
      trainer = trainer_lib.Trainer(run)
      start = time.perf_counter()
      trainer.train(args.steps, checkpoint_every=0, log_every=max(args.steps // 5, 1))
      seconds = time.perf_counter() - start
      metrics = trainer.evaluator.evaluate("validation")
      rows.append({"name": name, "metrics": metrics, "steps_per_second": args.steps / seconds})
  print(f"\n{args.steps} steps each, seed {args.seed}, held-out split of the CIFAR-10 records")
  print(f"{'hparams':58s} {'bpd total':>9s} {'bpd recon':>9s} {'bpd prior':>9s} {'mse':>7s} "
        f"{'perplexity':>12s} {'codes used':>10s} {'steps/s':>7s}")
  for row in rows:
    name, m, rate = row["name"], row["metrics"], row["steps_per_second"]
    layers = sorted(key[:-len("/perplexity")] for key in m if key.endswith("/perplexity"))
    perplexity = "/".join(f"{m[f'{layer}/perplexity']:.0f}" for layer in layers)
    used = "/".join(str(m[f"{layer}/codes_used"]) for layer in layers)
    print(f"{name:58s} {m['bits_per_dim_total']:9.3f} {m['bits_per_dim_reconstruction']:9.3f} "
          f"{m['bits_per_dim_prior']:9.3f} {m['mse']:7.4f} {perplexity:>12s} {used:>10s} "
          f"{rate:7.2f}")

  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
  plot = args.plot or (args.json and str(pathlib.Path(args.json).with_suffix(".png")))
  if plot and rows:
    plot_rows(rows, plot)


def plot_rows(rows, path):
  """The held-out bits/dim of each row, reconstruction and prior stacked."""
  figures.stacked_bits_per_dim(
      [(row["name"].replace("_cifar_small", "").replace("vq_", ""),
        row["metrics"]["bits_per_dim_reconstruction"], row["metrics"]["bits_per_dim_prior"])
       for row in rows], path)


if __name__ == "__main__":
  main()
