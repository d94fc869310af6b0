"""Every row of the table of bottleneck kinds builds a `Bottleneck` of the interface."""

import numpy as np
import pytest
import tensorflow as tf

from vqkeras import registry
from vqkeras.hparams.bottleneck import BOTTLENECKS
from vqkeras.hparams_lib import HParamsError
from vqkeras.layers import Bottleneck, Quantized
from vqkeras.models.bottleneck import bottleneck_from_hparams


@pytest.mark.parametrize("kind", sorted(BOTTLENECKS))
def test_every_kind_builds_a_bottleneck_with_codes_per_position(kind):
  """Codes `[..., C]` in [0, K), the same from encode as from the call outside training,
  a Quantized record for all, samples `[..., C, m]`, decode back to the depth."""
  num_blocks = 1 if kind == "gumbel" else 2
  # FSQ: two groups of the 4x3 grid's two channels; residual FSQ: two stages of it; the
  # rest: 8 channels (LFQ: two codes of 4 bits, K = 16).
  hparams = registry.hparams("vq_em_cifar_tiny").derive(
      bottleneck=kind, fsq_levels="4x3", num_blocks=num_blocks, codebook_size=16,
      latent_depth={"fsq": 4, "rfsq": 2}.get(kind, 8))
  layer = bottleneck_from_hparams(hparams, 16, hparams.num_blocks)
  x = tf.constant(np.random.default_rng(0).normal(size=(3, 5, hparams.latent_depth)),
                  tf.float32)
  out = layer(x, training=False, return_codes=True)
  assert isinstance(layer, Bottleneck) and isinstance(out, Quantized)
  codebook_size = hparams.bottleneck_kind.codebook_size(16, hparams.fsq_level_list)
  assert layer.codebook_size == codebook_size and layer.codes_per_position == num_blocks
  codes = out.codes.numpy()
  assert codes.shape == (3, 5, num_blocks) and codes.min() >= 0 and codes.max() < codebook_size
  np.testing.assert_array_equal(layer.encode(x).numpy(), codes)
  assert out.samples.shape[:3] == (3, 5, num_blocks)
  assert layer.decode(out.codes).shape == (3, 5, hparams.latent_depth)
  assert all(hasattr(part, "health") for part in layer.code_layers())


@pytest.mark.parametrize("overrides,message", [
    ("bottleneck=fsq,fsq_levels=4x3,num_blocks=2,latent_depth=8",
     "num_blocks x the number of fsq_levels = 4 under bottleneck=fsq"),
    ("bottleneck=gumbel,num_blocks=2", "1 under bottleneck=gumbel"),
    ("bottleneck=ema,num_blocks=3,latent_depth=8", "a divisor of the latent depth 8"),
    ("bottleneck=lfq,codebook_size=100", "a power of two under bottleneck=lfq"),
    ("bottleneck=bsq,codebook_size=32,num_blocks=2,latent_depth=8",
     "num_blocks x log2\\(codebook_size\\) = 10 under bottleneck=bsq"),
    ("bottleneck=rfsq,fsq_levels=4x3,latent_depth=3", "the number of fsq_levels = 2"),
    ("bottleneck=ema,groups=2", "under bottleneck=rvq"),
    ("bottleneck=ema,orthogonal_weight=0.1", "under bottleneck=gradient or simvq"),
    ("bottleneck=simvq,restart_dead_codes=true", "false under bottleneck=simvq"),
])
def test_a_kind_refuses_codes_that_do_not_fit_its_latents(overrides, message):
  with pytest.raises(HParamsError, match=message):
    registry.hparams("vq_em_cifar_tiny", overrides)


def test_translation_refuses_a_kind_with_several_codes_per_latent():
  with pytest.raises(HParamsError, match="rvq gives one per level"):
    registry.hparams("vq_em_tiny", "bottleneck=rvq")
  with pytest.raises(HParamsError, match="rfsq gives one per stage"):
    registry.hparams("vq_em_tiny", "bottleneck=rfsq")
