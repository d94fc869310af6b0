"""The bottleneck layer a model's hyper-parameters ask for (hparams/bottleneck.py)."""

from vqkeras.layers import VectorQuantizer


def bottleneck_from_hparams(hparams, codebook_size, num_blocks=1, name="quantizer"):
  """The `VectorQuantizer` of a `BottleneckHParams` record with K = `codebook_size` codes per block."""
  return VectorQuantizer(codebook_size, num_blocks=num_blocks, update=hparams.bottleneck,
                         num_samples=hparams.num_samples, decay=hparams.decay,
                         epsilon=hparams.epsilon, beta=hparams.beta,
                         temperature=hparams.temperature,
                         restart_dead_codes=hparams.restart_dead_codes, name=name)
