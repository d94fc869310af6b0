"""Speed of one training step of our bottlenecks against their peers.

VectorQuantizer against Sonnet's VectorQuantizerEMA; ResidualVectorQuantizer (plain and
grouped), FiniteScalarQuantizer and LookupFreeQuantizer against vector-quantize-pytorch's
ResidualVQ, GroupedResidualVQ, FSQ and LFQ (when it is installed: a CPU wheel of torch
first, `pip install torch --index-url https://download.pytorch.org/whl/cpu`, then the
`[bench]` extra; torch runs on as many threads as TensorFlow).

One process, the same inputs, the steps interleaved round by round so that
machine noise hits every contender alike. A training step is the forward pass,
the gradient w.r.t. the input (decoder gradient plus commitment loss) and the
codebook update. Also timed: the distance matrix product [N, D] x [D, K] that no
VQ step can avoid. Then the memory of K = 2^16 codes at N = 16384 (a fresh
process, peak resident memory).

  pip install -e ".[bench]" && python bench/bench_vector_quantizer.py

Target (issue 20): residual VQ (Q = 8, K = 1024, D = 256, N = 8192, EMA levels) and
FSQ (levels 8,5,5,5, N = 8192) at least as fast as vector-quantize-pytorch's. Target
(issue 33): grouped residual VQ (G = 2, Q = 4) and LFQ with its entropy loss (2^10 and
2^16 codes) at least as fast as theirs.

Targets (issue 2): "ema" >= 1.8x faster than Sonnet at both sizes and <= 1.75x
(small) / 1.2x (large) the matrix product; "soft_em" with m = 10 <= 2x (small) and
1.3x (large) our "ema"; K = 2^16 at N = 16384 within 4 GB. The soft-EM sampler is
exact but fastest when the posterior is peaked, so a second soft-EM column ("flat")
times it with a temperature that flattens the posterior, the worst case.
"""

import argparse
import importlib.metadata
import os
import resource
import statistics
import subprocess
import sys
import time

import figures
from vqkeras import startup

startup.quiet()   # before TensorFlow loads

import numpy as np
import tensorflow as tf

SIZES = {"small": (8192, 64, 512), "large": (4096, 512, 4096)}


def our_step(update, depth, codebook_size, num_samples=10, temperature=1.0):
  from vqkeras.layers import VectorQuantizer
  layer = VectorQuantizer(codebook_size, update=update, num_samples=num_samples,
                          temperature=temperature, seed=0)
  layer.build((None, depth))

  @tf.function(jit_compile=False)
  def step(x, w):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(layer(x, training=True) * w) + tf.add_n(layer.losses)
    return tape.gradient(loss, x)
  step.layer = layer
  return step


def non_nearest_fraction(layer, x):
  """The share of soft-EM draws that are not the nearest code: the sampler's slow path."""
  out = layer(x, training=True, return_codes=True)
  return float(tf.reduce_mean(tf.cast(
      tf.not_equal(out.samples, out.codes[..., None]), tf.float32)))


def sonnet_step(depth, codebook_size):
  import sonnet as snt
  vq = snt.nets.VectorQuantizerEMA(depth, codebook_size, commitment_cost=0.25, decay=0.99)

  @tf.function(jit_compile=False)
  def step(x, w):
    with tf.GradientTape() as tape:
      tape.watch(x)
      out = vq(x, is_training=True)
      loss = tf.reduce_sum(out["quantize"] * w) + out["loss"]
    return tape.gradient(loss, x)
  return step


def matmul_step(codebook):
  @tf.function(jit_compile=False)
  def step(x, w):
    del w
    return tf.matmul(x, codebook, transpose_b=True)
  return step


def time_interleaved(steps, x, w, rounds, repeats):
  """Median seconds per call of each step, measured round-robin."""
  for step in steps.values():
    for _ in range(3):
      step(x, w).numpy()
  times = {name: [] for name in steps}
  for _ in range(rounds):
    for name, step in steps.items():
      start = time.perf_counter()
      for _ in range(repeats):
        result = step(x, w)
      result.numpy()
      times[name].append((time.perf_counter() - start) / repeats)
  return {name: statistics.median(t) for name, t in times.items()}


