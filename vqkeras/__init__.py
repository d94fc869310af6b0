"""vqkeras: discrete latent variables for Keras 3 on TensorFlow.

Implements VQ-VAE (van den Oord et al. 2017) and the hard- and soft-EM training of
vector-quantized autoencoders (Roy et al. 2018). `vqkeras.layers` holds the
bottleneck; `vqkeras.problems` and `vqkeras.hparams` the datasets and
hyper-parameter sets (installed from the top-level `problems/` and `hparams/`).
"""

import importlib

__version__ = "0.1.0"

# Loaded on first use (`vqkeras.layers`, or `from vqkeras import layers`), so that
# `vqkeras.startup` runs before TensorFlow loads.
_SUBMODULES = ("layers", "quantization")


def __getattr__(name):
  if name in _SUBMODULES:
    return importlib.import_module(f"vqkeras.{name}")
  raise AttributeError(f"module 'vqkeras' has no attribute {name!r}")
