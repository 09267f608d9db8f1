"""MultiHeadSelfAttention: serialization, training, golden numerics, KV cache, dtypes.

Backend-agnostic: keras, keras.ops and NumPy only (tests/test_backends.py reruns this
file on JAX).
"""

import numpy as np
import pytest

import keras
from keras import ops
from helpers import dtype_of, to_numpy

from tfllm.layers import MultiHeadSelfAttention, make_attention_mask
from tfllm.layers.attention import causal_blocks

# The same small shapes in every layer and model test: eager JAX compiles each op once
# per shape, so shared shapes keep the JAX run fast.
BATCH, SEQ, HIDDEN, HEADS = 2, 8, 8, 2
PROMPT = 4  # prefill length in the cache tests
TOL = dict(atol=1e-5, rtol=1e-5)


def random_inputs(seed=0, shape=(BATCH, SEQ, HIDDEN)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def built_layer(seed=0, **kwargs):
    """A built layer whose every weight (biases included) is random and non-zero."""
    layer = MultiHeadSelfAttention(**{"num_heads": HEADS, **kwargs})
    layer.build((None, None, HIDDEN))
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        variable.assign(rng.normal(scale=0.5, size=variable.shape).astype("float32"))
    return layer


# --- NumPy reference -------------------------------------------------------------------

def np_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def reference_attention(x, qkv_kernel, qkv_bias, out_kernel, out_bias, num_heads,
                        causal, padding_mask=None, attention_mask=None):
    """Plain NumPy multi-head self-attention with the GPT-2 fused [q | k | v] layout."""
    batch, seq, hidden = x.shape
    head_dim = hidden // num_heads
    fused = x @ qkv_kernel + qkv_bias  # (batch, seq, 3 * hidden)
    q, k, v = (fused[..., i * hidden:(i + 1) * hidden] for i in range(3))

    def split_heads(t):  # (batch, seq, hidden) -> (batch, heads, seq, head_dim)
        return t.reshape(batch, seq, num_heads, head_dim).transpose(0, 2, 1, 3)

    q, k, v = split_heads(q), split_heads(k), split_heads(v)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim)  # (batch, heads, seq, seq)
    if attention_mask is not None:
        allowed = np.asarray(attention_mask, bool)
    else:
        allowed = np.ones((batch, seq, seq), bool)
        if causal:
            allowed &= np.tril(np.ones((seq, seq), bool))[None]
        if padding_mask is not None:
            allowed &= np.asarray(padding_mask, bool)[:, None, :]
    scores = np.where(allowed[:, None], scores, -np.inf)
    heads = np_softmax(scores) @ v  # (batch, heads, seq, head_dim)
    merged = heads.transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
    return merged @ out_kernel + out_bias


def reference_for(layer, x, **masks):
    qkv_kernel, qkv_bias = layer.qkv.get_weights()
    out_kernel, out_bias = layer.output_dense.get_weights()
    return reference_attention(
        x.astype("float64"), qkv_kernel, qkv_bias, out_kernel, out_bias,
        layer.num_heads, causal=layer.causal, **masks)


# A padding mask whose first token is real, so no query row is fully masked.
PADDING_MASK = np.array([[1, 1, 1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 1, 1, 0, 1]], dtype="int32")


# --- Tests ------------------------------------------------------------------------------

def test_output_shape():
    layer = MultiHeadSelfAttention(num_heads=HEADS)
    assert tuple(layer(random_inputs()).shape) == (BATCH, SEQ, HIDDEN)


def test_config_round_trip_gives_equal_config_and_outputs():
    init = keras.initializers.RandomNormal(stddev=0.02)
    layer = built_layer(num_heads=HEADS, dropout=0.1, causal=False, use_bias=False,
                        kernel_initializer=init, name="attn")
    config = layer.get_config()
    for key in ("num_heads", "dropout", "causal", "use_bias", "kernel_initializer"):
        assert key in config
    restored = MultiHeadSelfAttention.from_config(config)
    assert restored.get_config() == config
    restored.build((None, None, HIDDEN))
    restored.set_weights(layer.get_weights())
    x = random_inputs()
    np.testing.assert_array_equal(to_numpy(restored(x)), to_numpy(layer(x)))


