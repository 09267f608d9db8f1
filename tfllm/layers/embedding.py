"""Token + position embedding, reversible into an output head (tied weights)."""

import math

import keras
from keras import ops

POSITION_TYPES = ("learned", "sinusoidal")


def sinusoidal_encoding(positions, dim, dtype="float32"):
    """Fixed sine/cosine encodings of integer `positions` -> `(*positions.shape, dim)`."""
    half = dim // 2
    freqs = ops.exp(ops.arange(half, dtype="float32") * (-math.log(10000.0) / max(half, 1)))
    angles = ops.expand_dims(ops.cast(positions, "float32"), -1) * freqs
    encoding = ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)
    if dim % 2:
        encoding = ops.pad(encoding, [[0, 0]] * (len(encoding.shape) - 1) + [[0, 1]])
    return ops.cast(encoding, dtype)


@keras.saving.register_keras_serializable(package="tfllm")
class PositionalEmbedding(keras.layers.Layer):
    """Token embedding plus a learned or sinusoidal position embedding.

    Positions are counted over real tokens only when a padding mask is given, so a
    left-padded prompt gets the same positions as the unpadded one. Called with
    `reverse=True` the layer maps hidden states back to vocabulary logits with the
    transposed token embedding (weight tying).

    Args:
        vocab_size: number of token ids.
        sequence_length: the longest sequence (context) the model supports.
        embed_dim: width of the embeddings.
        position_type: `"learned"` (a trained table) or `"sinusoidal"` (fixed).
        embeddings_initializer: initializer for the token (and position) tables.

    Call arguments:
        inputs: `(batch, seq)` int token ids, or with `reverse=True` the
            `(batch, seq, embed_dim)` hidden states.
        padding_mask: optional `(batch, seq)` mask, 1 for real tokens.
        positions: optional `(batch, seq)` explicit positions (decoding with a cache).
        reverse: if True, return logits `(batch, seq, vocab_size)`.

    Returns:
        `(batch, seq, embed_dim)` embeddings, or logits when `reverse=True`.

    Example:

    >>> layer = PositionalEmbedding(vocab_size=100, sequence_length=16, embed_dim=8)
    >>> tuple(layer(keras.ops.ones((2, 5), "int32")).shape)
    (2, 5, 8)
    """

    def __init__(self, vocab_size, sequence_length, embed_dim, position_type="learned",
                 embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        if position_type not in POSITION_TYPES:
            raise ValueError(
                f"unknown position_type {position_type!r}: use one of {POSITION_TYPES}")
        self.vocab_size = int(vocab_size)
        self.sequence_length = int(sequence_length)
        self.embed_dim = int(embed_dim)
        self.position_type = position_type
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.token_embeddings = self.add_weight(
            shape=(self.vocab_size, self.embed_dim), name="token_embeddings",
            initializer=self.embeddings_initializer)
        if self.position_type == "learned":
            self.position_embeddings = self.add_weight(
                shape=(self.sequence_length, self.embed_dim), name="position_embeddings",
                initializer=self.embeddings_initializer)

    def call(self, inputs, padding_mask=None, positions=None, reverse=False):
        if reverse:
            kernel = ops.cast(self.token_embeddings, self.compute_dtype)
            return ops.matmul(inputs, ops.transpose(kernel))
        if positions is None:
            positions = positions_from(inputs, padding_mask)
        tokens = ops.take(self.token_embeddings, inputs, axis=0)
        if self.position_type == "learned":
            where = ops.take(self.position_embeddings, positions, axis=0)
        else:
            where = sinusoidal_encoding(positions, self.embed_dim)
        return ops.cast(tokens, self.compute_dtype) + ops.cast(where, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({
            "vocab_size": self.vocab_size,
            "sequence_length": self.sequence_length,
            "embed_dim": self.embed_dim,
            "position_type": self.position_type,
            "embeddings_initializer": keras.initializers.serialize(
                self.embeddings_initializer),
        })
        return config


def positions_from(token_ids, padding_mask=None):
    """Positions `(batch, seq)`: 0, 1, 2... counted over real tokens only."""
    if padding_mask is None:
        length = ops.shape(token_ids)[1]
        return ops.broadcast_to(ops.arange(length, dtype="int32"), ops.shape(token_ids))
    counts = ops.cumsum(ops.cast(padding_mask, "int32"), axis=1) - 1
    return ops.maximum(counts, 0)
