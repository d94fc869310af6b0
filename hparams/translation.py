"""Hyper-parameters of the English-German translation models.

The autoregressive Transformer (baseline and distillation teacher) and the
non-autoregressive latent Transformer with a discrete bottleneck of Roy et al.
2018 (docs/papers.md section 2): hidden 512, filter 4096, 6 layers, 8 heads, target
compressed 2^3 times into 12-bit codes, Adam(0.9, 0.997, 1e-9) with warm-up.
"""

import dataclasses

from vqkeras import registry
from vqkeras.hparams.bottleneck import BOTTLENECKS, BottleneckHParams
from vqkeras.hparams_lib import HParams, check


@dataclasses.dataclass(frozen=True)
class TransformerHParams(HParams):
  """Vocabulary, batching, Transformer sizes, optimization and decoding."""
  # Data.
  vocab_size: int = 32000            # shared SentencePiece vocabulary of source and target
  max_length: int = 256              # longer training pairs (in tokens) are dropped
  batch_size: int = 4096             # tokens per step, global over all replicas (T2T)
  # Transformer.
  hidden_size: int = 512
  filter_size: int = 2048
  num_layers: int = 6
  num_heads: int = 8
  dropout: float = 0.1
  label_smoothing: float = 0.1
  # Optimization: Adam with linear warm-up, then inverse square-root decay.
  learning_rate: float = 2.0         # scaled by hidden_size^-0.5 (the Transformer schedule)
  warmup_steps: int = 8000
  adam_beta1: float = 0.9
  adam_beta2: float = 0.997
  adam_epsilon: float = 1e-9
  train_steps: int = 250000
  # Decoding.
  beam_size: int = 4
  length_penalty: float = 0.6        # alpha of ((5 + length) / 6)^alpha

  def validate(self):
    super().validate()
    check(self.hidden_size % self.num_heads == 0, "num_heads", self.num_heads,
          f"a divisor of hidden_size={self.hidden_size}")
    for name in ("vocab_size", "max_length", "batch_size", "num_layers", "train_steps",
                 "beam_size"):
      check(getattr(self, name) >= 1, name, getattr(self, name), "a positive integer")
    check(self.batch_size >= self.max_length, "batch_size", self.batch_size,
          f"at least max_length={self.max_length} tokens, so that every pair fits a batch")
    check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "a float in [0, 1)")

  def decoding_defaults(self):
    return {"beam_size": self.beam_size, "length_penalty": self.length_penalty}


@dataclasses.dataclass(frozen=True)
class LatentHParams(TransformerHParams, BottleneckHParams):
  """What the latent translation models share: one code per latent (K = 2^bottleneck_bits),
  the layers of the latent predictor and of the parallel decoder, glancing.

  The bottleneck's update rule and settings are BottleneckHParams' fields.
  """
  bottleneck_bits: int = 12          # K = 2^bits codes (fsq: prod(fsq_levels))
  # alpha of the candidates' score / ((5 + tokens) / 6)^alpha (num_candidates > 1): a score
  # summed over codes and tokens favours short translations. On Multi30k 3.0 chose better
  # than the Transformer's 0.6 for both latent models, own and teacher scores, k = 2 and 4
  # (+0.2 to +0.6 BLEU on the validation set; round 4 of docs/results.md decodes with it).
  length_penalty: float = 3.0
  # From T2T's initialization, far from the unit-scale latents, one code took every latent.
  restart_dead_codes: bool = True
  # Layers of the parallel target decoder (0: num_layers, as the encoder); it runs once per
  # translation on every target position.
  decoder_layers: int = 0
  # Layers of the latent predictor (0: num_layers).
  predictor_layers: int = 0
  # Glancing (GLAT, Qian et al. 2021): ceil(ratio x wrong) random positions of a first
  # pass's predictions are given the target's values; the ratio falls linearly from
  # glancing_ratio to glancing_final_ratio over the joint training steps.
  glancing_ratio: float = 0.0
  glancing_final_ratio: float = 0.3

  def validate(self):
    super().validate()
    for name in ("glancing_ratio", "glancing_final_ratio"):
      check(0.0 <= getattr(self, name) <= 1.0, name, getattr(self, name), "a float in [0, 1]")
    for name in ("decoder_layers", "predictor_layers"):
      check(getattr(self, name) >= 0, name, getattr(self, name),
            "an integer >= 0 (0: num_layers)")
    check(1 <= self.bottleneck_bits <= 20, "bottleneck_bits", self.bottleneck_bits,
          "an integer in [1, 20]")
    refusal = self.bottleneck_kind.not_for_translation
    taken = [name for name, kind in BOTTLENECKS.items() if kind.not_for_translation is None]
    check(refusal is None, "bottleneck", self.bottleneck, f"one of {', '.join(taken)} "
          f"({refusal})")

  @property
  def codebook_size(self):
    """K = 2^bottleneck_bits; FSQ: the product of fsq_levels."""
    return self.bottleneck_kind.codebook_size(2 ** self.bottleneck_bits, self.fsq_level_list)