def test_keras_save_and_load_gives_identical_outputs(tmp_path):
    hidden = keras.Input((None, HIDDEN), name="hidden")
    mask = keras.Input((None,), dtype="int32", name="padding_mask")
    outputs = MultiHeadSelfAttention(HEADS, name="attention")(hidden, padding_mask=mask)
    model = keras.Model([hidden, mask], outputs)
    for variable in model.weights:  # non-zero biases too
        variable.assign(np.random.default_rng(1).normal(size=variable.shape))
    x = random_inputs()
    expected = to_numpy(model([x, PADDING_MASK]))

    path = str(tmp_path / "attention.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("attention"), MultiHeadSelfAttention)
    np.testing.assert_array_equal(to_numpy(loaded([x, PADDING_MASK])), expected)


def _fit_once_changes_weights(model, x, y, loss):
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=len(y), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = model.get_weights()
    changed = [not np.array_equal(b, a) for b, a in zip(before, after, strict=True)]
    assert all(changed), "every weight should move after one Adam step"


def test_sequential_model_trains():
    model = keras.Sequential([
        keras.Input((SEQ, HIDDEN)),
        MultiHeadSelfAttention(HEADS),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
    ])
    _fit_once_changes_weights(model, random_inputs(), np.ones((BATCH, 1), "float32"),
                              loss="mse")


def test_functional_model_with_padding_mask_trains():
    hidden = keras.Input((SEQ, HIDDEN))
    mask = keras.Input((SEQ,), dtype="bool")
    x = MultiHeadSelfAttention(HEADS, causal=False)(hidden, padding_mask=mask)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model([hidden, mask], keras.layers.Dense(2, activation="softmax")(x))
    mask = PADDING_MASK.astype(bool)
    _fit_once_changes_weights(model, [random_inputs(), mask], np.array([0, 1]),
                              loss="sparse_categorical_crossentropy")


@pytest.mark.parametrize("causal,padding_mask", [
    (True, None), (False, None), (True, PADDING_MASK), (False, PADDING_MASK)],
    ids=["causal", "bidirectional", "causal+padding", "bidirectional+padding"])
@pytest.mark.parametrize("path", ["inference", "training"])
def test_matches_numpy_reference(causal, padding_mask, path):
    # "training" runs the explicit-softmax path used for attention dropout, with a rate
    # so small that no unit is dropped in practice: it must compute the same attention.
    dropout = 1e-9 if path == "training" else 0.0
    layer = built_layer(causal=causal, dropout=dropout)
    x = random_inputs(seed=3)
    outputs = layer(x, padding_mask=padding_mask, training=path == "training")
    expected = reference_for(layer, x, padding_mask=padding_mask)
    np.testing.assert_allclose(to_numpy(outputs), expected, **TOL)


def test_causal_blocks_rule():
    assert [causal_blocks(n) for n in (None, 8, 64, 127, 128, 130, 256, 512, 258)] == \
        [1, 1, 1, 1, 2, 2, 4, 4, 2]


def long_padding_mask(length):
    """Two rows: right padding, and holes, both with a real first token."""
    mask = np.ones((BATCH, length), "int32")
    mask[0, length * 3 // 5:] = 0
    mask[1, 1::7] = 0
    return mask


@pytest.mark.parametrize("length", [128, 256], ids=["2-blocks", "4-blocks"])
@pytest.mark.parametrize("padded", [False, True], ids=["causal", "causal+padding"])
def test_long_causal_pass_matches_numpy_reference(length, padded):
    # From 128 tokens TensorFlow runs a causal pass in query blocks
    # (block_causal_attention); the result is that of the whole square.
    layer = built_layer(causal=True)
    x = random_inputs(seed=8, shape=(BATCH, length, HIDDEN))
    padding_mask = long_padding_mask(length) if padded else None
    outputs = layer(x, padding_mask=padding_mask)
    expected = reference_for(layer, x, padding_mask=padding_mask)
    np.testing.assert_allclose(to_numpy(outputs), expected, **TOL)


def test_long_causal_pass_in_float16_matches_float32():
    # The blocks' mask bias must stay finite once Keras casts it to float16: a -inf bias
    # turns a query that sees no key (left padding) into NaN, as the whole square's
    # finite mask value does not.
    length = 256
    reference = built_layer(causal=True)
    x = random_inputs(seed=10, shape=(BATCH, length, HIDDEN)) * 0.5
    padding_mask = long_padding_mask(length)
    padding_mask[1, :5] = 0  # left padding: the first five queries of row 1 see nothing
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = built_layer(causal=True)
        layer.set_weights(reference.get_weights())
        outputs = to_numpy(layer(x, padding_mask=padding_mask)).astype("float32")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(outputs).all()
    expected = to_numpy(reference(x, padding_mask=padding_mask))
    sees_a_key = np.ones((BATCH, length), bool)
    sees_a_key[1, :5] = False
    np.testing.assert_allclose(outputs[sees_a_key], expected[sees_a_key], atol=0.05, rtol=0.02)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="query blocks are a TensorFlow-only route")
def test_block_causal_gradients_match_the_whole_square():
    import tensorflow as tf

    # An explicit attention mask takes the whole-square route with the same mask.
    length = 256
    layer = built_layer(causal=True)
    x = tf.constant(random_inputs(seed=9, shape=(BATCH, length, HIDDEN)))
    padding_mask = long_padding_mask(length)
    whole_mask = np.tril(np.ones((length, length), bool))[None] & \
        padding_mask.astype(bool)[:, None, :]

    def gradients(**masks):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(layer(x, **masks)))
        return tape.gradient(loss, [x] + layer.trainable_variables)

    # atol: the key bias's exact gradient is zero (a shift shared by every key leaves the
    # softmax unchanged), so both routes hold only round-off there, summed over 512 rows.
    for blocked, whole in zip(gradients(padding_mask=padding_mask),
                              gradients(attention_mask=whole_mask), strict=True):
        np.testing.assert_allclose(blocked.numpy(), whole.numpy(), rtol=1e-5, atol=1e-4)


