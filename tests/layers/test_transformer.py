"""TransformerBlock: serialization, training (Sequential and a Functional classifier),
golden numerics against NumPy, KV cache, dropout, dtypes, errors.

Backend-agnostic: keras, keras.ops and NumPy only.
"""

import numpy as np
import pytest

import keras
from keras import ops
from helpers import dtype_of, to_numpy

from tfllm.layers import PositionalEmbedding, TransformerBlock

# The same small shapes as the attention and GPT tests (eager JAX compiles per shape).
BATCH, SEQ, HIDDEN, HEADS, FFN = 2, 8, 8, 2, 32
PROMPT = 4
TOL = dict(atol=1e-5, rtol=1e-5)
PADDING_MASK = np.array([[1, 1, 1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 1, 1, 0, 1]], dtype="int32")


def random_inputs(seed=0, shape=(BATCH, SEQ, HIDDEN)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def built_block(seed=0, **kwargs):
    """A built block whose every weight (norm scales, biases too) is random."""
    block = TransformerBlock(**{"num_heads": HEADS, "intermediate_dim": FFN, **kwargs})
    block.build((None, None, HIDDEN))
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


def np_attention(x, qkv_kernel, qkv_bias, out_kernel, out_bias, num_heads, causal,
                 padding_mask=None):
    batch, seq, hidden = x.shape
    head_dim = hidden // num_heads
    fused = x @ qkv_kernel + qkv_bias
    q, k, v = (fused[..., i * hidden:(i + 1) * hidden]
               .reshape(batch, seq, num_heads, head_dim).transpose(0, 2, 1, 3)
               for i in range(3))  # (batch, heads, seq, head_dim)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim)
    allowed = np.ones((batch, seq, seq), bool)
    if causal:
        allowed &= np.tril(np.ones((seq, seq), bool))[None]
    if padding_mask is not None:
        allowed &= np.asarray(padding_mask, bool)[:, None, :]
    scores = np.where(allowed[:, None], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    merged = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
    return merged @ out_kernel + out_bias


def dense_weights(layer):
    """(kernel, bias) of a Dense layer, with a zero bias when it has none."""
    weights = layer.get_weights()
    kernel = weights[0]
    return kernel, weights[1] if len(weights) > 1 else np.zeros(kernel.shape[-1])


def reference_block(block, x, padding_mask=None):
    """Pre-norm GPT-2 block: x + attn(ln1(x)), then x + W2 gelu(W1 ln2(x))."""
    eps = block.layer_norm_epsilon
    x = x.astype("float64")
    attn = block.attention
    h = np_layer_norm(x, *block.attention_norm.get_weights(), eps)
    x = x + np_attention(h, *dense_weights(attn.qkv), *dense_weights(attn.output_dense),
                         block.num_heads, block.causal, padding_mask)
    h = np_layer_norm(x, *block.ffn_norm.get_weights(), eps)
    w1, b1 = dense_weights(block.ffn_in)
    w2, b2 = dense_weights(block.ffn_out)
    return x + np_gelu_tanh(h @ w1 + b1) @ w2 + b2


# --- Tests ------------------------------------------------------------------------------

def test_output_shape():
    block = TransformerBlock(HEADS, FFN)
    assert tuple(block(random_inputs()).shape) == (BATCH, SEQ, HIDDEN)


def test_config_round_trip_gives_equal_config_and_outputs():
    init = keras.initializers.RandomNormal(stddev=0.02)
    block = built_block(dropout=0.1, causal=False, layer_norm_epsilon=1e-6, use_bias=False,
                        kernel_initializer=init, name="block")
    config = block.get_config()
    for key in ("num_heads", "intermediate_dim", "dropout", "causal",
                "layer_norm_epsilon", "use_bias", "kernel_initializer"):
        assert key in config
    restored = TransformerBlock.from_config(config)
    assert restored.get_config() == config
    restored.build((None, None, HIDDEN))
    restored.set_weights(block.get_weights())
    x = random_inputs()
    np.testing.assert_array_equal(to_numpy(restored(x)), to_numpy(block(x)))


def classifier(num_classes=3):
    """A text classifier as another project would write it with tfllm layers."""
    ids = keras.Input((SEQ,), dtype="int32", name="token_ids")
    x = PositionalEmbedding(37, 16, HIDDEN, name="embedding")(ids)
    x = TransformerBlock(HEADS, FFN, causal=False, name="encoder")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head")(x)
    return keras.Model(ids, outputs, name="classifier")


def classifier_data(n=BATCH):
    rng = np.random.default_rng(1)
    return rng.integers(1, 37, size=(n, SEQ)).astype("int32"), rng.integers(0, 3, size=n)


def test_keras_save_and_load_gives_identical_outputs(tmp_path):
    # Both a bare block (random non-zero weights) and the classifier with all layers.
    hidden = keras.Input((None, HIDDEN))
    mask = keras.Input((None,), dtype="int32")
    block = TransformerBlock(HEADS, FFN, name="block")
    bare = keras.Model([hidden, mask], block(hidden, padding_mask=mask))
    for variable in bare.weights:
        variable.assign(np.random.default_rng(2).normal(scale=0.5, size=variable.shape))
    model = classifier()
    cases = [(bare, [random_inputs(), PADDING_MASK]), (model, classifier_data()[0])]
    for i, (model, inputs) in enumerate(cases):
        expected = to_numpy(model(inputs))
        path = str(tmp_path / f"model_{i}.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        np.testing.assert_array_equal(to_numpy(loaded(inputs)), expected)


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
        TransformerBlock(HEADS, FFN),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
    ])
    _fit_once_changes_weights(model, random_inputs(), np.ones((BATCH, 1), "float32"),
                              loss="mse")


def test_functional_classifier_trains():
    model = classifier()
    x, y = classifier_data()
    assert tuple(model(x).shape) == (BATCH, 3)
    _fit_once_changes_weights(model, x, y, loss="sparse_categorical_crossentropy")


@pytest.mark.parametrize("causal,padding_mask", [
    (True, None), (False, None), (True, PADDING_MASK), (False, PADDING_MASK)],
    ids=["causal", "bidirectional", "causal+padding", "bidirectional+padding"])
def test_matches_numpy_reference(causal, padding_mask):
    block = built_block(causal=causal, layer_norm_epsilon=1e-5)
    x = random_inputs(seed=3)
    outputs = block(x, padding_mask=padding_mask)
    np.testing.assert_allclose(to_numpy(outputs), reference_block(block, x, padding_mask),
                               **TOL)


def test_without_bias():
    block = built_block(use_bias=False)
    assert block.attention.qkv.bias is None and block.ffn_in.bias is None
    x = random_inputs(seed=4)
    np.testing.assert_allclose(to_numpy(block(x)), reference_block(block, x), **TOL)


def test_kv_cache_prefill_and_steps_match_full_causal_pass():
    block = built_block()
    x = random_inputs(seed=5)
    full = to_numpy(block(x))
    head_dim = HIDDEN // HEADS
    shape = (BATCH, SEQ, HEADS, head_dim)
    cache = (ops.zeros(shape), ops.zeros(shape))
    outputs, cache = block(x[:, :PROMPT], cache=cache, cache_index=0)
    np.testing.assert_allclose(to_numpy(outputs), full[:, :PROMPT], **TOL)
    for i in range(PROMPT, SEQ):
        step, cache = block(x[:, i:i + 1], cache=cache, cache_index=i)
        np.testing.assert_allclose(to_numpy(step)[:, 0], full[:, i], **TOL)


def test_dropout_only_in_training():
    block = built_block(dropout=0.5)
    x = random_inputs(seed=6)
    np.testing.assert_array_equal(to_numpy(block(x, training=False)),
                                  to_numpy(block(x, training=False)))
    first, second = block(x, training=True), block(x, training=True)
    assert not np.allclose(to_numpy(first), to_numpy(second))


def block_gradients(block, x, training):
    """Gradients of sum(sin(block(x))) for x and each trainable weight, compiled (XLA on
    TensorFlow, jit on JAX) as a train step is."""
    if keras.backend.backend() == "jax":
        import jax

        def loss(weights, inputs):
            outputs, _ = block.stateless_call(weights, [], inputs, training=training)
            return jax.numpy.sum(jax.numpy.sin(outputs))

        weights = [v.value for v in block.trainable_variables]
        weight_grads, input_grad = jax.jit(jax.grad(loss, argnums=(0, 1)))(weights, x)
        return [input_grad, *weight_grads]
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def gradients(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(tf.sin(block(inputs, training=training)))
        return tape.gradient(loss, [inputs] + block.trainable_variables)

    return gradients(tf.constant(x))


def test_training_gradients_equal_those_of_the_inference_pass():
    # Without dropout the two passes compute the same function; in training the GELU's
    # backward recomputes it from its input instead of keeping its intermediates.
    block = built_block()
    x = random_inputs(seed=8)
    for trained, plain in zip(block_gradients(block, x, training=True),
                              block_gradients(block, x, training=False), strict=True):
        np.testing.assert_allclose(to_numpy(trained), to_numpy(plain), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("training", [False, True])
def test_mixed_precision_dtypes(mixed_bfloat16, training):
    block = TransformerBlock(HEADS, FFN, dropout=0.1)
    outputs = block(random_inputs(), padding_mask=PADDING_MASK, training=training)
    assert dtype_of(outputs) == "bfloat16"
    assert block.weights and all(dtype_of(w) == "float32" for w in block.weights)
    assert np.isfinite(to_numpy(ops.cast(outputs, "float32"))).all()


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_declared_output_spec_is_what_the_block_computes(policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        block = TransformerBlock(HEADS, FFN)
        computed = block(random_inputs(), padding_mask=PADDING_MASK)
        declared = block(keras.KerasTensor((BATCH, SEQ, HIDDEN)),
                         padding_mask=keras.KerasTensor((BATCH, SEQ), "bool"))
        assert (tuple(declared.shape), declared.dtype) == (tuple(computed.shape),
                                                           dtype_of(computed))
        assert block(keras.KerasTensor((None, None, HIDDEN))).shape == (None, None, HIDDEN)
    finally:
        keras.config.set_dtype_policy(previous)


def test_num_heads_must_divide_width():
    with pytest.raises(ValueError, match=r"8.*num_heads=3"):
        TransformerBlock(num_heads=3, intermediate_dim=FFN)(random_inputs())
