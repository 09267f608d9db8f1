"""build_gpt / init_cache / call_with_cache: shapes, parameter counts, causality,
padding invariance, cached decoding, save/load, training, mixed precision.

Backend-agnostic: keras, keras.ops and NumPy only.
"""

import gc

import numpy as np
import pytest

import keras
from helpers import dtype_of, to_numpy

from tfllm.models import GPTConfig, build_gpt, call_with_cache, init_cache

TOL = dict(atol=1e-5, rtol=1e-5)
DECODE_TOL = dict(atol=1e-4, rtol=1e-4)
# Few distinct shapes: eager JAX compiles each op once per shape, so the tests reuse
# (BATCH, SEQ) for full passes and (BATCH, PROMPT) for prefills.
BATCH, SEQ, PROMPT = 2, 8, 4


def tiny_config(**overrides):
    return GPTConfig(**{"vocab_size": 37, "context_length": 16, "num_layers": 2,
                        "num_heads": 2, "embed_dim": 8, **overrides})


def token_ids(shape, seed=0, vocab=37):
    """Random ids that are never the pad id 0."""
    return np.random.default_rng(seed).integers(1, vocab, size=shape).astype("int32")


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_gpt(tiny_config())


@pytest.fixture
def zeros_init(monkeypatch):
    """build_gpt with zeros for its RandomNormal: for tests that only count parameters.

    Initial values do not change the count; drawing them (and, on JAX, compiling the
    sampler for each new weight shape) costs seconds for nothing.
    """
    monkeypatch.setattr(keras.initializers, "RandomNormal",
                        lambda *args, **kwargs: keras.initializers.Zeros())


def expected_param_count(c):
    """GPT-2 layout by hand: embeddings, L x (2 norms, qkv, out, ffn), final norm, head."""
    e, i = c.embed_dim, c.intermediate_dim
    per_block = 2 * (2 * e) + (e * 3 * e + 3 * e) + (e * e + e) + (e * i + i) + (i * e + e)
    count = c.vocab_size * e + c.num_layers * per_block + 2 * e
    if c.position_type == "learned":
        count += c.context_length * e
    if not c.tie_embeddings:
        count += c.vocab_size * e  # lm_head, no bias
    return count


def test_output_shape_and_dtype(model):
    assert tuple(model.output.shape) == (None, None, 37)
    logits = model(token_ids((BATCH, SEQ)))
    assert tuple(logits.shape) == (BATCH, SEQ, 37)
    assert dtype_of(logits) == "float32"
    assert tuple(model(token_ids((BATCH, PROMPT))).shape) == (BATCH, PROMPT, 37)


@pytest.mark.parametrize("overrides", [
    {}, {"tie_embeddings": False}, {"position_type": "sinusoidal"},
    {"intermediate_dim": 12, "num_layers": 3}])
def test_param_count_matches_hand_formula(zeros_init, overrides):
    config = tiny_config(**overrides)
    assert build_gpt(config).count_params() == expected_param_count(config)


def test_tied_embeddings_save_vocab_times_embed_params(zeros_init):
    tied = build_gpt(tiny_config(tie_embeddings=True))
    untied = build_gpt(tiny_config(tie_embeddings=False))
    assert untied.count_params() - tied.count_params() == 37 * 8
    assert "lm_head" in [layer.name for layer in untied.layers]
    assert "lm_head" not in [layer.name for layer in tied.layers]


def test_gpt2_preset_has_124m_params(zeros_init):
    # Builds the real model (~0.5 GB of float32, zeros instead of 124M random draws).
    config = GPTConfig.from_preset("gpt2")
    assert expected_param_count(config) == 124_439_808
    gpt2 = build_gpt(config)
    try:
        assert gpt2.count_params() == 124_439_808
    finally:
        del gpt2
        gc.collect()


@pytest.mark.parametrize("t", [0, 3, 7])
def test_causality(model, t):
    ids = token_ids((BATCH, SEQ), seed=1)
    changed = ids.copy()
    changed[:, t] = ids[:, t] % 36 + 1  # a different real token
    before, after = to_numpy(model(ids)), to_numpy(model(changed))
    np.testing.assert_allclose(after[:, :t], before[:, :t], atol=1e-6, rtol=1e-6)
    assert not np.allclose(after[:, t], before[:, t], atol=1e-4)


@pytest.mark.parametrize("overrides", [{}, {"position_type": "sinusoidal",
                                            "tie_embeddings": False}])
def test_padding_leaves_real_logits_unchanged(overrides):
    model = build_gpt(tiny_config(**overrides))
    real = token_ids((BATCH, PROMPT), seed=2)  # two unpadded sequences
    expected = to_numpy(model(real))
    pads = SEQ - PROMPT
    for left in (0, pads, 1, 3):  # right, left, and both-sides padding
        padded = np.pad(real, [(0, 0), (left, pads - left)])
        logits = to_numpy(model(padded))
        assert np.isfinite(logits).all(), f"{left} pads on the left"
        np.testing.assert_allclose(logits[:, left:left + PROMPT], expected, **TOL,
                                   err_msg=f"{left} pads on the left")
    # Rows padded differently in one batch.
    padded = np.stack([np.pad(real[0], (0, pads)), np.pad(real[1], (pads, 0))])
    logits = to_numpy(model(padded))
    np.testing.assert_allclose(logits[0, :PROMPT], expected[0], **TOL)
    np.testing.assert_allclose(logits[1, pads:], expected[1], **TOL)


