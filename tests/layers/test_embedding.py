"""PositionalEmbedding: serialization, training, learned/sinusoidal numerics, padding,
reverse (tied) logits, dtypes, errors.

Backend-agnostic: keras, keras.ops and NumPy only.
"""

import numpy as np
import pytest

import keras
from helpers import dtype_of, to_numpy

from tfllm.layers import PositionalEmbedding, positions_from, sinusoidal_encoding

# The same small shapes as the other layer and GPT tests (eager JAX compiles per shape).
VOCAB, CONTEXT, DIM = 37, 16, 8
TOL = dict(atol=1e-5, rtol=1e-5)
POSITION_TYPES = ["learned", "sinusoidal"]


def token_ids(seed=0, shape=(2, 8)):
    return np.random.default_rng(seed).integers(1, VOCAB, size=shape).astype("int32")


def built_layer(position_type="learned", dim=DIM, **kwargs):
    layer = PositionalEmbedding(VOCAB, CONTEXT, dim, position_type=position_type, **kwargs)
    layer.build((None, None))
    return layer


def np_sinusoidal(positions, dim):
    """Transformer sine/cosine table: sin in the first half, cos in the second."""
    half = dim // 2
    inv_freq = 10000.0 ** (-np.arange(half) / half)
    angles = np.asarray(positions, "float64")[..., None] * inv_freq
    table = np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)
    if dim % 2:
        table = np.concatenate([table, np.zeros(table.shape[:-1] + (1,))], axis=-1)
    return table


def test_output_shape_and_weights():
    learned = built_layer("learned")
    assert tuple(learned(token_ids()).shape) == (2, 8, DIM)
    assert sorted(tuple(w.shape) for w in learned.weights) == [(CONTEXT, DIM), (VOCAB, DIM)]
    sinusoidal = built_layer("sinusoidal")
    assert [tuple(w.shape) for w in sinusoidal.weights] == [(VOCAB, DIM)]  # nothing learned


@pytest.mark.parametrize("position_type", POSITION_TYPES)
def test_config_round_trip_gives_equal_config_and_outputs(position_type):
    layer = built_layer(position_type, embeddings_initializer="normal", name="embed")
    config = layer.get_config()
    for key in ("vocab_size", "sequence_length", "embed_dim", "position_type",
                "embeddings_initializer"):
        assert key in config
    restored = PositionalEmbedding.from_config(config)
    assert restored.get_config() == config
    restored.build((None, None))
    restored.set_weights(layer.get_weights())
    ids = token_ids()
    np.testing.assert_array_equal(to_numpy(restored(ids)), to_numpy(layer(ids)))