def speed(rounds):
  rng = np.random.default_rng(0)
  print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores; median of {rounds} rounds\n")
  header = (f"{'size':6s} {'N':>6s} {'D':>4s} {'K':>5s} | {'matmul ms':>9s} {'sonnet ms':>9s} "
            f"{'ema ms':>8s} {'soft_em ms':>10s} {'flat ms':>8s} | {'sonnet/ema':>10s} "
            f"{'ema/matmul':>10s} {'soft/ema':>8s} {'flat/ema':>8s}")
  print(header)
  print("-" * len(header))
  fractions = []
  for name, (n, depth, codebook_size) in SIZES.items():
    x = tf.constant(rng.normal(size=(n, depth)).astype(np.float32))
    w = tf.constant(rng.normal(size=(n, depth)).astype(np.float32))
    codebook = tf.constant(rng.normal(size=(codebook_size, depth)).astype(np.float32))
    steps = {"matmul": matmul_step(codebook), "sonnet": sonnet_step(depth, codebook_size),
             "ema": our_step("ema", depth, codebook_size),
             "soft_em": our_step("soft_em", depth, codebook_size),
             # A temperature that makes the posterior flat: the sampler's worst case.
             "flat": our_step("soft_em", depth, codebook_size, temperature=1e4)}
    repeats = 5 if name == "small" else 1
    t = time_interleaved(steps, x, w, rounds, repeats)
    fractions.append((name, non_nearest_fraction(steps["soft_em"].layer, x),
                      non_nearest_fraction(steps["flat"].layer, x)))
    print(f"{name:6s} {n:6d} {depth:4d} {codebook_size:5d} | {t['matmul'] * 1e3:9.2f} "
          f"{t['sonnet'] * 1e3:9.2f} {t['ema'] * 1e3:8.2f} {t['soft_em'] * 1e3:10.2f} "
          f"{t['flat'] * 1e3:8.2f} | {t['sonnet'] / t['ema']:9.2f}x "
          f"{t['ema'] / t['matmul']:9.2f}x {t['soft_em'] / t['ema']:7.2f}x "
          f"{t['flat'] / t['ema']:7.2f}x", flush=True)
  print("\nsoft_em: m = 10 draws per position; share of draws that are not the nearest code "
        "(the exact sampler's slow path) after the timed steps:")
  for name, default, flat in fractions:
    print(f"  {name:6s} temperature 1: {default:6.1%}   flat (temperature 1e4): {flat:6.1%}")


def our_residual_step(depth, codebook_size, num_quantizers):
  from vqkeras.layers import ResidualVectorQuantizer
  layer = ResidualVectorQuantizer(codebook_size, num_quantizers, update="ema", decay=0.99,
                                  seed=0)
  layer.build((None, depth))
  return loss_gradient_step(layer)


def our_fsq_step(levels):
  from vqkeras.layers import FiniteScalarQuantizer
  return loss_gradient_step(FiniteScalarQuantizer(levels))


def loss_gradient_step(layer):
  """The gradient of sum(layer(x) * w) + the layer's losses w.r.t. x, in training."""
  @tf.function(jit_compile=False)
  def step(x, w):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(layer(x, training=True) * w)
      if layer.losses:
        loss += tf.add_n(layer.losses)
    return tape.gradient(loss, x)
  return step


def torch_step(module, x, w, returns_loss):
  """The same step for a vector-quantize-pytorch module on copies of x and w."""
  import torch
  x = torch.tensor(x.numpy()[None], requires_grad=True)
  w = torch.tensor(w.numpy()[None])
  module.train()

  def step(_x, _w):
    x.grad = None
    out = module(x)
    loss = (out[0] * w).sum() + (out[2].sum() if returns_loss else 0.0)
    loss.backward()
    return x.grad
  return step


