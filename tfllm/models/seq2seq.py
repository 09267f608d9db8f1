"""Encoder-decoder transformer: Seq2SeqConfig, build_seq2seq(config), and the functions
that decode with a cache (encode, init_decoder_cache, decode_with_cache, generate).

The model maps `[source_ids, target_ids]` to logits over the target vocabulary, with
`target_ids` the decoder's input (the target shifted right behind a start token), as
for `build_gpt`. Decoding runs the same layers step by step: `encode` once per source,
`init_decoder_cache` projects every decoder block's cross-attention keys/values once
and makes empty self-attention caches, `decode_with_cache` feeds a prefill or one token.
keras + keras.ops only: the whole file runs under any backend.
"""

import dataclasses
import typing

import keras
from keras import ops

from tfllm.layers import PositionalEmbedding, TransformerBlock, TransformerDecoderBlock
from tfllm.layers.embedding import POSITION_TYPES
from tfllm.models.config import ConfigFile

SEQ2SEQ_PRESETS = {
    # Seconds to minutes on 2 CPU cores: toy translation, copy/reverse/sort tasks.
    "tiny": dict(vocab_size=2048, context_length=128, num_encoder_layers=2,
                 num_decoder_layers=2, num_heads=4, embed_dim=128, dropout=0.1),
    # A first real model for one GPU.
    "small": dict(vocab_size=8192, context_length=256, num_encoder_layers=4,
                  num_decoder_layers=4, num_heads=4, embed_dim=256, dropout=0.1),
    # The Transformer "base" shape (Vaswani et al., 2017): 6 + 6 layers of width 512,
    # 8 heads, one shared 37k vocabulary, sinusoidal positions.
    "base": dict(vocab_size=37000, context_length=512, num_encoder_layers=6,
                 num_decoder_layers=6, num_heads=8, embed_dim=512, dropout=0.1,
                 position_type="sinusoidal"),
}


