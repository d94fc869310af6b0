"""vqkeras: discrete latent variables for Keras 3 on TensorFlow.

Implements VQ-VAE (van den Oord et al. 2017) and the hard- and soft-EM training of
vector-quantized autoencoders (Roy et al. 2018). `vqkeras.layers` holds the
bottleneck; `vqkeras.problems` and `vqkeras.hparams` the datasets and
hyper-parameter sets (installed from the top-level `problems/` and `hparams/`).
"""

__version__ = "0.1.0"

from vqkeras import layers
from vqkeras import quantization
