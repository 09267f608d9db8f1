"""Multi-head self-attention with causal/padding masks and a key/value cache."""

import keras
from keras import ops


def make_attention_mask(batch_size, query_length, key_length, *, causal,
                   padding_mask=None, cache_index=None):
    """Boolean mask `(batch, query_length, key_length)`, True where a query may look.

    Queries sit at absolute positions `cache_index + i` (0 without a cache) and keys
    at `0..key_length-1`, so the same rule serves a full pass, a prefill and a
    one-token decoding step.
    """
    start = 0 if cache_index is None else cache_index
    query_pos = ops.arange(query_length, dtype="int32") + ops.cast(start, "int32")
    key_pos = ops.arange(key_length, dtype="int32")
    if causal:
        allowed = ops.expand_dims(query_pos, 1) >= ops.expand_dims(key_pos, 0)
    else:
        # Without causality a query still must not read cache slots not yet written.
        written = ops.expand_dims(key_pos < ops.cast(start, "int32") + query_length, 0)
        allowed = ops.broadcast_to(written, (query_length, key_length))
    mask = ops.broadcast_to(ops.expand_dims(allowed, 0),
                            (batch_size, query_length, key_length))
    if padding_mask is not None:
        keys_real = ops.cast(padding_mask, "bool")  # (batch, key_length)
        mask = ops.logical_and(mask, ops.expand_dims(keys_real, 1))
    return mask


def write_to_cache(cache, update, index):
    """`cache (batch, max_len, heads, head_dim)` with `update (batch, seq, ...)` written
    at position `index`.

    A scatter rather than `ops.slice_update`: on TensorFlow that lowers to
    XlaDynamicUpdateSlice, which runs only where XLA is linked in, and exported models
    must run on any TF Serving build. XLA still updates a scatter in place, where a
    where/select rewrite would copy the whole cache every step.
    """
    batch, length = ops.shape(update)[0], ops.shape(update)[1]
    rows = ops.repeat(ops.arange(batch, dtype="int32"), length)
    slots = ops.tile(ops.arange(length, dtype="int32"), [batch]) + ops.cast(index, "int32")
    flat_update = ops.reshape(ops.cast(update, cache.dtype),
                              (batch * length,) + tuple(cache.shape[2:]))
    return ops.scatter_update(cache, ops.stack([rows, slots], axis=1), flat_update)


def causal_blocks(length):
    """How many query blocks `block_causal_attention` splits a causal pass of `length`
    tokens into: 4 from 256 tokens, 2 from 128, else 1 (the whole square). More, smaller
    blocks skip more masked scores but cost more, smaller products; these thresholds are
    where the saving won on CPU (README, "Using the layers")."""
    if length is None:
        return 1
    for blocks, shortest in ((4, 256), (2, 128)):
        if length >= shortest and length % blocks == 0:
            return blocks
    return 1


# Bias where a query must not look: exp() of it is 0 in float32 beside any real score,
# and it stays finite in float16 (max 65504), where Keras casts the bias first.
MASKED_BIAS = -3e4


def block_causal_attention(query, key, value, blocks, padding_mask=None):
    """Causal attention of `(batch, seq, heads, head_dim)` inputs, computed in `blocks`
    slices of the queries: slice i reads only the keys up to its own end, so the score
    blocks above the diagonal, which the causal mask would zero anyway, are never
    computed (with 4 blocks, 6 of 16). The mask enters as an additive bias, which XLA
    fuses into the softmax; every query that sees at least one key gets the whole
    square's result."""
    batch, length = ops.shape(query)[0], query.shape[1]
    size = length // blocks
    outputs = []
    for i in range(blocks):
        start, end = i * size, (i + 1) * size
        allowed = make_attention_mask(
            batch, size, end, causal=True, cache_index=start,
            padding_mask=None if padding_mask is None else padding_mask[:, :end])
        bias = ops.where(allowed, 0.0, MASKED_BIAS)[:, None]  # (batch, 1, size, end)
        outputs.append(ops.dot_product_attention(
            query[:, start:end], key[:, :end], value[:, :end], bias=bias))
    return ops.concatenate(outputs, axis=1)