@dataclasses.dataclass
class Seq2SeqConfig(ConfigFile):
    """An encoder-decoder's shape. `intermediate_dim` defaults to 4x `embed_dim`.

    Vocabulary: with `target_vocab_size` 0 the source and target share one vocabulary
    of `vocab_size` ids and one embedding layer (token and position tables) that the
    encoder and decoder both read. Otherwise the source has `vocab_size` ids, the
    target `target_vocab_size`, each with its own embedding. `tie_embeddings` makes
    the output head the transposed target token table. `context_length` bounds both
    the source and the target length; `pad_id` is padding on both sides.
    """

    PRESETS: typing.ClassVar[dict] = SEQ2SEQ_PRESETS

    vocab_size: int = 2048
    target_vocab_size: int = 0
    context_length: int = 128
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    num_heads: int = 4
    embed_dim: int = 128
    intermediate_dim: int = 0
    dropout: float = 0.0
    position_type: str = "learned"
    tie_embeddings: bool = True
    layer_norm_epsilon: float = 1e-5
    use_bias: bool = True
    pad_id: int = 0

    def __post_init__(self):
        if not self.intermediate_dim:
            self.intermediate_dim = 4 * self.embed_dim
        for name in ("vocab_size", "context_length", "num_encoder_layers",
                     "num_decoder_layers", "num_heads", "embed_dim"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.target_vocab_size < 0:
            raise ValueError(f"target_vocab_size must be 0 (shared with the source) or "
                             f"positive, got {self.target_vocab_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}: "
                "pick a multiple of the head count")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        smallest = min(self.vocab_size, self.output_vocab_size)
        if not 0 <= self.pad_id < smallest:
            raise ValueError(f"pad_id={self.pad_id} is not an id of both vocabularies "
                             f"(0..{smallest - 1}): pick a row of both embedding tables")
        if self.position_type not in POSITION_TYPES:
            raise ValueError(
                f"unknown position_type {self.position_type!r}: use one of {POSITION_TYPES}")

    @property
    def shared_vocab(self):
        """Whether source and target share one vocabulary and embedding layer."""
        return not self.target_vocab_size

    @property
    def output_vocab_size(self):
        """How many target ids the decoder scores."""
        return self.target_vocab_size or self.vocab_size


@keras.saving.register_keras_serializable(package="tfllm")
class PaddingMask(keras.layers.Layer):
    """`(batch, seq)` bool, True where a token id is not `pad_id`. A layer (not a bare op)
    so the model carries its pad id: `encode` and `generate` read it from there."""

    def __init__(self, pad_id, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = int(pad_id)

    def call(self, token_ids):
        return ops.not_equal(token_ids, self.pad_id)

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


def build_seq2seq(config, name="seq2seq"):
    """Build an encoder-decoder transformer as a Functional `keras.Model`.

    Inputs `[source_ids (batch, source_len), target_ids (batch, target_len)]` int32
    (also callable with a dict of those two names); output float32 logits
    `(batch, target_len, output_vocab_size)`, the next-token scores of each target
    position. Token id `config.pad_id` is padding on both sides: padded keys are masked
    and positions count real tokens only, so padding a source leaves the logits as
    they are. The encoder is bidirectional (`TransformerBlock(causal=False)`), the
    decoder causal with cross-attention (`TransformerDecoderBlock`); both end in a
    layer norm, pre-norm style.

    Layer names, which the decoding functions read: `padding_mask`; `embedding` (shared
    vocabulary) or `source_embedding` and `target_embedding`; `encoder_block_{i}`,
    `encoder_norm`; `decoder_block_{i}`, `decoder_norm`; `lm_head` (untied only);
    `logits`.

    Example:

    >>> config = Seq2SeqConfig(vocab_size=20, context_length=8, num_encoder_layers=1,
    ...                        num_decoder_layers=1, num_heads=2, embed_dim=8)
    >>> model = build_seq2seq(config)
    >>> ids = keras.ops.ones((2, 5), "int32")
    >>> tuple(model([ids, ids[:, :3]]).shape)
    (2, 3, 20)
    """
    init = keras.initializers.RandomNormal(stddev=0.02)
    source_ids = keras.Input(shape=(None,), dtype="int32", name="source_ids")
    target_ids = keras.Input(shape=(None,), dtype="int32", name="target_ids")
    padding_mask = PaddingMask(config.pad_id, name="padding_mask")
    source_mask, target_mask = padding_mask(source_ids), padding_mask(target_ids)

    def embedding(vocab_size, layer_name):
        return PositionalEmbedding(
            vocab_size, config.context_length, config.embed_dim,
            position_type=config.position_type, embeddings_initializer=init,
            name=layer_name)

    if config.shared_vocab:
        source_embedding = target_embedding = embedding(config.vocab_size, "embedding")
    else:
        source_embedding = embedding(config.vocab_size, "source_embedding")
        target_embedding = embedding(config.target_vocab_size, "target_embedding")
    block_args = dict(dropout=config.dropout, layer_norm_epsilon=config.layer_norm_epsilon,
                      use_bias=config.use_bias, kernel_initializer=init)

    x = source_embedding(source_ids, padding_mask=source_mask)  # (batch, source, embed)
    x = keras.layers.Dropout(config.dropout, name="encoder_dropout")(x)
    for i in range(config.num_encoder_layers):
        x = TransformerBlock(config.num_heads, config.intermediate_dim, causal=False,
                             name=f"encoder_block_{i}", **block_args)(
                                 x, padding_mask=source_mask)
    encoder_outputs = keras.layers.LayerNormalization(
        epsilon=config.layer_norm_epsilon, name="encoder_norm")(x)

    y = target_embedding(target_ids, padding_mask=target_mask)  # (batch, target, embed)
    y = keras.layers.Dropout(config.dropout, name="decoder_dropout")(y)
    for i in range(config.num_decoder_layers):
        y = TransformerDecoderBlock(config.num_heads, config.intermediate_dim,
                                    name=f"decoder_block_{i}", **block_args)(
            y, encoder_outputs, padding_mask=target_mask, encoder_padding_mask=source_mask)
    y = keras.layers.LayerNormalization(epsilon=config.layer_norm_epsilon,
                                        name="decoder_norm")(y)
    if config.tie_embeddings:
        logits = target_embedding(y, reverse=True)
    else:
        logits = keras.layers.Dense(config.output_vocab_size, use_bias=False,
                                    kernel_initializer=init, name="lm_head")(y)
    # Logits (and so the softmax and loss) stay float32 under mixed precision.
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    return keras.Model([source_ids, target_ids], logits, name=name)


# --- Decoding with a cache ---------------------------------------------------------------

def _layer(model, *names):
    """The first of `names` that is a layer of `model`."""
    present = {layer.name: layer for layer in model.layers}
    return next(present[name] for name in names if name in present)


def encoder_blocks(model):
    return [layer for layer in model.layers if isinstance(layer, TransformerBlock)]


def decoder_blocks(model):
    return [layer for layer in model.layers if isinstance(layer, TransformerDecoderBlock)]


def encode(model, source_ids):
    """Run the encoder once (inference, no dropout).

    Returns:
        `(encoder_outputs (batch, source_len, embed_dim), source_padding_mask
        (batch, source_len) bool)`: what `init_decoder_cache` and `decode_with_cache`
        take.
    """
    source_mask = model.get_layer("padding_mask")(source_ids)
    x = _layer(model, "source_embedding", "embedding")(source_ids, padding_mask=source_mask)
    for block in encoder_blocks(model):
        x = block(x, padding_mask=source_mask)
    return model.get_layer("encoder_norm")(x), source_mask


def init_decoder_cache(model, encoder_outputs, max_length, dtype=None):
    """The decoder's caches for `max_length` target tokens, against one encoded source.

    Returns:
        `(self_caches, encoder_caches)`: per decoder block, empty self-attention
        `(key, value)`, each `(batch, max_length, heads, head_dim)` (separate tensors per
        layer, so XLA updates them in place, as `init_cache` for GPT), and the
        cross-attention's `(key, value)` projected from `encoder_outputs` once, each
        `(batch, source_len, heads, head_dim)`.
    """
    batch = ops.shape(encoder_outputs)[0]
    self_caches, encoder_caches = [], []
    for block in decoder_blocks(model):
        attention = block.self_attention
        shape = (batch, max_length, attention.num_heads, attention.head_dim)
        cache_dtype = dtype or block.compute_dtype
        self_caches.append((ops.zeros(shape, cache_dtype), ops.zeros(shape, cache_dtype)))
        encoder_caches.append(block.cache_encoder(encoder_outputs))
    return self_caches, encoder_caches


def decode_with_cache(model, target_ids, caches, cache_index, encoder_padding_mask,
                      padding_mask=None, positions=None):
    """Run target tokens `(batch, seq)` at `cache_index` against the decoder's caches: a
    prefill (seq > 1 at index 0) or one step.

    Args:
        caches: `(self_caches, encoder_caches)` from `init_decoder_cache` or a previous
            call.
        cache_index: int scalar, the position of `target_ids[:, 0]`.
        encoder_padding_mask: `(batch, source_len)` from `encode`.
        padding_mask: optional `(batch, max_length)`, 1 for cache slots that hold real
            target tokens (including this call's); None when every written slot is real.
        positions: optional `(batch, seq)` position of each token; by default
            `cache_index, cache_index + 1, ...`.

    Returns:
        `(logits (batch, seq, output_vocab) float32, updated caches)`.
    """
    self_caches, encoder_caches = caches
    if positions is None:
        steps = ops.arange(ops.shape(target_ids)[1], dtype="int32") + ops.cast(cache_index,
                                                                                "int32")
        positions = ops.broadcast_to(steps[None, :], ops.shape(target_ids))
    embedding = _layer(model, "target_embedding", "embedding")
    x = embedding(target_ids, positions=positions)
    new_caches = []
    for block, cache, encoder_cache in zip(decoder_blocks(model), self_caches,
                                           encoder_caches, strict=True):
        x, cache = block(x, padding_mask=padding_mask,
                         encoder_padding_mask=encoder_padding_mask, cache=cache,
                         cache_index=cache_index, encoder_cache=encoder_cache)
        new_caches.append(cache)
    x = model.get_layer("decoder_norm")(x)
    if "lm_head" in [layer.name for layer in model.layers]:
        logits = model.get_layer("lm_head")(x)
    else:
        logits = embedding(x, reverse=True)
    return model.get_layer("logits")(logits), (new_caches, encoder_caches)


# --- Generation --------------------------------------------------------------------------

def generate(model, source_ids, max_new_tokens, *, start_id, stop_id=None,
             temperature=0.0, top_k=0, seed=0):
    """Target ids for each source, decoded with the caches in one `keras.ops.while_loop`.

    Backend-agnostic; under `tf.function` (or `jax.jit`) the loop becomes one graph
    loop. `max_new_tokens`, `start_id`, `stop_id`, `temperature` and `top_k` are Python
    values fixed at trace time; `seed` may be a tensor.

    Args:
        model: a `build_seq2seq` model.
        source_ids: `(batch, source_len)` int32, padded with the model's pad id.
        max_new_tokens: how many target tokens to produce at most.
        start_id: the token every target starts from (the decoder's first input).
        stop_id: optional id that ends a row; the row holds the pad id after it, and
            the loop ends early once every row has stopped.
        temperature: 0 for greedy decoding; otherwise sample from the logits divided
            by it.
        top_k: when sampling, draw only from the `top_k` most likely ids (0: all).
        seed: int seed of the sampling noise; the same seed gives the same ids on
            any backend.

    Returns:
        `(batch, max_new_tokens)` int32 ids, without the start token.
    """
    max_new_tokens = int(max_new_tokens)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    embedding = _layer(model, "target_embedding", "embedding")
    if embedding.position_type == "learned" and max_new_tokens > embedding.sequence_length:
        raise ValueError(f"max_new_tokens={max_new_tokens} exceeds the model's context of "
                         f"{embedding.sequence_length} target tokens: lower it")
    pad_id = model.get_layer("padding_mask").pad_id
    encoder_outputs, source_mask = encode(model, source_ids)
    self_caches, encoder_caches = init_decoder_cache(model, encoder_outputs, max_new_tokens)
    batch = ops.shape(source_ids)[0]
    slots = ops.arange(max_new_tokens, dtype="int32")[None, :]  # (1, max_new_tokens)
    seed = ops.cast(seed, "int32")

    def keep_going(step, token, done, tokens, self_caches):
        return ops.logical_and(step < max_new_tokens, ops.logical_not(ops.all(done)))

    def step_fn(step, token, done, tokens, self_caches):
        logits, (self_caches, _) = decode_with_cache(
            model, token[:, None], (self_caches, encoder_caches), step, source_mask)
        token = choose_tokens(logits[:, -1], temperature, top_k, ops.stack([seed, step]))
        token = ops.where(done, pad_id, token)
        # A select, not a scatter: fixed shapes, so the loop compiles as one graph.
        tokens = ops.where(slots == step, token[:, None], tokens)
        if stop_id is not None:
            done = ops.logical_or(done, ops.equal(token, stop_id))
        return step + 1, token, done, tokens, self_caches

    state = (ops.convert_to_tensor(0, "int32"),
             ops.full((batch,), start_id, "int32"),
             ops.zeros((batch,), "bool"),
             ops.full((batch, max_new_tokens), pad_id, "int32"),
             self_caches)
    return ops.while_loop(keep_going, step_fn, state)[3]


def choose_tokens(logits, temperature=0.0, top_k=0, seed=(0, 0)):
    """Next ids `(batch,)` int32 from float32 `logits (batch, vocab)`: the argmax when
    `temperature` is 0, else a sample of `softmax(logits / temperature)` restricted to
    the `top_k` most likely ids (0: all), drawn with `hashed_uniform` noise from `seed`
    (an int pair)."""
    logits = ops.cast(logits, "float32")
    if not temperature:
        return ops.cast(ops.argmax(logits, axis=-1), "int32")
    scaled = logits / float(temperature)
    if top_k:
        kth_best = ops.top_k(scaled, min(int(top_k), scaled.shape[-1]))[0][:, -1:]
        scaled = ops.where(scaled < kth_best, -1e9, scaled)
    gumbel = -ops.log(-ops.log(hashed_uniform(ops.shape(scaled), seed)))
    return ops.cast(ops.argmax(scaled + gumbel, axis=-1), "int32")  # Gumbel-max


def _mix(x):
    """A 32-bit integer hash (xor-shift-multiply rounds) over uint32 tensors."""
    x = ops.bitwise_xor(x, ops.right_shift(x, 16))
    x = ops.multiply(x, ops.convert_to_tensor(0x7FEB352D, "uint32"))
    x = ops.bitwise_xor(x, ops.right_shift(x, 15))
    x = ops.multiply(x, ops.convert_to_tensor(0x846CA68B, "uint32"))
    return ops.bitwise_xor(x, ops.right_shift(x, 16))


def hashed_uniform(shape, seed):
    """Uniform floats in (0, 1) of a 2-D `shape`, from a counter hashed with `seed (2,)`.

    Stateless and written in integer ops, so a seed draws the same numbers on every
    backend, eagerly or inside a compiled loop (keras.random takes no tensor seed
    there), and the same as `tfllm.generation.hashed_uniform` on TensorFlow.
    """
    seed = ops.cast(ops.convert_to_tensor(seed), "uint32")
    key = _mix(ops.bitwise_xor(
        seed[0], _mix(seed[1] + ops.convert_to_tensor(0x9E3779B9, "uint32"))))
    counter = ops.reshape(ops.arange(shape[0] * shape[1], dtype="int32"), shape)
    bits = _mix(ops.bitwise_xor(ops.cast(counter, "uint32"), key))
    return (ops.cast(ops.right_shift(bits, 8), "float32") + 0.5) / 16777216.0
