"""Multi-head cross-attention: decoder queries over an encoder's outputs."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfllm")
class MultiHeadCrossAttention(keras.layers.Layer):
    """Multi-head scaled dot-product attention from one sequence onto another.

    Queries are projected from `inputs` (the decoder's states), keys and values from
    `encoder_outputs` by one fused projection (the `[k | v]` columns, as the
    self-attention's `[q | k | v]`); the heads are mixed by an output projection. The
    encoder may be wider or narrower than the decoder: keys and values take the
    decoder's width. Padded encoder positions are masked out; the softmax is computed
    in float32 even under mixed precision.

    The encoder's keys and values do not change while a decoder generates, so
    `cache_encoder(encoder_outputs)` projects them once and every decoding step passes
    the result as `encoder_cache=` instead of `encoder_outputs`.

    Args:
        num_heads: number of attention heads; must divide the decoder's width.
        dropout: dropout rate on the attention probabilities (training only).
        use_bias: whether the projections have biases.
        kernel_initializer: initializer for the projection kernels.

    Call arguments:
        inputs: `(batch, target_len, hidden)` decoder states (the queries).
        encoder_outputs: `(batch, source_len, encoder_hidden)`; may be omitted when
            `encoder_cache` is given.
        encoder_padding_mask: optional `(batch, source_len)` bool/int tensor, 1 for
            real source tokens.
        encoder_cache: optional `(key, value)` from `cache_encoder()`, each
            `(batch, source_len, num_heads, head_dim)`; replaces `encoder_outputs`.
        training: whether dropout is active.

    Returns:
        `(batch, target_len, hidden)`.

    Example:

    >>> layer = MultiHeadCrossAttention(num_heads=2)
    >>> decoder, encoder = keras.random.normal((1, 3, 8)), keras.random.normal((1, 5, 8))
    >>> tuple(layer(decoder, encoder).shape)
    (1, 3, 8)
    >>> cache = layer.cache_encoder(encoder)  # once per source
    >>> tuple(layer(decoder[:, :1], encoder_cache=cache).shape)  # each decoding step
    (1, 1, 8)
    """

    def __init__(self, num_heads, dropout=0.0, use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.dropout = float(dropout)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, inputs_shape, encoder_outputs_shape=None):
        hidden = inputs_shape[-1]
        if hidden % self.num_heads:
            raise ValueError(
                f"hidden size {hidden} is not divisible by num_heads={self.num_heads}: "
                "choose a width that is a multiple of the number of heads")
        self.head_dim = hidden // self.num_heads
        # Built from the cache alone (no encoder_outputs seen yet), the encoder is
        # taken to be as wide as the decoder.
        encoder_hidden = hidden if encoder_outputs_shape is None else encoder_outputs_shape[-1]
        dense = dict(use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
                     dtype=self.dtype_policy)
        self.query_dense = keras.layers.Dense(hidden, name="query", **dense)
        self.query_dense.build(inputs_shape)
        self.key_value = keras.layers.Dense(2 * hidden, name="key_value", **dense)
        self.key_value.build((None, None, encoder_hidden))
        self.output_dense = keras.layers.Dense(hidden, name="output", **dense)
        self.output_dense.build(tuple(inputs_shape[:-1]) + (hidden,))
        self.probs_dropout = keras.layers.Dropout(
            self.dropout, name="probs_dropout", dtype=self.dtype_policy)

    def cache_encoder(self, encoder_outputs):
        """The projected `(key, value)` of `encoder_outputs (batch, source_len, hidden)`,
        each `(batch, source_len, num_heads, head_dim)` in the compute dtype."""
        if not self.built:
            self.build((None, None, encoder_outputs.shape[-1]), encoder_outputs.shape)
        batch, length = ops.shape(encoder_outputs)[0], ops.shape(encoder_outputs)[1]
        heads = (batch, length, self.num_heads, self.head_dim)
        key, value = ops.split(self.key_value(encoder_outputs), 2, axis=-1)
        return ops.reshape(key, heads), ops.reshape(value, heads)

    def call(self, inputs, encoder_outputs=None, encoder_padding_mask=None,
             encoder_cache=None, training=None):
        if encoder_cache is None:
            if encoder_outputs is None:
                raise ValueError("cross-attention needs encoder_outputs or an "
                                 "encoder_cache: pass the encoder's output sequence")
            encoder_cache = self.cache_encoder(encoder_outputs)
        key, value = encoder_cache  # (batch, source_len, heads, head_dim)
        batch, length = ops.shape(inputs)[0], ops.shape(inputs)[1]
        query = ops.reshape(self.query_dense(inputs),
                            (batch, length, self.num_heads, self.head_dim))

        mask = None
        if encoder_padding_mask is not None:
            keys_real = ops.cast(encoder_padding_mask, "bool")[:, None, None, :]
            mask = ops.broadcast_to(keys_real, (batch, 1, length, ops.shape(key)[1]))
        key, value = ops.cast(key, query.dtype), ops.cast(value, query.dtype)
        if training and self.dropout > 0:
            outputs = self._attend_with_dropout(query, key, value, mask, training)
        else:
            outputs = ops.dot_product_attention(query, key, value, mask=mask)
        outputs = ops.reshape(outputs, (batch, length, self.num_heads * self.head_dim))
        return self.output_dense(outputs)

    def _attend_with_dropout(self, query, key, value, mask, training):
        # The fused op has no dropout, so training with attention dropout spells it out.
        scale = 1.0 / float(self.head_dim) ** 0.5
        logits = ops.einsum("btnh,bsnh->bnts", ops.cast(query, "float32"),
                            ops.cast(key, "float32")) * scale
        if mask is not None:
            logits = ops.where(mask, logits, -1e9)
        probs = self.probs_dropout(ops.softmax(logits, axis=-1), training=training)
        outputs = ops.einsum("bnts,bsnh->btnh", ops.cast(probs, value.dtype), value)
        return ops.cast(outputs, query.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        })
        return config