def test_keras_save_and_load_gives_identical_outputs(tmp_path):
    # A tiny tied-embedding LM head: the same layer embeds and un-embeds.
    ids = keras.Input((None,), dtype="int32")
    embedding = PositionalEmbedding(VOCAB, CONTEXT, DIM, name="embedding")
    hidden = keras.layers.Dense(DIM, activation="tanh")(embedding(ids))
    model = keras.Model(ids, embedding(hidden, reverse=True))
    inputs = token_ids(1)
    expected = to_numpy(model(inputs))
    assert expected.shape == (2, 8, VOCAB)

    path = str(tmp_path / "embedding.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("embedding"), PositionalEmbedding)
    np.testing.assert_array_equal(to_numpy(loaded(inputs)), expected)


def test_sequential_model_trains():
    model = keras.Sequential([
        keras.Input((8,), dtype="int32"),
        PositionalEmbedding(VOCAB, CONTEXT, DIM),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    table_before = to_numpy(model.layers[0].position_embeddings)
    before = [w.copy() for w in model.get_weights()]
    model.fit(token_ids(2), np.ones((2, 1)), batch_size=2, epochs=1, verbose=0)
    after = model.get_weights()
    assert all(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    assert not np.array_equal(to_numpy(model.layers[0].position_embeddings), table_before)


def test_learned_is_token_row_plus_position_row():
    layer = built_layer("learned")
    ids = token_ids(3)
    tokens, table = to_numpy(layer.token_embeddings), to_numpy(layer.position_embeddings)
    expected = tokens[ids] + table[np.arange(ids.shape[1])][None]
    np.testing.assert_allclose(to_numpy(layer(ids)), expected, **TOL)


@pytest.mark.parametrize("dim", [DIM, 7])
def test_sinusoidal_is_token_row_plus_sine_cosine(dim):
    layer = built_layer("sinusoidal", dim=dim)
    ids = token_ids(4)
    tokens = to_numpy(layer.token_embeddings)
    expected = tokens[ids] + np_sinusoidal(np.arange(8), dim)[None]
    np.testing.assert_allclose(to_numpy(layer(ids)), expected, **TOL)
    positions = np.arange(CONTEXT)
    np.testing.assert_allclose(to_numpy(sinusoidal_encoding(positions, dim)),
                               np_sinusoidal(positions, dim), **TOL)


@pytest.mark.parametrize("position_type", POSITION_TYPES)
def test_padding_mask_gives_real_tokens_their_unpadded_embeddings(position_type):
    layer = built_layer(position_type)
    real = token_ids(5, (2, 4))  # two unpadded sequences
    unpadded = to_numpy(layer(real))
    for left in (0, 4, 2):  # right, left and both-sides padding (pad id 0)
        padded = np.pad(real, [(0, 0), (left, 4 - left)])
        outputs = to_numpy(layer(padded, padding_mask=padded != 0))
        np.testing.assert_allclose(outputs[:, left:left + 4], unpadded, **TOL,
                                   err_msg=f"{left} pads on the left")
    # Without the mask, left padding shifts the positions: a different embedding.
    shifted = to_numpy(layer(np.pad(real, [(0, 0), (4, 0)])))[:, 4:]
    assert not np.allclose(shifted, unpadded)


def test_positions_from_counts_real_tokens():
    ids = np.array([[0, 0, 5, 6], [5, 6, 7, 8], [5, 6, 0, 0]])
    np.testing.assert_array_equal(to_numpy(positions_from(ids)), [[0, 1, 2, 3]] * 3)
    np.testing.assert_array_equal(to_numpy(positions_from(ids, ids != 0)),
                                  [[0, 0, 0, 1], [0, 1, 2, 3], [0, 1, 1, 1]])


@pytest.mark.parametrize("position_type", POSITION_TYPES)
def test_explicit_positions(position_type):
    layer = built_layer(position_type)
    ids = token_ids(6)
    default = to_numpy(layer(ids))
    positions = np.broadcast_to(np.arange(8, dtype="int32"), ids.shape)
    np.testing.assert_allclose(to_numpy(layer(ids, positions=positions)), default, **TOL)
    # One token at position 4 (a decoding step) equals column 4 of the full pass.
    step = to_numpy(layer(ids[:, 4:5], positions=np.full((2, 1), 4, "int32")))
    np.testing.assert_allclose(step[:, 0], default[:, 4], **TOL)


def test_reverse_gives_logits_against_token_embeddings():
    layer = built_layer()
    hidden = np.random.default_rng(7).normal(size=(2, 8, DIM)).astype("float32")
    logits = to_numpy(layer(hidden, reverse=True))
    assert logits.shape == (2, 8, VOCAB)
    expected = hidden @ to_numpy(layer.token_embeddings).T
    np.testing.assert_allclose(logits, expected, **TOL)


@pytest.mark.parametrize("position_type", POSITION_TYPES)
def test_mixed_precision_dtypes(mixed_bfloat16, position_type):
    layer = PositionalEmbedding(VOCAB, CONTEXT, DIM, position_type=position_type)
    outputs = layer(token_ids())
    assert dtype_of(outputs) == "bfloat16"
    assert all(dtype_of(w) == "float32" for w in layer.weights)
    logits = layer(outputs, reverse=True)
    assert dtype_of(logits) == "bfloat16"
    assert tuple(logits.shape) == (2, 8, VOCAB)


def test_unknown_position_type_is_an_error():
    with pytest.raises(ValueError, match="'rotary'"):
        PositionalEmbedding(VOCAB, CONTEXT, DIM, position_type="rotary")