@dataclasses.dataclass(frozen=True)
class LatentTransformerHParams(LatentHParams):
  """The paper's model: compression, codebook size, latent predictor, schedule."""
  ADDED_FIELDS = {**TransformerHParams.ADDED_FIELDS, **BottleneckHParams.ADDED_FIELDS,
                  "latent_normalization": "layer", "predictor_only_steps": 0,
                  "decoder_layers": 0, "decoder_only_steps": 0, "predictor_layers": 0,
                  "glancing_ratio": 0.0, "glancing_final_ratio": 0.3,
                  "predictor_gradient_weight": 0.0}
  filter_size: int = 4096
  compression_steps: int = 3         # n_c: latents are 2^n_c times shorter than the target
  decay: float = 0.999               # EMA decay lambda of Roy et al.
  latent_normalization: str = "batch"   # "batch" or "layer" (LatentTransformer.normalize_latents)
  mask_startup_steps: int = 50000    # the decoder moves from gold targets to latents
  latent_beam_size: int = 1          # 1: greedy decoding of the codes
  # The last predictor_only_steps of train_steps train the latent predictor alone, on
  # the nearest codes of the frozen autoencoder (LatentTransformer.training_stage).
  predictor_only_steps: int = 0
  # The last decoder_only_steps (after the predictor's) train the parallel decoder alone
  # on the latent predictor's greedy codes, the codes translation gives it.
  decoder_only_steps: int = 0
  # Glancing here (CNAT, Bao et al. 2021) is at the codes: in joint training the parallel
  # decoder reads the latent predictor's own argmax codes with ceil(ratio x wrong) random
  # latents reset to the target's codes; glancing_ratio 0: the target's own codes (the paper).
  # Codes the latent predictor can predict: > 0 adds this weight times the predictor's
  # cross-entropy of each latent's code posterior, differentiable in the latents
  # (LatentTransformer.predictability_loss); 0: the predictor's loss stops at the codes,
  # as in the paper. VQ bottlenecks (gradient, ema, soft_em) only.
  predictor_gradient_weight: float = 0.0

  def validate(self):
    super().validate()
    check(self.predictor_gradient_weight >= 0.0, "predictor_gradient_weight",
          self.predictor_gradient_weight, "a float >= 0 (0: the paper's stopped gradient)")
    check(self.predictor_gradient_weight == 0.0 or
          self.bottleneck_kind.builder == "vector_quantizer", "predictor_gradient_weight",
          self.predictor_gradient_weight, f"0 under bottleneck={self.bottleneck}: the code "
          f"posterior it differentiates is a VQ codebook's (gradient, ema, soft_em)")
    check(self.latent_normalization in ("batch", "layer"), "latent_normalization",
          self.latent_normalization, "batch or layer")
    check(self.compression_steps >= 1, "compression_steps", self.compression_steps,
          "a positive integer")
    for name in ("predictor_only_steps", "decoder_only_steps"):
      check(0 <= getattr(self, name) < self.train_steps, name, getattr(self, name),
            f"an integer in [0, train_steps={self.train_steps})")

  def decoding_defaults(self):
    """A latent model searches its codes with latent_beam_size."""
    return dict(super().decoding_defaults(), beam_size=self.latent_beam_size)


@dataclasses.dataclass(frozen=True)
class LatentGlatHParams(LatentHParams):
  """latent-GLAT (Bao et al. 2022): a code per target token (a word class), the length
  predicted, the codes and then the tokens each in one parallel pass, both trained by
  glancing (vqkeras.models.latent_glat)."""
  bottleneck: str = "ema"            # latent-GLAT's EMA codebook
  bottleneck_bits: int = 6           # K = 64 (CNAT and latent-GLAT)
  glancing_ratio: float = 0.5
  # Offsets of the target length from the source length the length classifier tells
  # apart: -max_length_offset..max_length_offset (wider offsets are clipped).
  max_length_offset: int = 32
  length_loss_weight: float = 0.1    # of the length cross-entropy (GLAT's 0.1), per token

  def validate(self):
    super().validate()
    check(self.max_length_offset >= 1, "max_length_offset", self.max_length_offset,
          "a positive integer")
    check(self.length_loss_weight >= 0.0, "length_loss_weight", self.length_loss_weight,
          "a float >= 0")

  def decoding_defaults(self):
    """Every token at once: no search (candidates are lengths: num_candidates)."""
    return dict(super().decoding_defaults(), beam_size=1)


