"""Keras 3 layers of vqkeras."""

from vqkeras.layers.vector_quantizer import VectorQuantizer
