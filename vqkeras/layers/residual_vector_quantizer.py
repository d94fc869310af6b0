"""Residual vector quantization (SoundStream, Zeghidour et al. 2021; RQ-VAE, Lee et al. 2022),
and grouped residual VQ (HiFi-Codec, Yang et al. 2023).

Q quantizers in a row, each quantizing what the ones before it left:

  r_1 = z_e,   c_i = nearest code of r_i in codebook i,   r_{i+1} = r_i - e_i(c_i),
  z_q = sum_i e_i(c_i)

With G groups the channels are cut into G slices, each its own residual quantizer of Q
levels: a position has G x Q codes.

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
  """Q levels of vector quantization of the residual, codes `[..., Q]`; with G groups of
  channels, G residual quantizers side by side, codes `[..., G * Q]`.

  Args:
    codebook_size: K, the codes of each level.
    num_quantizers: Q, the levels, at least 1.
    quantizer_dropout: the probability that a training example uses fewer levels:
      such an example uses the first n levels, n uniform in [1, Q] (SoundStream's
      quantizer dropout, so that fewer codes still decode); the dropped levels leave
      it out of their statistics and losses. Draws differ per replica, as Keras'
      dropout's do.
    shared_codebook: one codebook for every level (one `VectorQuantizer` called Q
      times: its EMA takes a step per level); else one per level. Per group.
    groups: G, the slices of channels quantized apart (each with its own levels); G
      must divide the input depth.
    rotation_trick: if True, gradients reach the inputs through the rotation and
      rescaling that take each input to the sum of its code vectors
      (`quantization.rotation_trick`) instead of straight through.
    seed: int seed of the levels (level i of group g: seed + g x levels + i) and of the
      quantizer dropout (the same for every group).
    **level_arguments: `VectorQuantizer` arguments for every level (update,
      num_samples, decay, epsilon, beta, num_blocks, temperature, usage_window,
      restart_dead_codes, codebook_initializer, distance, codebook_dim,
      max_distance_elements), and `keras.layers.Layer` arguments (name, dtype, ...).
      With num_blocks = B a level has B codes per position, in the layer's codes level
      after level: `[..., Q * B]` (group after group: `[..., G * Q * B]`).

  Call arguments:
    inputs: float `[..., D]`.
    training: bool; as for `VectorQuantizer` (codebook updates, soft-EM samples), and
      quantizer dropout.
    mask: optional bool `[...]`; False positions are left out of every level's
      statistics and losses.
    num_levels: quantize with the first n levels only (default all, Q).
    return_codes: if True, return a `Quantized` record: quantized, codes int32
      `[..., G * n * B]`, samples: the codes `[..., G * n * B, 1]`.

  Returns:
    z_q with a straight-through (or rotation-trick) gradient to the inputs, same shape;
    or the record above.
  """

  def __init__(self, codebook_size, num_quantizers, quantizer_dropout=0.0,
               shared_codebook=False, rotation_trick=False, groups=1, seed=None, **kwargs):
    level_arguments = {name: kwargs.pop(name) for name in LEVEL_ARGUMENTS if name in kwargs}
    super().__init__(**kwargs)
    _check(isinstance(num_quantizers, int) and num_quantizers >= 1, "num_quantizers",
           num_quantizers, "an integer of at least 1")
    _check(0.0 <= quantizer_dropout <= 1.0, "quantizer_dropout", quantizer_dropout,
           "a probability in [0, 1]")
    _check(isinstance(groups, int) and groups >= 1, "groups", groups,
           "an integer of at least 1 that divides the input depth")
    self.codebook_size = codebook_size
    self.num_quantizers = num_quantizers
    self.quantizer_dropout = float(quantizer_dropout)
    self.shared_codebook = bool(shared_codebook)
    self.rotation_trick = bool(rotation_trick)
    self.groups = groups
    self.seed = checks.seed_or_random(seed)
    self.level_arguments = level_arguments
    self.levels_per_group = 1 if self.shared_codebook else num_quantizers
    # The levels compute in float32 whatever the policy: the residuals and the sum stay
    # exact; the output is cast to the compute dtype once. Group after group.
    self.levels = [VectorQuantizer(codebook_size, seed=self.seed + index,
                                   name=self._level_name(index), dtype="float32",
                                   **level_arguments)
                   for index in range(groups * self.levels_per_group)]

  def _level_name(self, index):
    group, level = divmod(index, self.levels_per_group)
    return f"level_{level}" if self.groups == 1 else f"group_{group}_level_{level}"

  @property
  def codes_per_position(self):
    """G * Q * B: the codes of a position (B per level)."""
    return self.groups * self.num_quantizers * self.levels[0].num_blocks

  def code_layers(self):
    """The levels' quantizers, which hold the health state."""
    return list(self.levels)

  @property
  def num_updates(self):
    """Training steps of the first level."""
    return self.levels[0].num_updates

  def level(self, i, group=0):
    """The quantizer of level i (of `group`)."""
    return self.levels[group * self.levels_per_group + (0 if self.shared_codebook else i)]

  def build(self, input_shape):
    depth = checks.known_depth(self.name, input_shape)
    _check(depth % self.groups == 0, "groups", self.groups,
           f"a divisor of the input depth {depth}")
    for level in self.levels:
      level.build(tuple(input_shape[:-1]) + (depth // self.groups,))

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
    totals, codes = [], []
    for group, residual in enumerate(self._group_slices(x)):
      total, group_codes = self._quantize_residual(residual, group, n, training, mask, uses)
      totals.append(total)
      codes.extend(group_codes)
    estimator = (quantization.rotation_trick if self.rotation_trick
                 else quantization.straight_through)
    outputs = tf.cast(estimator(x, tf.concat(totals, axis=-1)), self.compute_dtype)
    return self.quantized(outputs, tf.concat(codes, axis=-1), return_codes=return_codes)

  def _quantize_residual(self, residual, group, n, training, mask, uses):
    """The sum of the first n levels' code vectors of one group's slice (without
    gradient), and each level's codes."""
    total, codes = tf.zeros_like(residual), []
    for i in range(n):
      level_mask = mask
      if uses is not None:
        used = tf.reshape(uses > i, [-1] + [1] * (len(residual.shape) - 2))
        used = tf.broadcast_to(used, tf.shape(residual)[:-1])
        level_mask = used if mask is None else used & tf.cast(mask, tf.bool)
      out = self.level(i, group)(residual, training=training, mask=level_mask,
                                 return_codes=True)
      quantized = tf.stop_gradient(tf.cast(out.quantized, tf.float32))
      if uses is not None:
        quantized = tf.where(used[..., None], quantized, 0.0)
      total += quantized
      residual -= quantized
      codes.append(out.codes)
    return total, codes

  def _group_slices(self, x):
    """The G slices of channels `[..., D / G]`."""
    return tf.split(x, self.groups, axis=-1) if self.groups > 1 else [x]

  def encode(self, inputs, num_levels=None):
    """The codes `[..., G * n * B]` of float `[..., D]` inputs (n = num_levels, default
    Q), without the forward pass's losses and health metrics."""
    x = tf.cast(checks.float_inputs(self.name, inputs), tf.float32)
    codes = []
    for group, residual in enumerate(self._group_slices(x)):
      for i in range(self._num_levels(num_levels)):
        level_codes = self.level(i, group).encode(residual)   # [..., B]
        residual -= self.level(i, group).decode(level_codes)
        codes.append(level_codes)
    return tf.concat(codes, axis=-1)

  def decode(self, codes):
    """The code vectors of int codes `[..., G * n * B]` (n <= Q: the first n levels of
    each group): each group's sum, side by side."""
    codes = checks.integer_codes(self.name, codes)
    per_level = self.levels[0].num_blocks
    width = codes.shape[-1]
    per_group = None if width is None or width % self.groups else width // self.groups
    _check(per_group is not None and per_group % per_level == 0 and
           1 <= per_group // per_level <= self.num_quantizers, "codes", codes.shape,
           f"a last dimension of groups={self.groups} x n x num_blocks={per_level}, n at most "
           f"num_quantizers={self.num_quantizers}")
    slices = []
    for group in range(self.groups):
      group_codes = codes[..., group * per_group:(group + 1) * per_group]
      slices.append(tf.add_n([
          self.level(i, group).decode(group_codes[..., i * per_level:(i + 1) * per_level])
          for i in range(per_group // per_level)]))
    return tf.concat(slices, axis=-1) if self.groups > 1 else slices[0]

  def compute_output_spec(self, inputs, training=None, mask=None, num_levels=None,
                          return_codes=False):
    spec = self.output_spec(inputs, return_codes)
    if not return_codes or num_levels is None:
      return spec
    codes = tuple(inputs.shape[:-1]) + (self.groups * num_levels * self.levels[0].num_blocks,)
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
                   "rotation_trick": self.rotation_trick, "groups": self.groups,
                   "seed": self.seed, **arguments})
    return config


_check = functools.partial(checks.check_argument, "ResidualVectorQuantizer")
