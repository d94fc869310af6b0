"""The bottleneck layer a model's hyper-parameters ask for (hparams/bottleneck.py)."""

from vqkeras.layers import (FiniteScalarQuantizer, GumbelSoftmaxQuantizer,
                            ResidualVectorQuantizer, VectorQuantizer)


def bottleneck_from_hparams(hparams, codebook_size, num_blocks=1, name="quantizer"):
  """The bottleneck of a `BottleneckHParams` record with `num_blocks` codes per position
  and K = `codebook_size` codes each (FSQ: K is the product of its levels).

  Every kind gives `codes_per_position`, `codebook_size`, `encode`, `decode` and, with
  `return_codes=True`, {"quantized", "codes" `[..., num_blocks]`} (VectorQuantizer also
  its "samples").
  """
  if hparams.bottleneck == "gumbel":
    if num_blocks != 1:
      raise ValueError(f"bottleneck=gumbel gives one code per position; got num_blocks="
                       f"{num_blocks} (set num_blocks=1).")
    return GumbelSoftmaxQuantizer(codebook_size, temperature=hparams.temperature, name=name)
  if hparams.bottleneck == "fsq":
    return FiniteScalarQuantizer(hparams.fsq_level_list, num_codebooks=num_blocks, name=name)
  vq_arguments = dict(decay=hparams.decay, epsilon=hparams.epsilon, beta=hparams.beta,
                      restart_dead_codes=hparams.restart_dead_codes)
  if hparams.bottleneck == "rvq":
    return ResidualVectorQuantizer(codebook_size, num_blocks, update="ema", name=name,
                                   **vq_arguments)
  return VectorQuantizer(codebook_size, num_blocks=num_blocks, update=hparams.bottleneck,
                         num_samples=hparams.num_samples, temperature=hparams.temperature,
                         name=name, **vq_arguments)