def test_explicit_attention_mask_replaces_causal_and_padding_masks():
    rng = np.random.default_rng(4)
    attention_mask = rng.random((BATCH, SEQ, SEQ)) < 0.5
    attention_mask |= np.eye(SEQ, dtype=bool)[None]  # every query sees something
    layer = built_layer(causal=True)
    x = random_inputs(seed=5)
    outputs = layer(x, padding_mask=np.ones((BATCH, SEQ), "int32"),
                    attention_mask=attention_mask)
    expected = reference_for(layer, x, attention_mask=attention_mask)
    np.testing.assert_allclose(to_numpy(outputs), expected, **TOL)


def test_make_attention_mask():
    mask = to_numpy(make_attention_mask(1, 2, 4, causal=True, cache_index=1))
    np.testing.assert_array_equal(mask[0], [[1, 1, 0, 0], [1, 1, 1, 0]])
    mask = to_numpy(make_attention_mask(1, 2, 4, causal=False, cache_index=1))
    np.testing.assert_array_equal(mask[0], [[1, 1, 1, 0], [1, 1, 1, 0]])
    mask = to_numpy(make_attention_mask(2, 3, 3, causal=False,
                                        padding_mask=np.array([[1, 1, 0], [0, 1, 1]])))
    np.testing.assert_array_equal(mask[:, 0], [[1, 1, 0], [0, 1, 1]])


def empty_cache(layer, batch=BATCH, max_length=SEQ):
    shape = (batch, max_length, layer.num_heads, layer.head_dim)
    return ops.zeros(shape), ops.zeros(shape)


