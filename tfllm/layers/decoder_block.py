"""Pre-norm transformer decoder block: causal self-attention, cross-attention onto an
encoder's outputs, and a GELU feed-forward, each residual."""

import keras

from tfllm.layers.attention import MultiHeadSelfAttention
from tfllm.layers.cross_attention import MultiHeadCrossAttention
from tfllm.layers.transformer import feed_forward_gelu


@keras.saving.register_keras_serializable(package="tfllm")
class TransformerDecoderBlock(keras.layers.Layer):
    """One encoder-decoder block: `x + self_attn(ln(x))`, `x + cross_attn(ln(x), enc)`,
    then `x + ffn(ln(x))` (the `TransformerBlock` layout with cross-attention between).

    The self-attention is causal and takes the same key/value cache as
    `MultiHeadSelfAttention`; the cross-attention reads either the encoder's outputs or
    their projected keys/values (`cache_encoder`), computed once per source.

    Args:
        num_heads: attention heads (self- and cross-attention).
        intermediate_dim: width of the feed-forward hidden layer.
        dropout: dropout on the residual branches and attention probabilities.
        layer_norm_epsilon: epsilon of the three layer norms.
        use_bias: whether projections have biases.
        kernel_initializer: initializer for every kernel.

    Call arguments:
        inputs: `(batch, target_len, hidden)` decoder states.
        encoder_outputs: `(batch, source_len, encoder_hidden)`; may be omitted when
            `encoder_cache` is given.
        padding_mask: optional `(batch, key_len)` mask of the decoder's own tokens, 1
            for real ones (`key_len` is the cache length when decoding with a cache).
        encoder_padding_mask: optional `(batch, source_len)`, 1 for real source tokens.
        cache: optional self-attention `(key_cache, value_cache)`, each
            `(batch, max_len, num_heads, head_dim)`, written at `cache_index`.
        cache_index: int scalar, the absolute position of `inputs[:, 0]`.
        encoder_cache: optional `(key, value)` from `cache_encoder()`.
        training: whether dropout is active.

    Returns:
        `(batch, target_len, hidden)`, or `(outputs, cache)` when a cache is given.

    Example:

    >>> block = TransformerDecoderBlock(num_heads=2, intermediate_dim=32)
    >>> target, source = keras.random.normal((1, 3, 8)), keras.random.normal((1, 5, 8))
    >>> tuple(block(target, source).shape)
    (1, 3, 8)
    """

    def __init__(self, num_heads, intermediate_dim, dropout=0.0, layer_norm_epsilon=1e-5,
                 use_bias=True, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.dropout = float(dropout)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, inputs_shape, encoder_outputs_shape=None):
        hidden = inputs_shape[-1]
        common = dict(dtype=self.dtype_policy)
        dense = dict(use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
                     **common)
        attention = dict(dropout=self.dropout, use_bias=self.use_bias,
                         kernel_initializer=self.kernel_initializer, **common)

        def norm(name):
            layer = keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon, name=name, **common)
            layer.build(inputs_shape)
            return layer

        self.self_attention_norm = norm("self_attention_norm")
        self.self_attention = MultiHeadSelfAttention(
            self.num_heads, causal=True, name="self_attention", **attention)
        self.self_attention.build(inputs_shape)
        self.cross_attention_norm = norm("cross_attention_norm")
        self.cross_attention = MultiHeadCrossAttention(
            self.num_heads, name="cross_attention", **attention)
        self.cross_attention.build(inputs_shape, encoder_outputs_shape)
        self.ffn_norm = norm("ffn_norm")
        self.ffn_in = keras.layers.Dense(self.intermediate_dim, name="ffn_in", **dense)
        self.ffn_in.build(inputs_shape)
        self.ffn_out = keras.layers.Dense(hidden, name="ffn_out", **dense)
        self.ffn_out.build(tuple(inputs_shape[:-1]) + (self.intermediate_dim,))
        self.residual_dropout = keras.layers.Dropout(
            self.dropout, name="residual_dropout", **common)

    def cache_encoder(self, encoder_outputs):
        """The cross-attention's projected `(key, value)` of `encoder_outputs`, to pass
        as `encoder_cache=` at every decoding step."""
        return self.cross_attention.cache_encoder(encoder_outputs)

    def call(self, inputs, encoder_outputs=None, padding_mask=None,
             encoder_padding_mask=None, cache=None, cache_index=None, encoder_cache=None,
             training=None):
        attended = self.self_attention(
            self.self_attention_norm(inputs), padding_mask=padding_mask, cache=cache,
            cache_index=cache_index, training=training)
        if cache is not None:
            attended, cache = attended
        x = inputs + self.residual_dropout(attended, training=training)
        attended = self.cross_attention(
            self.cross_attention_norm(x), encoder_outputs,
            encoder_padding_mask=encoder_padding_mask, encoder_cache=encoder_cache,
            training=training)
        x = x + self.residual_dropout(attended, training=training)
        hidden = feed_forward_gelu(self.ffn_in(self.ffn_norm(x)), training)
        x = x + self.residual_dropout(self.ffn_out(hidden), training=training)
        return x if cache is None else (x, cache)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        })
        return config
