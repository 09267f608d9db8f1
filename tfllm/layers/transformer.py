"""Pre-norm transformer block: attention and a GELU feed-forward, each residual."""

import keras
from keras import ops

from tfllm.layers.attention import MultiHeadSelfAttention


def _tanh_gelu(x):
    return ops.gelu(x, approximate=True)


def feed_forward_gelu(x, training=None):
    """GPT-2's GELU (the tanh approximation, so imported GPT-2 weights reproduce
    exactly) for a block's feed-forward hidden layer.

    In training its backward pass recomputes it from its input (`keras.remat`), with the
    same gradients to the bit: otherwise the backward keeps the activation's
    intermediates, several tensors 4x the model's width per block, and on a CPU the
    step's working set outgrows the cache (README Results).
    """
    return keras.remat(_tanh_gelu)(x) if training else _tanh_gelu(x)


@keras.saving.register_keras_serializable(package="tfllm")
class TransformerBlock(keras.layers.Layer):
    """One GPT-2 style block: `x + attn(ln(x))`, then `x + ffn(ln(x))`.

    Args:
        num_heads: attention heads.
        intermediate_dim: width of the feed-forward hidden layer (4x the model width
            in GPT-2).
        dropout: dropout on the residual branches and attention probabilities.
        causal: causal attention (decoder) or bidirectional (encoder).
        layer_norm_epsilon: epsilon of both layer norms.
        use_bias: whether projections have biases.
        kernel_initializer: initializer for every kernel.

    Call arguments:
        inputs: `(batch, seq, hidden)`.
        padding_mask, attention_mask, cache, cache_index, training: as for
            `MultiHeadSelfAttention`.

    Returns:
        `(batch, seq, hidden)`, or `(outputs, cache)` when a cache is given.

    Example:

    >>> block = TransformerBlock(num_heads=2, intermediate_dim=32)
    >>> tuple(block(keras.random.normal((1, 5, 8))).shape)
    (1, 5, 8)
    """

    def __init__(self, num_heads, intermediate_dim, dropout=0.0, causal=True,
                 layer_norm_epsilon=1e-5, use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.dropout = float(dropout)
        self.causal = bool(causal)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        hidden = input_shape[-1]
        common = dict(dtype=self.dtype_policy)
        dense = dict(use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
                     **common)
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="attention_norm", **common)
        self.attention = MultiHeadSelfAttention(
            self.num_heads, dropout=self.dropout, causal=self.causal,
            use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
            name="attention", **common)
        self.ffn_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="ffn_norm", **common)
        self.ffn_in = keras.layers.Dense(self.intermediate_dim, name="ffn_in", **dense)
        self.ffn_out = keras.layers.Dense(hidden, name="ffn_out", **dense)
        self.residual_dropout = keras.layers.Dropout(
            self.dropout, name="residual_dropout", **common)
        for norm in (self.attention_norm, self.ffn_norm):
            norm.build(input_shape)
        self.attention.build(input_shape)
        self.ffn_in.build(input_shape)
        self.ffn_out.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))

    def call(self, inputs, padding_mask=None, attention_mask=None, cache=None,
             cache_index=None, training=None):
        attended = self.attention(
            self.attention_norm(inputs), padding_mask=padding_mask,
            attention_mask=attention_mask, cache=cache, cache_index=cache_index,
            training=training)
        if cache is not None:
            attended, cache = attended
        x = inputs + self.residual_dropout(attended, training=training)
        hidden = feed_forward_gelu(self.ffn_in(self.ffn_norm(x)), training)
        x = x + self.residual_dropout(self.ffn_out(hidden), training=training)
        return x if cache is None else (x, cache)

    def compute_output_spec(self, inputs, *args, cache=None, **kwargs):
        # Declared rather than traced: building a model would otherwise trace every
        # block's call in a scratch graph (two thirds of building a small GPT).
        if cache is not None:
            return super().compute_output_spec(inputs, *args, cache=cache, **kwargs)
        return keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "causal": self.causal,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        })
        return config