@keras.saving.register_keras_serializable(package="tfllm")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Multi-head scaled dot-product self-attention.

    Queries, keys and values come from one fused projection (the GPT-2 layout), the
    heads are mixed by an output projection. Attention runs through
    `keras.ops.dot_product_attention` (its causal mode when nothing else is masked);
    the softmax is computed in float32 even under mixed precision. On TensorFlow a
    causal pass of 128 tokens or more without a cache runs in query blocks that skip
    the score blocks the causal mask zeroes (`block_causal_attention`).

    Args:
        num_heads: number of attention heads; must divide the input width.
        dropout: dropout rate on the attention probabilities (training only).
        causal: if True, position `i` attends to positions `<= i` only.
        use_bias: whether the projections have biases.
        kernel_initializer: initializer for the projection kernels.

    Call arguments:
        inputs: `(batch, seq, hidden)` float tensor.
        padding_mask: optional `(batch, key_len)` bool/int tensor, 1 for real tokens.
            With a cache, `key_len` is the cache length.
        attention_mask: optional explicit `(batch, seq, key_len)` bool mask; replaces
            the causal and padding masks.
        cache: optional `(key_cache, value_cache)`, each
            `(batch, max_len, num_heads, head_dim)`. The new keys/values are written
            at `cache_index` and attention reads the whole cache.
        cache_index: int scalar, the absolute position of `inputs[:, 0]`.
        training: whether dropout is active.

    Returns:
        `(batch, seq, hidden)`, or `(outputs, (key_cache, value_cache))` when a cache
        is given.

    Example:

    >>> layer = MultiHeadSelfAttention(num_heads=2)
    >>> tuple(layer(keras.random.normal((1, 5, 8))).shape)
    (1, 5, 8)
    """

    def __init__(self, num_heads, dropout=0.0, causal=True, use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.dropout = float(dropout)
        self.causal = bool(causal)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        hidden = input_shape[-1]
        if hidden % self.num_heads:
            raise ValueError(
                f"hidden size {hidden} is not divisible by num_heads={self.num_heads}: "
                "choose a width that is a multiple of the number of heads")
        self.head_dim = hidden // self.num_heads
        self.qkv = keras.layers.Dense(
            3 * hidden, use_bias=self.use_bias, name="qkv",
            kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy)
        self.qkv.build(input_shape)
        self.output_dense = keras.layers.Dense(
            hidden, use_bias=self.use_bias, name="output",
            kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy)
        self.output_dense.build(tuple(input_shape[:-1]) + (hidden,))
        self.probs_dropout = keras.layers.Dropout(
            self.dropout, name="probs_dropout", dtype=self.dtype_policy)

    def call(self, inputs, padding_mask=None, attention_mask=None, cache=None,
             cache_index=None, training=None):
        batch, length = ops.shape(inputs)[0], ops.shape(inputs)[1]
        # Split, not strided slices of a 5-D reshape: the slices' gradient (StridedSliceGrad)
        # is slow without XLA; the column layout is the same.
        heads = (batch, length, self.num_heads, self.head_dim)
        query, key, value = (ops.reshape(part, heads)  # (batch, seq, heads, head_dim)
                             for part in ops.split(self.qkv(inputs), 3, axis=-1))

        if cache is not None:
            if cache_index is None:
                raise ValueError("a cache needs cache_index: pass the position of inputs[:, 0]")
            key_cache, value_cache = cache
            key = write_to_cache(key_cache, key, cache_index)
            value = write_to_cache(value_cache, value, cache_index)
            cache = (key, value)  # (batch, max_len, heads, head_dim)

        outputs = self._attend(query, key, value, padding_mask, attention_mask,
                               cached=cache is not None, cache_index=cache_index,
                               training=training)
        outputs = ops.reshape(outputs, (batch, length, self.num_heads * self.head_dim))
        outputs = self.output_dense(outputs)
        return outputs if cache is None else (outputs, cache)

    def _attend(self, query, key, value, padding_mask, attention_mask, cached, cache_index,
                training):
        """`(batch, seq, heads, head_dim)` attention outputs, by the cheapest exact route."""
        dropout_active = bool(training) and self.dropout > 0
        if (self.causal and not cached and attention_mask is None and not dropout_active
                and keras.backend.backend() == "tensorflow"):
            # TensorFlow's dot_product_attention computes the whole score square; JAX's
            # may be a fused kernel, which slicing by hand would only slow down.
            blocks = causal_blocks(query.shape[1])
            if blocks > 1:
                return block_causal_attention(query, key, value, blocks, padding_mask)

        batch, length = ops.shape(query)[0], ops.shape(query)[1]
        mask = attention_mask
        if mask is None and (cached or padding_mask is not None or not self.causal):
            mask = make_attention_mask(batch, length, ops.shape(key)[1], causal=self.causal,
                                  padding_mask=padding_mask, cache_index=cache_index)
        use_fused_causal = mask is None  # plain causal pass: the fused op's own mask
        if mask is not None:
            mask = ops.expand_dims(ops.cast(mask, "bool"), 1)  # (batch, 1, seq, key_len)
        if dropout_active:
            return self._attend_with_dropout(query, key, value, mask, training)
        return ops.dot_product_attention(
            query, ops.cast(key, query.dtype), ops.cast(value, query.dtype),
            mask=mask, is_causal=use_fused_causal)

    def _attend_with_dropout(self, query, key, value, mask, training):
        # The fused op has no dropout, so training with attention dropout spells it out.
        scale = 1.0 / float(self.head_dim) ** 0.5
        logits = ops.einsum("btnh,bsnh->bnts", ops.cast(query, "float32"),
                            ops.cast(key, "float32")) * scale
        if mask is None:
            length = ops.shape(query)[1]
            mask = make_attention_mask(1, length, length, causal=True)[:, None]
        logits = ops.where(mask, logits, -1e9)
        probs = ops.softmax(logits, axis=-1)
        probs = self.probs_dropout(probs, training=training)
        outputs = ops.einsum("bnts,bsnh->btnh", ops.cast(probs, value.dtype), value)
        return ops.cast(outputs, query.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "dropout": self.dropout,
            "causal": self.causal,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        })
        return config

