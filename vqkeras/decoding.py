"""Decoding settings: how the tools translate (beam, candidates) and sample images
(bin/decode, bin/eval and bin/export --decode_hparams)."""

import dataclasses

from vqkeras.hparams_lib import HParams, check

# How a latent model finds its candidates' codes (LatentTransformer.translate_candidates).
CANDIDATE_CODES = ("beam", "first_code")


@dataclasses.dataclass(frozen=True)
class DecodeHParams(HParams):
  """Decoding options (bin/decode and bin/eval --decode_hparams)."""
  beam_size: int = 1            # tokens (Transformer) or codes (latent model); 1: greedy
  length_penalty: float = 0.6   # alpha of ((5 + length) / 6)^alpha in the beam score
  batch_size: int = 64          # sentences per batch
  num_candidates: int = 1       # latent model: translations decoded at once, the best kept
  # latent model: the candidates' codes, "beam" (the k best of a latent beam of
  # max(beam_size, k)) or "first_code" (the k likeliest first codes, each finished greedily)
  candidate_codes: str = "beam"
  # sources padded to a multiple of 8 tokens, every parallel pass (the encoder, a latent
  # model's decoder) compiled by XLA, one program per padded shape and batch size; the
  # searches stay graph loops (translate.Search's xla; the tokens do not change)
  xla: bool = False
  temperature: float = 1.0      # of the prior's softmax when sampling image codes
  seed: int = 0                 # of image sampling

  def validate(self):
    check(self.beam_size >= 1, "beam_size", self.beam_size, "a positive integer")
    check(self.batch_size >= 1, "batch_size", self.batch_size, "a positive integer")
    check(self.num_candidates >= 1, "num_candidates", self.num_candidates, "a positive integer")
    check(self.candidate_codes in CANDIDATE_CODES, "candidate_codes", self.candidate_codes,
          " or ".join(CANDIDATE_CODES))
    check(self.length_penalty >= 0, "length_penalty", self.length_penalty, "a float >= 0")
    check(self.temperature > 0, "temperature", self.temperature, "a float > 0")


def decode_hparams(model_hparams, overrides=""):
  """Decoding options: the model's own (`model_hparams.decoding_defaults()`: beam_size
  and length_penalty of a translation model), then `overrides`."""
  return DecodeHParams(**model_hparams.decoding_defaults()).override(overrides)
