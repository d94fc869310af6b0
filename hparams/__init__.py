"""Hyper-parameter sets, one module per model family; installed as `vqkeras.hparams`.

Importing this package registers every set (see `vqkeras.registry`).
"""

from vqkeras.hparams import image_vqvae
from vqkeras.hparams import translation