# CPU sizes for Multi30k: the same changes serve every model of the family.
# A step of the small Transformer on 4096 tokens takes about 2 s on two CPU cores, so
# 1200 steps (about 13 epochs of Multi30k) take about 40 minutes. The warm-up is 20x
# shorter than base's, so the constant is 5x smaller to keep the peak rate near T2T's
# (0.4 * 256^-0.5 * 400^-0.5 = 1.25e-3).
SMALL = dict(vocab_size=8000, max_length=64, batch_size=4096, hidden_size=256,
             filter_size=1024, num_layers=3, num_heads=4, learning_rate=0.4,
             warmup_steps=400, train_steps=1200)
TINY = dict(vocab_size=1000, max_length=64, batch_size=1024, hidden_size=64, filter_size=128,
            num_layers=1, num_heads=2, dropout=0.0, warmup_steps=50, train_steps=200)
# mask_startup_steps=0: the decoder reads the latents from the first step (a gold-target
# startup lets the latents collapse onto one code).
# 256 codes: on Multi30k they translated 2.4 BLEU better than 1024 from predicted codes
# (25.6 against 23.2 at the same budget; docs/results.md).
# The budget: 6000 joint steps (about 100 minutes on two CPU cores), then the average of
# the last checkpoints (bin/average_checkpoints). On Multi30k 1200, 3600 and 5000 joint
# steps translated greedily at 26.7, 29.0 and 29.8 BLEU, 6000 at 29.7; the average of the
# checkpoints of steps 5000 and 6000 at 30.0, of 5000, 5500 and 6000 at 29.9. A stage of the
# latent predictor alone after them lost 0.2-0.6 BLEU (at 1200 steps it gained;
# docs/results.md, round 5).
LATENT_SMALL = dict(SMALL, bottleneck_bits=8, mask_startup_steps=0, train_steps=6000)
LATENT_TINY = dict(TINY, bottleneck_bits=6, num_samples=4, mask_startup_steps=50)


@registry.register_hparams
def transformer_base():
  """The Transformer base of Vaswani et al. 2017: the autoregressive baseline and teacher."""
  return TransformerHParams()


@registry.register_hparams
def transformer_small():
  """transformer_base at CPU size (SMALL): Multi30k in under an hour on two cores."""
  return transformer_base().derive(**SMALL)


@registry.register_hparams
def transformer_tiny():
  """transformer_base at test size (TINY): about a minute."""
  return transformer_base().derive(**TINY)


@registry.register_hparams
def vq_em():
  """Soft EM with n_s = 10: the paper's best non-autoregressive model."""
  return LatentTransformerHParams()


@registry.register_hparams
def vq_ema():
  """Hard EM (the EMA codebook)."""
  return vq_em().derive(bottleneck="ema")


@registry.register_hparams
def vq_gradient():
  """The VQ-VAE codebook loss."""
  return vq_em().derive(bottleneck="gradient")


@registry.register_hparams
def vq_em_small():
  """vq_em at CPU size (LATENT_SMALL: 256 codes, latents from the first step, 6000 joint
  steps)."""
  return vq_em().derive(**LATENT_SMALL)


@registry.register_hparams
def vq_ema_small():
  """vq_ema at CPU size (LATENT_SMALL)."""
  return vq_ema().derive(**LATENT_SMALL)


@registry.register_hparams
def vq_gradient_small():
  """vq_gradient at CPU size (LATENT_SMALL)."""
  return vq_gradient().derive(**LATENT_SMALL)


@registry.register_hparams
def vq_em_tiny():
  """vq_em at test size (LATENT_TINY)."""
  return vq_em().derive(**LATENT_TINY)


@registry.register_hparams
def vq_ema_tiny():
  """vq_ema at test size (LATENT_TINY)."""
  return vq_ema().derive(**LATENT_TINY)


@registry.register_hparams
def vq_gradient_tiny():
  """vq_gradient at test size (LATENT_TINY)."""
  return vq_gradient().derive(**LATENT_TINY)


@registry.register_hparams
def vq_glat():
  """latent-GLAT at the Transformer base sizes: K = 64 EMA codes of the target tokens,
  glancing 0.5 to 0.3 (Bao et al. 2022)."""
  return LatentGlatHParams()


@registry.register_hparams
def vq_glat_small():
  """vq_glat at CPU size (SMALL), 3600 steps: on Multi30k three times SMALL's 1200 took it
  from 24.9 to 28.7 BLEU (docs/results.md, round 3)."""
  return vq_glat().derive(**dict(SMALL, train_steps=3600))


@registry.register_hparams
def vq_glat_tiny():
  """vq_glat at test size (TINY, 16 codes)."""
  return vq_glat().derive(**TINY, bottleneck_bits=4)
