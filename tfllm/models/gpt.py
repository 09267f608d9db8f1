"""build_gpt(config): a Functional GPT from token ids to next-token logits."""

import math

import keras
from keras import ops

from tfllm.layers import PositionalEmbedding, TransformerBlock


def build_gpt(config, name="gpt"):
    """Build a decoder-only GPT as a Functional `keras.Model`.

    The model maps `token_ids (batch, seq)` int32 to float32 logits
    `(batch, seq, vocab_size)`. Token id `config.pad_id` marks padding: padded keys
    are masked out and positions count real tokens only, so left or right padding
    leaves the logits of real tokens unchanged. `model.count_params()` reports the
    parameter count; `call_with_cache` runs the same layers one step at a time.
    """
    init = keras.initializers.RandomNormal(stddev=0.02)
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    padding_mask = ops.not_equal(token_ids, config.pad_id)  # (batch, seq)

    embedding = PositionalEmbedding(
        config.vocab_size, config.context_length, config.embed_dim,
        position_type=config.position_type, embeddings_initializer=init,
        name="embedding")
    x = embedding(token_ids, padding_mask=padding_mask)  # (batch, seq, embed)
    x = keras.layers.Dropout(config.dropout, name="embedding_dropout")(x)
    for i in range(config.num_layers):
        x = TransformerBlock(
            config.num_heads, config.intermediate_dim, dropout=config.dropout,
            layer_norm_epsilon=config.layer_norm_epsilon, use_bias=config.use_bias,
            kernel_initializer=init, name=f"block_{i}")(x, padding_mask=padding_mask)
    x = keras.layers.LayerNormalization(
        epsilon=config.layer_norm_epsilon, name="final_norm")(x)
    logits = _head(x, embedding, config, init)
    # Logits (and so the softmax and loss) stay float32 under mixed precision.
    if config.real_vocab_size and config.real_vocab_size < config.vocab_size:
        logits = PaddedVocabMask(config.real_vocab_size, dtype="float32", name="logits")(logits)
    else:
        logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    model = keras.Model(token_ids, logits, name=name)
    # GPT-2's initialisation: the projections that write into the residual stream (each
    # block's attention output and feed-forward output) start 1/sqrt(2 x layers) smaller,
    # so the stream's variance at the top does not grow with the depth.
    scale = 1.0 / math.sqrt(2 * config.num_layers)
    for block in transformer_blocks(model):
        for dense in (block.attention.output_dense, block.ffn_out):
            dense.kernel.assign(dense.kernel * scale)
    return model


@keras.saving.register_keras_serializable(package="tfllm")
class PaddedVocabMask(keras.layers.Layer):
    """float32 logits with the ids from `real_vocab_size` up set to -1e9: rows that only
    pad the embedding table are never predicted and take no share of the softmax."""

    def __init__(self, real_vocab_size, **kwargs):
        super().__init__(**kwargs)
        self.real_vocab_size = int(real_vocab_size)

    def call(self, logits):
        logits = ops.cast(logits, "float32")
        real = ops.arange(ops.shape(logits)[-1]) < self.real_vocab_size  # (vocab,)
        return ops.where(real, logits, -1e9)

    def get_config(self):
        return {**super().get_config(), "real_vocab_size": self.real_vocab_size}


def _head(x, embedding, config, init):
    if config.tie_embeddings:
        return embedding(x, reverse=True)
    return keras.layers.Dense(config.vocab_size, use_bias=False,
                              kernel_initializer=init, name="lm_head")(x)


def init_cache(model, batch_size, max_length, dtype=None):
    """Empty per-layer `(key, value)` caches, each `(batch, max_len, heads, head_dim)`.

    One pair of tensors per layer (not one stacked tensor) lets XLA update them in
    place while decoding.
    """
    caches = []
    for block in transformer_blocks(model):
        attention = block.attention
        shape = (batch_size, max_length, attention.num_heads, attention.head_dim)
        dtype = dtype or block.compute_dtype
        caches.append((ops.zeros(shape, dtype), ops.zeros(shape, dtype)))
    return caches


def transformer_blocks(model):
    return [layer for layer in model.layers if isinstance(layer, TransformerBlock)]


def call_with_cache(model, token_ids, caches, cache_index, padding_mask, positions):
    """Run `token_ids (batch, seq)` at `cache_index` against the per-layer caches.

    Args:
        padding_mask: `(batch, max_len)` 1 for cache slots that hold real tokens,
            including the ones written by this call.
        positions: `(batch, seq)` position of each new token.

    Returns:
        `(logits (batch, seq, vocab) float32, updated caches)`.
    """
    embedding = model.get_layer("embedding")
    x = embedding(token_ids, positions=positions)
    new_caches = []
    for block, cache in zip(transformer_blocks(model), caches):
        x, cache = block(x, padding_mask=padding_mask, cache=cache, cache_index=cache_index)
        new_caches.append(cache)
    x = model.get_layer("final_norm")(x)
    if "lm_head" in [layer.name for layer in model.layers]:
        logits = model.get_layer("lm_head")(x)
    else:
        logits = embedding(x, reverse=True)
    return model.get_layer("logits")(logits), new_caches  # float32 (and masked)
