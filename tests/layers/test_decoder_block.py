"""TransformerDecoderBlock: serialization, training, golden numerics against NumPy (causal
self-attention with target padding, cross-attention with source padding), the
self-attention KV cache with the encoder cache, dropout, dtypes, errors.

Backend-agnostic: keras, keras.ops and NumPy only.
"""

import numpy as np
import pytest

import keras
from keras import ops
from helpers import dtype_of, to_numpy

from tfllm.layers import TransformerDecoderBlock

# The transformer tests' shapes; the source has its own length and width.
BATCH, SEQ, HIDDEN, HEADS, FFN = 2, 8, 8, 2, 32
SOURCE, ENCODER_HIDDEN = 6, 12
PROMPT = 4
TOL = dict(atol=1e-5, rtol=1e-5)
PADDING_MASK = np.array([[1, 1, 1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 1, 1, 0, 1]], dtype="int32")
ENCODER_MASK = np.array([[1, 1, 1, 1, 0, 0], [1, 0, 1, 1, 1, 1]], dtype="int32")


def random_inputs(seed=0, shape=(BATCH, SEQ, HIDDEN)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def encoder_outputs(seed=1, width=ENCODER_HIDDEN):
    return random_inputs(seed, (BATCH, SOURCE, width))


def built_block(seed=0, encoder_width=ENCODER_HIDDEN, **kwargs):
    """A built block whose every weight (norm scales, biases too) is random."""
    block = TransformerDecoderBlock(**{"num_heads": HEADS, "intermediate_dim": FFN, **kwargs})
    block.build((None, None, HIDDEN), (None, None, encoder_width))
    rng = np.random.default_rng(seed)
    for variable in block.weights:
        variable.assign(rng.normal(scale=0.5, size=variable.shape).astype("float32"))
    return block


# --- NumPy reference -------------------------------------------------------------------

def np_layer_norm(x, gamma, beta, epsilon):
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * gamma + beta


def np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def np_attention(q, k, v, allowed, out_kernel, out_bias, num_heads):
    """Heads of projected `q (batch, len, hidden)` over `k, v (batch, keys, hidden)`."""
    batch, length, hidden = q.shape
    head_dim = hidden // num_heads

    def split(t):  # (batch, steps, hidden) -> (batch, heads, steps, head_dim)
        return t.reshape(batch, t.shape[1], num_heads, head_dim).transpose(0, 2, 1, 3)

    scores = split(q) @ split(k).transpose(0, 1, 3, 2) / np.sqrt(head_dim)
    scores = np.where(allowed[:, None], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    merged = (probs @ split(v)).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
    return merged @ out_kernel + out_bias


def dense_weights(layer):
    """(kernel, bias) of a Dense layer, with a zero bias when it has none."""
    weights = layer.get_weights()
    kernel = weights[0]
    return kernel, weights[1] if len(weights) > 1 else np.zeros(kernel.shape[-1])


def reference_block(block, x, memory, padding_mask=None, encoder_padding_mask=None):
    """x + self_attn(ln1 x) [causal], x + cross_attn(ln2 x, memory), x + ffn(ln3 x)."""
    eps, heads = block.layer_norm_epsilon, block.num_heads
    x, memory = x.astype("float64"), memory.astype("float64")
    batch, length, hidden = x.shape
    source = memory.shape[1]

    h = np_layer_norm(x, *block.self_attention_norm.get_weights(), eps)
    attention = block.self_attention
    kernel, bias = dense_weights(attention.qkv)
    fused = h @ kernel + bias
    q, k, v = (fused[..., i * hidden:(i + 1) * hidden] for i in range(3))
    allowed = np.tril(np.ones((length, length), bool))[None].repeat(batch, 0)
    if padding_mask is not None:
        allowed &= np.asarray(padding_mask, bool)[:, None, :]
    x = x + np_attention(q, k, v, allowed, *dense_weights(attention.output_dense), heads)

    h = np_layer_norm(x, *block.cross_attention_norm.get_weights(), eps)
    cross = block.cross_attention
    kernel, bias = dense_weights(cross.query_dense)
    q = h @ kernel + bias
    kernel, bias = dense_weights(cross.key_value)
    kv = memory @ kernel + bias
    allowed = np.ones((batch, length, source), bool)
    if encoder_padding_mask is not None:
        allowed &= np.asarray(encoder_padding_mask, bool)[:, None, :]
    x = x + np_attention(q, kv[..., :hidden], kv[..., hidden:], allowed,
                         *dense_weights(cross.output_dense), heads)

    h = np_layer_norm(x, *block.ffn_norm.get_weights(), eps)
    w1, b1 = dense_weights(block.ffn_in)
    w2, b2 = dense_weights(block.ffn_out)
    return x + np_gelu_tanh(h @ w1 + b1) @ w2 + b2


# --- Tests ------------------------------------------------------------------------------

def test_output_shape():
    block = TransformerDecoderBlock(HEADS, FFN)
    assert tuple(block(random_inputs(), encoder_outputs()).shape) == (BATCH, SEQ, HIDDEN)


def test_config_round_trip_gives_equal_config_and_outputs():
    init = keras.initializers.RandomNormal(stddev=0.02)
    block = built_block(dropout=0.1, layer_norm_epsilon=1e-6, use_bias=False,
                        kernel_initializer=init, name="decoder_block")
    config = block.get_config()
    for key in ("num_heads", "intermediate_dim", "dropout", "layer_norm_epsilon",
                "use_bias", "kernel_initializer"):
        assert key in config
    restored = TransformerDecoderBlock.from_config(config)
    assert restored.get_config() == config
    restored.build((None, None, HIDDEN), (None, None, ENCODER_HIDDEN))
    restored.set_weights(block.get_weights())
    x, memory = random_inputs(), encoder_outputs()
    np.testing.assert_array_equal(to_numpy(restored(x, memory)), to_numpy(block(x, memory)))


def functional_model(length=None, source=None):
    hidden = keras.Input((length, HIDDEN), name="hidden")
    memory = keras.Input((source, ENCODER_HIDDEN), name="memory")
    mask = keras.Input((length,), dtype="int32", name="padding_mask")
    encoder_mask = keras.Input((source,), dtype="int32", name="encoder_padding_mask")
    outputs = TransformerDecoderBlock(HEADS, FFN, name="decoder_block")(
        hidden, memory, padding_mask=mask, encoder_padding_mask=encoder_mask)
    return keras.Model([hidden, memory, mask, encoder_mask], outputs)


def model_inputs():
    return [random_inputs(), encoder_outputs(), PADDING_MASK, ENCODER_MASK]


def test_keras_save_and_load_gives_identical_outputs(tmp_path):
    model = functional_model()
    for variable in model.weights:
        variable.assign(np.random.default_rng(2).normal(scale=0.5, size=variable.shape))
    expected = to_numpy(model(model_inputs()))
    path = str(tmp_path / "decoder_block.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("decoder_block"), TransformerDecoderBlock)
    np.testing.assert_array_equal(to_numpy(loaded(model_inputs())), expected)


def test_functional_model_trains():
    inputs = functional_model(SEQ, SOURCE)
    pooled = keras.layers.GlobalAveragePooling1D()(inputs.output)
    model = keras.Model(inputs.inputs, keras.layers.Dense(1)(pooled))
    # One step: on TensorFlow tracing a graph costs more than running it eagerly; eager
    # JAX would compile every op apart, so it keeps its jit.
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse",
                  run_eagerly=keras.backend.backend() == "tensorflow")
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(model_inputs(), np.ones((BATCH, 1), "float32"), batch_size=BATCH,
                        epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.array_equal(b, a) for b, a in zip(before, model.get_weights(), strict=True)]
    assert all(changed), "every weight should move after one Adam step"


@pytest.mark.parametrize("padding_mask,encoder_padding_mask", [
    (None, None), (PADDING_MASK, None), (None, ENCODER_MASK), (PADDING_MASK, ENCODER_MASK)],
    ids=["unpadded", "target-padding", "source-padding", "both"])
def test_matches_numpy_reference(padding_mask, encoder_padding_mask):
    block = built_block()
    x, memory = random_inputs(seed=3), encoder_outputs(seed=4)
    outputs = block(x, memory, padding_mask=padding_mask,
                    encoder_padding_mask=encoder_padding_mask)
    expected = reference_block(block, x, memory, padding_mask, encoder_padding_mask)
    np.testing.assert_allclose(to_numpy(outputs), expected, **TOL)


def test_without_bias():
    block = built_block(use_bias=False)
    assert block.self_attention.qkv.bias is None and block.cross_attention.key_value.bias is None
    x, memory = random_inputs(seed=5), encoder_outputs(seed=6)
    np.testing.assert_allclose(to_numpy(block(x, memory)), reference_block(block, x, memory),
                               **TOL)


def test_causal_in_the_target_only():
    block = built_block()
    x, memory = random_inputs(seed=7), encoder_outputs(seed=8)
    before = to_numpy(block(x, memory))
    changed = x.copy()
    changed[:, 5] += 1.0  # a later target position: earlier outputs stay
    after = to_numpy(block(changed, memory))
    np.testing.assert_allclose(after[:, :5], before[:, :5], **TOL)
    assert not np.allclose(after[:, 5:], before[:, 5:])
    other_source = memory.copy()
    other_source[:, -1] += 1.0  # any source position reaches every target position
    after = to_numpy(block(x, other_source))
    assert not np.isclose(after, before, atol=1e-6).all(axis=-1).any()


@pytest.mark.parametrize("prefill", [1, PROMPT])
def test_kv_cache_prefill_and_steps_match_full_pass(prefill):
    block = built_block()
    x, memory = random_inputs(seed=9), encoder_outputs(seed=10)
    full = to_numpy(block(x, memory, encoder_padding_mask=ENCODER_MASK))
    encoder_cache = block.cache_encoder(memory)
    shape = (BATCH, SEQ, HEADS, HIDDEN // HEADS)
    cache = (ops.zeros(shape), ops.zeros(shape))
    outputs, cache = block(x[:, :prefill], encoder_padding_mask=ENCODER_MASK, cache=cache,
                           cache_index=0, encoder_cache=encoder_cache)
    np.testing.assert_allclose(to_numpy(outputs), full[:, :prefill], **TOL)
    for i in range(prefill, SEQ):
        step, cache = block(x[:, i:i + 1], encoder_padding_mask=ENCODER_MASK, cache=cache,
                            cache_index=ops.convert_to_tensor(i, "int32"),
                            encoder_cache=encoder_cache)
        np.testing.assert_allclose(to_numpy(step)[:, 0], full[:, i], **TOL,
                                   err_msg=f"step at position {i}")


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="checked on TensorFlow only: eager JAX compiles the dropout path "
                           "for half a minute, and the attention, cross-attention and "
                           "transformer tests check dropout on JAX")
def test_dropout_only_in_training():
    block = built_block(dropout=0.5)
    x, memory = random_inputs(seed=11), encoder_outputs()
    np.testing.assert_array_equal(to_numpy(block(x, memory, training=False)),
                                  to_numpy(block(x, memory, training=False)))
    first, second = block(x, memory, training=True), block(x, memory, training=True)
    assert not np.allclose(to_numpy(first), to_numpy(second))


@pytest.mark.parametrize("training", [False, True])
def test_mixed_precision_dtypes(mixed_bfloat16, training):
    block = TransformerDecoderBlock(HEADS, FFN, dropout=0.1)
    outputs = block(random_inputs(), encoder_outputs(), padding_mask=PADDING_MASK,
                    encoder_padding_mask=ENCODER_MASK, training=training)
    assert dtype_of(outputs) == "bfloat16"
    assert block.weights and all(dtype_of(w) == "float32" for w in block.weights)
    assert np.isfinite(to_numpy(ops.cast(outputs, "float32"))).all()


def test_num_heads_must_divide_width():
    with pytest.raises(ValueError, match=r"8.*num_heads=3"):
        TransformerDecoderBlock(num_heads=3, intermediate_dim=FFN)(
            random_inputs(), encoder_outputs())
