"""Keras 3 layers of vqkeras."""

from vqkeras.layers.batch_standardization import BatchStandardization
from vqkeras.layers.bottleneck import Bottleneck, Quantized
from vqkeras.layers.finite_scalar_quantizer import FiniteScalarQuantizer
from vqkeras.layers.gumbel_softmax_quantizer import GumbelSoftmaxQuantizer
from vqkeras.layers.lookup_free_quantizer import LookupFreeQuantizer
from vqkeras.layers.residual_finite_scalar_quantizer import ResidualFiniteScalarQuantizer
from vqkeras.layers.vector_quantizer import VectorQuantizer
from vqkeras.layers.residual_vector_quantizer import ResidualVectorQuantizer
