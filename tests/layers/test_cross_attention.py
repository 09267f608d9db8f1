"""MultiHeadCrossAttention: serialization, training, golden numerics with encoder padding,
the encoder key/value cache, dtypes, errors.

Backend-agnostic: keras, keras.ops and NumPy only (tests/test_backends.py reruns this
file on JAX).
"""

import numpy as np
import pytest

import keras
from keras import ops
from helpers import dtype_of, to_numpy

from tfllm.layers import MultiHeadCrossAttention

# The attention tests' shapes, plus a source of another length (SOURCE) so a swapped
# query/key axis cannot pass.
BATCH, SEQ, HIDDEN, HEADS = 2, 8, 8, 2
SOURCE, ENCODER_HIDDEN = 6, 12
TOL = dict(atol=1e-5, rtol=1e-5)
# Right padding and a hole; every row keeps a real source token.
ENCODER_MASK = np.array([[1, 1, 1, 1, 0, 0], [1, 0, 1, 1, 1, 1]], dtype="int32")


def random_inputs(seed=0, shape=(BATCH, SEQ, HIDDEN)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def encoder_outputs(seed=1, width=HIDDEN):
    return random_inputs(seed, (BATCH, SOURCE, width))


def built_layer(seed=0, encoder_width=HIDDEN, **kwargs):
    """A built layer whose every weight (biases included) is random and non-zero."""
    layer = MultiHeadCrossAttention(**{"num_heads": HEADS, **kwargs})
    layer.build((None, None, HIDDEN), (None, None, encoder_width))
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        variable.assign(rng.normal(scale=0.5, size=variable.shape).astype("float32"))
    return layer


# --- NumPy reference -------------------------------------------------------------------

def reference_cross_attention(x, memory, q_kernel, q_bias, kv_kernel, kv_bias, out_kernel,
                              out_bias, num_heads, encoder_padding_mask=None):
    """Plain NumPy multi-head attention of `x` onto `memory`, keys/values from the fused
    [k | v] projection, padded memory positions masked out."""
    batch, length, hidden = x.shape
    source = memory.shape[1]
    head_dim = hidden // num_heads

    def split_heads(t, steps):  # (batch, steps, hidden) -> (batch, heads, steps, head_dim)
        return t.reshape(batch, steps, num_heads, head_dim).transpose(0, 2, 1, 3)

    q = split_heads(x @ q_kernel + q_bias, length)
    kv = memory @ kv_kernel + kv_bias  # (batch, source, 2 * hidden)
    k, v = split_heads(kv[..., :hidden], source), split_heads(kv[..., hidden:], source)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim)  # (batch, heads, len, source)
    if encoder_padding_mask is not None:
        real = np.asarray(encoder_padding_mask, bool)[:, None, None, :]
        scores = np.where(real, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    merged = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
    return merged @ out_kernel + out_bias


def reference_for(layer, x, memory, encoder_padding_mask=None):
    weights = [*layer.query_dense.get_weights(), *layer.key_value.get_weights(),
               *layer.output_dense.get_weights()]
    return reference_cross_attention(x.astype("float64"), memory.astype("float64"),
                                     *weights, layer.num_heads, encoder_padding_mask)


# --- Tests ------------------------------------------------------------------------------

def test_output_shape_follows_the_queries():
    layer = MultiHeadCrossAttention(num_heads=HEADS)
    assert tuple(layer(random_inputs(), encoder_outputs()).shape) == (BATCH, SEQ, HIDDEN)


def test_config_round_trip_gives_equal_config_and_outputs():
    init = keras.initializers.RandomNormal(stddev=0.02)
    layer = built_layer(dropout=0.1, use_bias=False, kernel_initializer=init, name="cross")
    config = layer.get_config()
    for key in ("num_heads", "dropout", "use_bias", "kernel_initializer"):
        assert key in config
    restored = MultiHeadCrossAttention.from_config(config)
    assert restored.get_config() == config
    restored.build((None, None, HIDDEN), (None, None, HIDDEN))
    restored.set_weights(layer.get_weights())
    x, memory = random_inputs(), encoder_outputs()
    np.testing.assert_array_equal(to_numpy(restored(x, memory)), to_numpy(layer(x, memory)))


def functional_model():
    hidden = keras.Input((None, HIDDEN), name="hidden")
    memory = keras.Input((None, ENCODER_HIDDEN), name="memory")
    mask = keras.Input((None,), dtype="int32", name="encoder_padding_mask")
    outputs = MultiHeadCrossAttention(HEADS, name="cross_attention")(
        hidden, memory, encoder_padding_mask=mask)
    return keras.Model([hidden, memory, mask], outputs)


def test_keras_save_and_load_gives_identical_outputs(tmp_path):
    model = functional_model()
    for variable in model.weights:  # non-zero biases too
        variable.assign(np.random.default_rng(1).normal(size=variable.shape))
    inputs = [random_inputs(), encoder_outputs(width=ENCODER_HIDDEN), ENCODER_MASK]
    expected = to_numpy(model(inputs))
    path = str(tmp_path / "cross_attention.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("cross_attention"), MultiHeadCrossAttention)
    np.testing.assert_array_equal(to_numpy(loaded(inputs)), expected)


def test_functional_model_trains():
    hidden = keras.Input((SEQ, HIDDEN))
    memory = keras.Input((SOURCE, ENCODER_HIDDEN))
    mask = keras.Input((SOURCE,), dtype="bool")
    x = MultiHeadCrossAttention(HEADS)(hidden, memory, encoder_padding_mask=mask)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model([hidden, memory, mask], keras.layers.Dense(1)(x))
    # One step: on TensorFlow tracing a graph costs more than running it eagerly; eager
    # JAX would compile every op apart, so it keeps its jit.
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse",
                  run_eagerly=keras.backend.backend() == "tensorflow")
    inputs = [random_inputs(), encoder_outputs(width=ENCODER_HIDDEN), ENCODER_MASK.astype(bool)]
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(inputs, np.ones((BATCH, 1), "float32"), batch_size=BATCH, epochs=1,
                        verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.array_equal(b, a) for b, a in zip(before, model.get_weights(), strict=True)]
    assert all(changed), "every weight should move after one Adam step"


@pytest.mark.parametrize("encoder_padding_mask", [None, ENCODER_MASK], ids=["all-real", "padded"])
@pytest.mark.parametrize("encoder_width", [HIDDEN, ENCODER_HIDDEN], ids=["same", "wider"])
@pytest.mark.parametrize("path", ["inference", "training"])
def test_matches_numpy_reference(encoder_padding_mask, encoder_width, path):
    # "training" runs the explicit-softmax path used for attention dropout, with a rate
    # so small that no unit is dropped in practice: it must compute the same attention.
    dropout = 1e-9 if path == "training" else 0.0
    layer = built_layer(encoder_width=encoder_width, dropout=dropout)
    x, memory = random_inputs(seed=3), encoder_outputs(seed=4, width=encoder_width)
    outputs = layer(x, memory, encoder_padding_mask=encoder_padding_mask,
                    training=path == "training")
    expected = reference_for(layer, x, memory, encoder_padding_mask)
    np.testing.assert_allclose(to_numpy(outputs), expected, **TOL)


def test_padded_encoder_positions_are_ignored():
    layer = built_layer()
    x, memory = random_inputs(seed=5), encoder_outputs(seed=6)
    expected = to_numpy(layer(x, memory, encoder_padding_mask=ENCODER_MASK))
    garbage = np.where(ENCODER_MASK[..., None] == 1, memory, 1e3).astype("float32")
    outputs = layer(x, garbage, encoder_padding_mask=ENCODER_MASK)
    np.testing.assert_allclose(to_numpy(outputs), expected, **TOL)


def test_encoder_cache_gives_the_same_outputs_step_by_step():
    layer = built_layer(encoder_width=ENCODER_HIDDEN)
    x, memory = random_inputs(seed=7), encoder_outputs(seed=8, width=ENCODER_HIDDEN)
    full = to_numpy(layer(x, memory, encoder_padding_mask=ENCODER_MASK))
    key, value = layer.cache_encoder(memory)
    assert tuple(key.shape) == tuple(value.shape) == (BATCH, SOURCE, HEADS, HIDDEN // HEADS)
    for i in range(SEQ):  # queries are independent: one step reads what the full pass did
        step = layer(x[:, i:i + 1], encoder_padding_mask=ENCODER_MASK,
                     encoder_cache=(key, value))
        np.testing.assert_allclose(to_numpy(step)[:, 0], full[:, i], **TOL)


def test_fully_padded_source_gives_finite_outputs():
    layer = built_layer()
    outputs = layer(random_inputs(), encoder_outputs(),
                    encoder_padding_mask=np.zeros((BATCH, SOURCE), "int32"))
    assert np.isfinite(to_numpy(outputs)).all()


def test_dropout_only_in_training():
    layer = built_layer(dropout=0.5)
    x, memory = random_inputs(seed=9), encoder_outputs()
    np.testing.assert_array_equal(to_numpy(layer(x, memory)),
                                  to_numpy(layer(x, memory, training=False)))
    first, second = layer(x, memory, training=True), layer(x, memory, training=True)
    assert not np.allclose(to_numpy(first), to_numpy(second))


@pytest.mark.parametrize("training", [False, True])
def test_mixed_precision_dtypes(mixed_bfloat16, training):
    layer = MultiHeadCrossAttention(HEADS, dropout=0.1)
    x, memory = random_inputs(), encoder_outputs()
    outputs = layer(x, memory, encoder_padding_mask=ENCODER_MASK, training=training)
    assert dtype_of(outputs) == "bfloat16"
    assert layer.weights and all(dtype_of(w) == "float32" for w in layer.weights)
    key, _ = layer.cache_encoder(memory)
    assert dtype_of(key) == "bfloat16"
    if not training:  # the float32 softmax keeps bfloat16 close to a float32 reference
        expected = reference_for(layer, x, memory, ENCODER_MASK)
        np.testing.assert_allclose(to_numpy(ops.cast(outputs, "float32")), expected,
                                   atol=0.1, rtol=0.05)


def test_needs_encoder_outputs_or_cache():
    layer = built_layer()
    with pytest.raises(ValueError, match="encoder_outputs or an encoder_cache"):
        layer(random_inputs())


def test_num_heads_must_divide_width():
    with pytest.raises(ValueError, match=r"8.*num_heads=3"):
        MultiHeadCrossAttention(num_heads=3)(random_inputs(), encoder_outputs())
