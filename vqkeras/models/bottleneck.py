"""The bottleneck layer a model's hyper-parameters ask for (hparams/bottleneck.py)."""

import keras

from vqkeras.layers import (Bottleneck, FiniteScalarQuantizer, GumbelSoftmaxQuantizer,
                            LookupFreeQuantizer, ResidualFiniteScalarQuantizer,
                            ResidualVectorQuantizer, VectorQuantizer)


def bottleneck_from_hparams(hparams, codebook_size, num_blocks=1, name="quantizer", depth=None):
  """The bottleneck of a `BottleneckHParams` record with `num_blocks` codes per position
  and K = `codebook_size` codes each (FSQ: K is the product of its levels): the builder
  below that its kind's row (`hparams/bottleneck.py`) names.

  depth: the depth of the vectors the model quantizes, if FSQ is to take them through
  a learned projection (`ProjectedBottleneck`) when they are not already one channel per
  level; None: the model makes them so (images: latent_depth).

  Every kind is a `vqkeras.layers.Bottleneck` (codes `[..., num_blocks]`, a `Quantized`
  record with `return_codes=True`) with `num_updates`, its training steps.
  """
  build = BUILDERS[hparams.bottleneck_kind.builder]
  return build(hparams, codebook_size, num_blocks, name, depth)


def vector_quantizer(hparams, codebook_size, num_blocks, name, depth):
  """A VectorQuantizer whose update rule is the kind's name."""
  del depth
  return VectorQuantizer(codebook_size, num_blocks=num_blocks, update=hparams.bottleneck,
                         num_samples=hparams.num_samples, temperature=hparams.temperature,
                         orthogonal_weight=hparams.orthogonal_weight, name=name,
                         **ema_arguments(hparams))


def simvq(hparams, codebook_size, num_blocks, name, depth):
  """A VectorQuantizer whose codes are a frozen basis times a learned map (gradient rule)."""
  del depth
  return VectorQuantizer(codebook_size, num_blocks=num_blocks, update="gradient",
                         codebook_transform="linear", beta=hparams.beta,
                         orthogonal_weight=hparams.orthogonal_weight, name=name)


def residual_vector_quantizer(hparams, codebook_size, num_blocks, name, depth):
  """num_blocks levels of EMA codebooks (in each of `groups` slices of channels)."""
  del depth
  return ResidualVectorQuantizer(codebook_size, num_blocks, update="ema", groups=hparams.groups,
                                 name=name, **ema_arguments(hparams))


def finite_scalar_quantizer(hparams, codebook_size, num_blocks, name, depth):
  """num_blocks groups of fsq_levels channels, through a projection from `depth`."""
  del codebook_size
  return projected(FiniteScalarQuantizer(hparams.fsq_level_list, num_codebooks=num_blocks,
                                         name=name), depth)


def residual_finite_scalar_quantizer(hparams, codebook_size, num_blocks, name, depth):
  """num_blocks stages of fsq_levels, through a projection from `depth`."""
  del codebook_size
  return projected(ResidualFiniteScalarQuantizer(hparams.fsq_level_list, num_blocks,
                                                 name=name), depth)


def lookup_free_quantizer(hparams, codebook_size, num_blocks, name, depth):
  """num_blocks codes of log2(K) sign bits (on the sphere under bsq), through a projection
  from `depth`."""
  bits = codebook_size.bit_length() - 1
  if codebook_size != 2 ** bits:
    raise ValueError(f"bottleneck={hparams.bottleneck} has 2^bits codes; got codebook size "
                     f"{codebook_size} (use a power of two).")
  return projected(LookupFreeQuantizer(bits, spherical=hparams.bottleneck == "bsq",
                                       entropy_weight=hparams.entropy_weight,
                                       beta=hparams.beta, num_codebooks=num_blocks,
                                       name=name), depth)


def projected(quantizer, depth):
  """The quantizer, behind a learned projection from `depth` channels when it takes
  another number (`ProjectedBottleneck`); depth None: the model makes them so."""
  if depth is None or depth == quantizer.depth:
    return quantizer
  return ProjectedBottleneck(quantizer, depth, name=f"projected_{quantizer.name}")


def gumbel_softmax_quantizer(hparams, codebook_size, num_blocks, name, depth):
  """One code per position, tau = temperature."""
  del depth
  if num_blocks != 1:
    raise ValueError(f"bottleneck=gumbel gives one code per position; got num_blocks="
                     f"{num_blocks} (set num_blocks=1).")
  return GumbelSoftmaxQuantizer(codebook_size, temperature=hparams.temperature, name=name)


def ema_arguments(hparams):
  """The codebook settings of the VQ kinds."""
  return dict(decay=hparams.decay, epsilon=hparams.epsilon, beta=hparams.beta,
              restart_dead_codes=hparams.restart_dead_codes)


# The builders the rows of hparams/bottleneck.py's table name.
BUILDERS = {"vector_quantizer": vector_quantizer,
            "simvq": simvq,
            "residual_vector_quantizer": residual_vector_quantizer,
            "finite_scalar_quantizer": finite_scalar_quantizer,
            "residual_finite_scalar_quantizer": residual_finite_scalar_quantizer,
            "lookup_free_quantizer": lookup_free_quantizer,
            "gumbel_softmax_quantizer": gumbel_softmax_quantizer}


class ProjectedBottleneck(Bottleneck):
  """A quantizer of few channels on vectors of `depth`: a learned projection down to
  the quantizer's depth before it and one back up after it (FSQ's d = len(levels)
  channels, LFQ's bits, on a model's hidden size; Mentzer et al. 2023 project the same
  way).

  Call, `encode` and `decode` are the quantizer's, on `[..., depth]` vectors.
  """

  def __init__(self, quantizer, depth, **kwargs):
    super().__init__(**kwargs)
    self.quantizer = quantizer
    self.project_in = keras.layers.Dense(quantizer.depth, name="project_in")
    self.project_out = keras.layers.Dense(depth, name="project_out")

  @property
  def codebook_size(self):
    """K of the quantizer."""
    return self.quantizer.codebook_size

  @property
  def codes_per_position(self):
    """C of the quantizer."""
    return self.quantizer.codes_per_position

  @property
  def num_updates(self):
    """The quantizer's training steps."""
    return self.quantizer.num_updates

  def code_layers(self):
    return self.quantizer.code_layers()

  def encode(self, inputs):
    """The quantizer's codes of the projected inputs `[..., depth]`."""
    return self.quantizer.encode(self.project_in(inputs))

  def decode(self, codes):
    """The code vectors projected back to `[..., depth]`."""
    return self.project_out(self.quantizer.decode(codes))

  def call(self, inputs, training=None, mask=None, return_codes=False):
    out = self.quantizer(self.project_in(inputs), training=training, mask=mask,
                         return_codes=True)
    quantized = self.project_out(out.quantized)
    return out._replace(quantized=quantized) if return_codes else quantized