@pytest.mark.parametrize("index_type", ["int", "tensor"])
@pytest.mark.parametrize("prefill", [1, PROMPT])
def test_kv_cache_prefill_and_steps_match_full_causal_pass(prefill, index_type):
    layer = built_layer(causal=True)
    x = random_inputs(seed=6)
    full = to_numpy(layer(x))
    def index(i):  # a Python int, or a tensor as in a compiled decoding loop
        return i if index_type == "int" else ops.convert_to_tensor(i, "int32")

    cache = empty_cache(layer)
    outputs, cache = layer(x[:, :prefill], cache=cache, cache_index=index(0))
    np.testing.assert_allclose(to_numpy(outputs), full[:, :prefill], **TOL)
    for i in range(prefill, SEQ):
        if i == SEQ - 2:  # slots past the last written position are still empty
            np.testing.assert_array_equal(to_numpy(cache[0])[:, i:], 0.0)
            np.testing.assert_array_equal(to_numpy(cache[1])[:, i:], 0.0)
        step, cache = layer(x[:, i:i + 1], cache=cache, cache_index=index(i))
        assert tuple(step.shape) == (BATCH, 1, HIDDEN)
        np.testing.assert_allclose(to_numpy(step)[:, 0], full[:, i], **TOL,
                                   err_msg=f"step at position {i}")
    assert tuple(cache[0].shape) == (BATCH, SEQ, HEADS, HIDDEN // HEADS)


def test_kv_cache_with_padding_mask_matches_full_pass():
    layer = built_layer(causal=True)
    x = random_inputs(seed=7)
    full = to_numpy(layer(x, padding_mask=PADDING_MASK))
    cache = empty_cache(layer)
    outputs, cache = layer(x[:, :PROMPT], padding_mask=PADDING_MASK, cache=cache,
                           cache_index=0)
    np.testing.assert_allclose(to_numpy(outputs), full[:, :PROMPT], **TOL)
    for i in range(PROMPT, SEQ):
        step, cache = layer(x[:, i:i + 1], padding_mask=PADDING_MASK, cache=cache,
                            cache_index=i)
        np.testing.assert_allclose(to_numpy(step)[:, 0], full[:, i], **TOL)


def test_cache_without_cache_index_is_an_error():
    layer = built_layer()
    with pytest.raises(ValueError, match="cache_index"):
        layer(random_inputs(), cache=empty_cache(layer))


def test_dropout_only_in_training():
    layer = built_layer(dropout=0.5)
    x = random_inputs(seed=8)
    first, second = layer(x, training=False), layer(x, training=False)
    np.testing.assert_array_equal(to_numpy(first), to_numpy(second))
    np.testing.assert_array_equal(to_numpy(layer(x)), to_numpy(first))  # default: off
    first, second = layer(x, training=True), layer(x, training=True)
    assert not np.allclose(to_numpy(first), to_numpy(second))


@pytest.mark.parametrize("training", [False, True])
def test_mixed_precision_dtypes(mixed_bfloat16, training):
    layer = MultiHeadSelfAttention(HEADS, dropout=0.1)
    outputs = layer(random_inputs(), padding_mask=PADDING_MASK, training=training)
    assert dtype_of(outputs) == "bfloat16"
    assert layer.compute_dtype == "bfloat16"
    assert layer.weights and all(dtype_of(w) == "float32" for w in layer.weights)
    assert np.isfinite(to_numpy(ops.cast(outputs, "float32"))).all()


def test_mixed_precision_cache(mixed_bfloat16):
    layer = MultiHeadSelfAttention(HEADS)
    layer.build((None, None, HIDDEN))
    cache = empty_cache(layer)
    cache = tuple(ops.cast(c, "bfloat16") for c in cache)
    outputs, cache = layer(random_inputs()[:, :PROMPT], cache=cache, cache_index=0)
    assert dtype_of(outputs) == "bfloat16"
    assert dtype_of(cache[0]) == dtype_of(cache[1]) == "bfloat16"


def test_num_heads_must_divide_width():
    layer = MultiHeadSelfAttention(num_heads=3)
    with pytest.raises(ValueError, match=r"8.*num_heads=3"):
        layer(random_inputs())
