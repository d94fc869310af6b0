"""Residual vector quantization (SoundStream, Zeghidour et al. 2021; RQ-VAE, Lee et al. 2022).

Q quantizers in a row, each quantizing what the ones before it left:

  r_1 = z_e,   c_i = nearest code of r_i in codebook i,   r_{i+1} = r_i - e_i(c_i),
  z_q = sum_i e_i(c_i)

Each level is a `VectorQuantizer` with every update rule and guarantee of it (its
codebook statistics summed over replicas, masks, health, float32 statistics), and
the encoder sees the sum through one straight-through estimator (or the rotation trick).
"""

import functools
import inspect

import keras
import tensorflow as tf

from vqkeras import quantization
from vqkeras.layers import checks
from vqkeras.layers.bottleneck import Bottleneck
from vqkeras.layers.vector_quantizer import VectorQuantizer

# Every VectorQuantizer argument a residual quantizer passes to its levels: all but the
# codebook size, the seed (level i: seed + i) and the rotation trick (of the sum, below).
LEVEL_ARGUMENTS = tuple(
    name for name, parameter in inspect.signature(VectorQuantizer.__init__).parameters.items()
    if parameter.kind == parameter.POSITIONAL_OR_KEYWORD and
    name not in ("self", "codebook_size", "seed", "rotation_trick"))