def decode_and_compare(model, full_ids, prompt_length, pad_id=0):
    """Prefill `prompt_length` tokens, then feed the rest one at a time; every step's
    logits must equal the full forward pass at the same (real) positions."""
    batch, total = full_ids.shape
    full = to_numpy(model(full_ids))
    real = full_ids != pad_id
    # Position of a token = the number of real tokens before it.
    positions = np.maximum(np.cumsum(real, axis=1) - 1, 0).astype("int32")
    cache_mask = np.zeros((batch, total), "int32")
    cache_mask[:, :prompt_length] = real[:, :prompt_length]

    caches = init_cache(model, batch, total)
    logits, caches = call_with_cache(model, full_ids[:, :prompt_length], caches, 0,
                                     cache_mask, positions[:, :prompt_length])
    assert dtype_of(logits) == "float32"
    logits = to_numpy(logits)
    prompt_real = real[:, :prompt_length]
    np.testing.assert_allclose(logits[prompt_real], full[:, :prompt_length][prompt_real],
                               **DECODE_TOL)
    for i in range(prompt_length, total):
        cache_mask[:, i] = real[:, i]
        step, caches = call_with_cache(model, full_ids[:, i:i + 1], caches, i, cache_mask,
                                       positions[:, i:i + 1])
        assert tuple(step.shape) == (batch, 1, model.output.shape[-1])
        np.testing.assert_allclose(to_numpy(step)[:, 0], full[:, i], **DECODE_TOL,
                                   err_msg=f"step at position {i}")
    assert len(caches) == len([layer for layer in model.layers if "block" in layer.name])


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": False,
                                            "position_type": "sinusoidal"}],
                         ids=["tied-learned", "untied-sinusoidal"])
@pytest.mark.parametrize("prompt_length", [1, PROMPT])
def test_cached_decoding_matches_full_pass(overrides, prompt_length):
    model = build_gpt(tiny_config(**overrides))
    decode_and_compare(model, token_ids((BATCH, SEQ), seed=3), prompt_length)


def test_cached_decoding_with_left_padded_batch(model):
    # Rows left-padded to different lengths (1 and 3 pads) in a 4-slot prompt, then
    # four generated tokens.
    full_ids = token_ids((BATCH, SEQ), seed=4)
    full_ids[0, :1] = 0
    full_ids[1, :3] = 0
    decode_and_compare(model, full_ids, prompt_length=PROMPT)


def test_init_cache_shapes(model):
    caches = init_cache(model, batch_size=BATCH, max_length=SEQ)
    assert len(caches) == 2
    for key, value in caches:
        assert tuple(key.shape) == tuple(value.shape) == (BATCH, SEQ, 2, 4)
        assert dtype_of(key) == "float32"


@pytest.mark.parametrize("tie_embeddings", [True, False])
def test_keras_save_and_load_gives_identical_logits(tmp_path, tie_embeddings):
    model = build_gpt(tiny_config(tie_embeddings=tie_embeddings))
    ids = token_ids((BATCH, SEQ), seed=6)
    ids[0, :2] = 0  # with padding, so the mask ops are saved too
    expected = to_numpy(model(ids))
    path = str(tmp_path / "gpt.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(ids)), expected)
    assert loaded.count_params() == model.count_params()


def test_one_training_step_changes_weights():
    model = build_gpt(tiny_config())
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ids = token_ids((BATCH, SEQ + 1), seed=7)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(ids[:, :-1], ids[:, 1:], batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = model.get_weights()
    assert all(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def test_dropout_only_in_training():
    model = build_gpt(tiny_config(dropout=0.5))
    ids = token_ids((BATCH, SEQ), seed=8)
    np.testing.assert_array_equal(to_numpy(model(ids)), to_numpy(model(ids)))
    assert not np.allclose(to_numpy(model(ids, training=True)),
                           to_numpy(model(ids, training=True)))


def test_mixed_precision_logits_stay_float32(mixed_bfloat16):
    model = build_gpt(tiny_config())
    assert model.get_layer("block_0").compute_dtype == "bfloat16"
    assert all(dtype_of(w) == "float32" for w in model.weights)
    ids = token_ids((BATCH, SEQ), seed=9)
    logits = model(ids)
    assert dtype_of(logits) == "float32"
    assert np.isfinite(to_numpy(logits)).all()
    caches = init_cache(model, BATCH, SEQ)
    assert dtype_of(caches[0][0]) == "bfloat16"
    step, _ = call_with_cache(
        model, ids[:, :PROMPT], caches, 0, np.ones((BATCH, SEQ), "int32"),
        np.broadcast_to(np.arange(PROMPT, dtype="int32"), (BATCH, PROMPT)))
    assert dtype_of(step) == "float32"
