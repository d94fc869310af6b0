"""The benchmarks' figures (matplotlib, from the `[bench]` extra), drawn for the results page."""


def pyplot():
  """matplotlib's pyplot on the file-only Agg backend, or None (with a message) when
  matplotlib is not installed."""
  try:
    import matplotlib   # pylint: disable=import-outside-toplevel
  except ImportError:
    print("no plot: matplotlib is not installed (pip install -e \".[bench]\")")
    return None
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt   # pylint: disable=import-outside-toplevel
  return plt


def stacked_bits_per_dim(rows, path):
  """A bar per bottleneck of held-out bits/dim, reconstruction and prior stacked; rows:
  (label, reconstruction, prior). Written as a PNG to `path`."""
  plt = pyplot()
  if plt is None:
    return
  figure, axes = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5), dpi=120)
  labels = [label for label, _, _ in rows]
  reconstruction = [r for _, r, _ in rows]
  prior = [p for _, _, p in rows]
  positions = range(len(rows))
  axes.barh(positions, reconstruction, color="C0", label="reconstruction")
  axes.barh(positions, prior, left=reconstruction, color="C1", label="prior")
  for y, (r, p) in enumerate(zip(reconstruction, prior)):
    axes.annotate(f"{r + p:.3f}", (r + p, y), xytext=(3, -3), textcoords="offset points",
                  fontsize=8)
  axes.set_yticks(list(positions), labels, fontsize=8)
  axes.invert_yaxis()
  low = min(reconstruction) - 0.3
  axes.set_xlim(max(low, 0.0), max(r + p for r, p in zip(reconstruction, prior)) + 0.25)
  axes.set_xlabel("bits/dim, held-out CIFAR-10 (lower is better; the axis starts at "
                  f"{max(low, 0.0):.1f})")
  axes.legend(fontsize=8, loc="lower right")
  figure.tight_layout()
  figure.savefig(path)
  print(f"wrote {path}")


def speedups(rows, path, title):
  """A bar per layer of how many times faster ours is than the peer (log scale); rows:
  (label, peer seconds, our seconds). Written as a PNG to `path`."""
  plt = pyplot()
  if plt is None:
    return
  figure, axes = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5), dpi=120)
  ratios = [peer / ours for _, peer, ours in rows]
  axes.barh(range(len(rows)), ratios, color=["C2" if r >= 1 else "C3" for r in ratios])
  axes.axvline(1.0, color="black", linewidth=0.8)
  for y, ratio in enumerate(ratios):
    axes.annotate(f"{ratio:.1f}x", (ratio, y), xytext=(3, -3), textcoords="offset points",
                  fontsize=8)
  axes.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize=8)
  axes.invert_yaxis()
  axes.set_xscale("log")
  axes.set_xlabel("peer time / our time per training step (log scale; > 1: ours faster)")
  axes.set_title(title, fontsize=10)
  figure.tight_layout()
  figure.savefig(path)
  print(f"wrote {path}")