@keras.saving.register_keras_serializable(package="vqkeras")
class ResidualVectorQuantizer(Bottleneck):
  """Q levels of vector quantization of the residual, codes `[..., Q]`.

  Args:
    codebook_size: K, the codes of each level.
    num_quantizers: Q, the levels, at least 1.
    quantizer_dropout: the probability that a training example uses fewer levels:
      such an example uses the first n levels, n uniform in [1, Q] (SoundStream's
      quantizer dropout, so that fewer codes still decode); the dropped levels leave
      it out of their statistics and losses. Draws differ per replica, as Keras'
      dropout's do.
    shared_codebook: one codebook for every level (one `VectorQuantizer` called Q
      times: its EMA takes a step per level); else one per level.
    rotation_trick: if True, gradients reach the inputs through the rotation and
      rescaling that take each input to the sum of its code vectors
      (`quantization.rotation_trick`) instead of straight through.
    seed: int seed of the levels (level i: seed + i) and of the quantizer dropout.
    **level_arguments: `VectorQuantizer` arguments for every level (update,
      num_samples, decay, epsilon, beta, num_blocks, temperature, usage_window,
      restart_dead_codes, codebook_initializer, distance, codebook_dim,
      max_distance_elements), and `keras.layers.Layer` arguments (name, dtype, ...).
      With num_blocks = B a level has B codes per position, in the layer's codes level
      after level: `[..., Q * B]`.

  Call arguments:
    inputs: float `[..., D]`.
    training: bool; as for `VectorQuantizer` (codebook updates, soft-EM samples), and
      quantizer dropout.
    mask: optional bool `[...]`; False positions are left out of every level's
      statistics and losses.
    num_levels: quantize with the first n levels only (default all, Q).
    return_codes: if True, return a `Quantized` record: quantized, codes int32
      `[..., n * B]`, samples: the codes `[..., n * B, 1]`.

  Returns:
    z_q with a straight-through (or rotation-trick) gradient to the inputs, same shape;
    or the record above.
  """

  def __init__(self, codebook_size, num_quantizers, quantizer_dropout=0.0,
               shared_codebook=False, rotation_trick=False, seed=None, **kwargs):
    level_arguments = {name: kwargs.pop(name) for name in LEVEL_ARGUMENTS if name in kwargs}
    super().__init__(**kwargs)
    _check(isinstance(num_quantizers, int) and num_quantizers >= 1, "num_quantizers",
           num_quantizers, "an integer of at least 1")
    _check(0.0 <= quantizer_dropout <= 1.0, "quantizer_dropout", quantizer_dropout,
           "a probability in [0, 1]")
    self.codebook_size = codebook_size
    self.num_quantizers = num_quantizers
    self.quantizer_dropout = float(quantizer_dropout)
    self.shared_codebook = bool(shared_codebook)
    self.rotation_trick = bool(rotation_trick)
    self.seed = checks.seed_or_random(seed)
    self.level_arguments = level_arguments
    count = 1 if self.shared_codebook else num_quantizers
    # The levels compute in float32 whatever the policy: the residuals and the sum stay
    # exact; the output is cast to the compute dtype once.
    self.levels = [VectorQuantizer(codebook_size, seed=self.seed + i, name=f"level_{i}",
                                   dtype="float32", **level_arguments)
                   for i in range(count)]

  @property
  def codes_per_position(self):
    """Q * B: the codes of a position (B per level)."""
    return self.num_quantizers * self.levels[0].num_blocks

  def code_layers(self):
    """The levels' quantizers, which hold the health state."""
    return list(self.levels)

  @property
  def num_updates(self):
    """Training steps of the first level."""
    return self.levels[0].num_updates

  def level(self, i):
    """The quantizer of level i."""
    return self.levels[0 if self.shared_codebook else i]

  def build(self, input_shape):
    for level in self.levels:
      level.build(input_shape)

  def _num_levels(self, num_levels):
    n = self.num_quantizers if num_levels is None else num_levels
    _check(isinstance(n, int) and 1 <= n <= self.num_quantizers, "num_levels", n,
           f"an integer in [1, num_quantizers={self.num_quantizers}]")
    return n

  def _levels_of_examples(self, inputs):
    """How many levels each training example uses under quantizer dropout, `[batch]`."""
    batch = tf.shape(inputs)[0]
    # Level 0's seed is the layer's (seed + 0); every replica draws the same numbers.
    seed = self.level(0).step_seed(salt=7, per_replica=False)
    dropped = tf.random.stateless_uniform([batch], seed) < self.quantizer_dropout
    fewer = tf.random.stateless_uniform([batch], seed + 1, minval=1,
                                        maxval=self.num_quantizers + 1, dtype=tf.int32)
    return tf.where(dropped, fewer, self.num_quantizers)

  def call(self, inputs, training=None, mask=None, num_levels=None, return_codes=False):
    training = bool(training) and self.trainable
    n = self._num_levels(num_levels)
    x = tf.cast(inputs, tf.float32)
    uses = None   # [batch] levels each example uses, under quantizer dropout
    if training and self.quantizer_dropout > 0.0:
      uses = self._levels_of_examples(x)
    residual, total, codes = x, tf.zeros_like(x), []
    for i in range(n):
      level_mask = mask
      if uses is not None:
        used = tf.reshape(uses > i, [-1] + [1] * (len(x.shape) - 2))
        used = tf.broadcast_to(used, tf.shape(x)[:-1])
        level_mask = used if mask is None else used & tf.cast(mask, tf.bool)
      out = self.level(i)(residual, training=training, mask=level_mask, return_codes=True)
      quantized = tf.stop_gradient(tf.cast(out.quantized, tf.float32))
      if uses is not None:
        quantized = tf.where(used[..., None], quantized, 0.0)
      total += quantized
      residual -= quantized
      codes.append(out.codes)
    estimator = (quantization.rotation_trick if self.rotation_trick
                 else quantization.straight_through)
    outputs = tf.cast(estimator(x, total), self.compute_dtype)
    return self.quantized(outputs, tf.concat(codes, axis=-1), return_codes=return_codes)

  def encode(self, inputs, num_levels=None):
    """The codes `[..., n * B]` of float `[..., D]` inputs (n = num_levels, default Q),
    without the forward pass's losses and health metrics."""
    residual, codes = tf.cast(checks.float_inputs(self.name, inputs), tf.float32), []
    for i in range(self._num_levels(num_levels)):
      level_codes = self.level(i).encode(residual)   # [..., B]
      residual -= self.level(i).decode(level_codes)
      codes.append(level_codes)
    return tf.concat(codes, axis=-1)

  def decode(self, codes):
    """The sum of the code vectors of int codes `[..., n * B]` (n <= Q: the first n
    levels)."""
    codes = checks.integer_codes(self.name, codes)
    per_level = self.levels[0].num_blocks
    width = codes.shape[-1]
    _check(width is not None and width % per_level == 0 and
           1 <= width // per_level <= self.num_quantizers, "codes", codes.shape,
           f"a last dimension of n x num_blocks={per_level}, n at most num_quantizers="
           f"{self.num_quantizers}")
    return tf.add_n([self.level(i).decode(codes[..., i * per_level:(i + 1) * per_level])
                     for i in range(width // per_level)])

  def compute_output_spec(self, inputs, training=None, mask=None, num_levels=None,
                          return_codes=False):
    spec = self.output_spec(inputs, return_codes)
    if not return_codes or num_levels is None:
      return spec
    codes = tuple(inputs.shape[:-1]) + (num_levels * self.levels[0].num_blocks,)
    return spec._replace(codes=keras.KerasTensor(codes, dtype="int32"),
                         samples=keras.KerasTensor(codes + (1,), dtype="int32"))

  def get_config(self):
    config = super().get_config()
    arguments = dict(self.level_arguments)
    if "codebook_initializer" in arguments and arguments["codebook_initializer"] is not None:
      arguments["codebook_initializer"] = keras.initializers.serialize(
          keras.initializers.get(arguments["codebook_initializer"]))
    config.update({"codebook_size": self.codebook_size,
                   "num_quantizers": self.num_quantizers,
                   "quantizer_dropout": self.quantizer_dropout,
                   "shared_codebook": self.shared_codebook,
                   "rotation_trick": self.rotation_trick, "seed": self.seed, **arguments})
    return config


_check = functools.partial(checks.check_argument, "ResidualVectorQuantizer")