def our_grouped_residual_step(depth, codebook_size, num_quantizers, groups):
  from vqkeras.layers import ResidualVectorQuantizer
  layer = ResidualVectorQuantizer(codebook_size, num_quantizers, update="ema", decay=0.99,
                                  groups=groups, seed=0)
  layer.build((None, depth))
  return loss_gradient_step(layer)


def our_lfq_step(num_bits):
  from vqkeras.layers import LookupFreeQuantizer
  return loss_gradient_step(LookupFreeQuantizer(num_bits, entropy_weight=0.1))


def peer_row(label, t, floor=True, rows=None):
  """One row of the table against vector-quantize-pytorch (kept in `rows` for the plot)."""
  if rows is not None:
    rows.append((label, t["peer"], t["ours"]))
  floor_ms = f"{t['floor'] * 1e3:8.2f}" if floor else f"{'-':>8s}"
  ratio = f"{t['ours'] / t['floor']:9.2f}x" if floor else f"{'-':>10s}"
  print(f"{label:34s} | {floor_ms} {t['peer'] * 1e3:8.2f} {t['ours'] * 1e3:8.2f} | "
        f"{t['peer'] / t['ours']:8.2f}x {ratio}", flush=True)


def peers(rounds, plot=None):
  """Residual VQ (plain and grouped), FSQ and LFQ against vector-quantize-pytorch, and the
  matmul floor of the residual ones; with `plot`, the speed-ups drawn there (PNG)."""
  try:
    import torch
    from vector_quantize_pytorch import FSQ, LFQ, GroupedResidualVQ, ResidualVQ
  except ImportError:
    print("\nvector-quantize-pytorch is not installed: its rows are skipped (pip install "
          "torch --index-url https://download.pytorch.org/whl/cpu, then pip install -e "
          "\".[bench]\").")
    return
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  rng = np.random.default_rng(0)

  def inputs(n, depth):
    return (tf.constant(rng.normal(size=(n, depth)).astype(np.float32)),
            tf.constant(rng.normal(size=(n, depth)).astype(np.float32)))

  rows = []
  n, depth, codebook_size, levels_q = 8192, 256, 1024, 8
  print(f"\nAgainst vector-quantize-pytorch (torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads), N = {n} unless given; median of {rounds} rounds:")
  header = (f"{'layer':34s} | {'floor ms':>8s} {'peer ms':>8s} {'ours ms':>8s} | "
            f"{'peer/ours':>9s} {'ours/floor':>10s}")
  print(header)
  print("-" * len(header))
  x, w = inputs(n, depth)
  floor = matmul_step(tf.constant(rng.normal(size=(codebook_size, depth)).astype(np.float32)))
  steps = {
      "floor": lambda x, w: [floor(x, w) for _ in range(levels_q)][-1],
      "peer": torch_step(ResidualVQ(dim=depth, num_quantizers=levels_q,
                                    codebook_size=codebook_size, decay=0.99), x, w, True),
      "ours": our_residual_step(depth, codebook_size, levels_q)}
  peer_row(f"residual VQ Q={levels_q} K={codebook_size} D={depth}",
           time_interleaved(steps, x, w, rounds, 1), rows=rows)
  groups, grouped_q = 2, 4
  half_floor = matmul_step(tf.constant(
      rng.normal(size=(codebook_size, depth // groups)).astype(np.float32)))
  steps = {
      "floor": lambda x, w: [half_floor(x[:, :depth // groups], w)
                             for _ in range(groups * grouped_q)][-1],
      "peer": torch_step(GroupedResidualVQ(dim=depth, groups=groups, num_quantizers=grouped_q,
                                           codebook_size=codebook_size, decay=0.99),
                         x, w, True),
      "ours": our_grouped_residual_step(depth, codebook_size, grouped_q, groups)}
  peer_row(f"grouped RVQ G={groups} Q={grouped_q} K={codebook_size}",
           time_interleaved(steps, x, w, rounds, 1), rows=rows)
  levels = [8, 5, 5, 5]
  x, w = inputs(n, len(levels))
  steps = {"peer": torch_step(FSQ(levels=levels), x, w, False), "ours": our_fsq_step(levels)}
  peer_row(f"FSQ levels {levels}", time_interleaved(steps, x, w, rounds, 5), floor=False,
           rows=rows)
  # The peer's entropy loss holds [N, 2^d] distances and probabilities: N is smaller at
  # 2^16 codes so that it fits beside the rest.
  for bits, lfq_n in ((10, n), (16, 1024)):
    x, w = inputs(lfq_n, bits)
    steps = {"peer": torch_step(LFQ(dim=bits, codebook_size=2 ** bits,
                                    entropy_loss_weight=0.1, diversity_gamma=1.0), x, w, True),
             "ours": our_lfq_step(bits)}
    peer_row(f"LFQ 2^{bits} codes, entropy, N={lfq_n}",
             time_interleaved(steps, x, w, rounds, 2), floor=False, rows=rows)
  print("(floor: the distance products [N, D] x [D, K] that no residual VQ step avoids)")
  if plot:
    figures.speedups(rows, plot, f"Ours against vector-quantize-pytorch "
                     f"{importlib.metadata.version('vector-quantize-pytorch')}, one training step")


def memory_child(kind, n, depth, codebook_size):
  """Runs a few steps of one layer and prints the peak resident memory in GB: a
  VectorQuantizer with update `kind`, or `lfq` (a LookupFreeQuantizer of `depth` bits) or
  `fsq` (a FiniteScalarQuantizer of `depth` channels of 4 levels, K = 4^depth)."""
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(n, depth)).astype(np.float32))
  w = tf.constant(rng.normal(size=(n, depth)).astype(np.float32))
  if kind == "lfq":
    from vqkeras.layers import LookupFreeQuantizer
    step = loss_gradient_step(LookupFreeQuantizer(depth))
  elif kind == "fsq":
    step = our_fsq_step([4] * depth)
  else:
    step = our_step(kind, depth, codebook_size)
  for _ in range(2):
    step(x, w).numpy()
  print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)


def child_gigabytes(kind, n, depth, codebook_size):
  """The peak resident memory of `memory_child` in a fresh process."""
  out = subprocess.run([sys.executable, __file__, "--memory_child", kind, str(n), str(depth),
                        str(codebook_size)], capture_output=True, text=True, check=True)
  return float(out.stdout.strip().splitlines()[-1])


def memory():
  n, depth, codebook_size = 16384, 64, 2**16
  print(f"\nPeak resident memory of the whole process (TensorFlow included), "
        f"N={n} D={depth} K={codebook_size}:")
  for update in ("ema", "soft_em"):
    gigabytes = child_gigabytes(update, n, depth, codebook_size)
    print(f"  {update:8s} {gigabytes:5.2f} GB  (target: within 4 GB; the full distance "
          f"matrix alone would be {n * codebook_size * 4 / 2**30:.1f} GB)")
  print(f"Large implicit codebooks, N={n}, a training step with their losses and health "
        f"(target: under 1 GB):")
  for kind, bits, label in (("lfq", 18, "LFQ, 2^18 codes, exact entropy"),
                            ("fsq", 16, "FSQ, levels [4] * 16 = 2^32 codes")):
    print(f"  {label:34s} {child_gigabytes(kind, n, bits, 0):5.2f} GB")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=15)
  parser.add_argument("--memory_child", nargs=4)
  parser.add_argument("--only_memory", action="store_true", help="Only the memory rows.")
  parser.add_argument("--only_peers", action="store_true",
                      help="Only the rows against vector-quantize-pytorch.")
  parser.add_argument("--plot", help="Draw the speed-ups against vector-quantize-pytorch "
                      "here (PNG).")
  args = parser.parse_args()
  if args.memory_child:
    kind, n, depth, codebook_size = args.memory_child
    memory_child(kind, int(n), int(depth), int(codebook_size))
    return
  if args.only_memory:
    memory()
    return
  if not args.only_peers:
    speed(args.rounds)
    memory()
  peers(args.rounds, args.plot)


if __name__ == "__main__":
  main()
