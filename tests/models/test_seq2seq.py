"""Seq2SeqConfig, build_seq2seq and its decoding functions (encode, init_decoder_cache,
decode_with_cache, generate): config round trips, shapes, parameter counts, causality,
padding invariance, cached decoding, save/load, dtypes, and a copy task
learnt in a few hundred steps and decoded greedily.

Backend-agnostic: keras, keras.ops and NumPy only.
"""

import dataclasses
import json
import os

import numpy as np
import pytest

import keras
from keras import ops
from helpers import dtype_of, to_numpy

from tfllm.models import (SEQ2SEQ_PRESETS, Seq2SeqConfig, build_seq2seq, decode_with_cache,
                          init_decoder_cache)
from tfllm.models.seq2seq import choose_tokens, encode, generate, hashed_uniform

TOL = dict(atol=1e-5, rtol=1e-5)
# The GPT tests' shapes (eager JAX compiles each op once per shape, and
# tests/test_backends.py runs all model tests in one process): a batch of 2, sources and
# targets of 8, prefills of 4, a width of 8. The layer tests cover sources of another
# length.
BATCH, SOURCE, SEQ, PROMPT = 2, 8, 8, 4
VOCAB, TARGET_VOCAB = 37, 23
START, STOP = 1, 2
# Tests whose subject the layer tests already check on every backend, or that only
# repeat the same keras.ops at more shapes, are left to TensorFlow: on eager JAX each
# costs tens of seconds of compiling.
tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="checked on TensorFlow only: on eager JAX it compiles for minutes; the layer "
           "tests and the other model tests cover the same ops on JAX")


def tiny_config(**overrides):
    return Seq2SeqConfig(**{"vocab_size": VOCAB, "context_length": 16,
                            "num_encoder_layers": 2, "num_decoder_layers": 2,
                            "num_heads": 2, "embed_dim": 8, **overrides})


SEPARATE = dict(target_vocab_size=TARGET_VOCAB, tie_embeddings=False,
                position_type="sinusoidal", num_encoder_layers=1, num_decoder_layers=2,
                intermediate_dim=12)


def token_ids(shape, seed=0, vocab=TARGET_VOCAB):
    """Random ids that are never the pad id 0 (and fit both vocabularies)."""
    return np.random.default_rng(seed).integers(1, vocab, size=shape).astype("int32")


def padded_source(seed=0):
    """Sources with right padding in row 0 and left padding in row 1."""
    source = token_ids((BATCH, SOURCE), seed=seed)
    source[0, 4:] = 0
    source[1, :1] = 0
    return source


@pytest.fixture(scope="module")
def model():
    """Shared vocabulary, tied head, learned positions."""
    keras.utils.set_random_seed(0)
    return build_seq2seq(tiny_config())


@pytest.fixture(scope="module")
def separate_model():
    """Separate vocabularies, untied head, sinusoidal positions, 1 + 2 layers."""
    keras.utils.set_random_seed(1)
    return build_seq2seq(tiny_config(**SEPARATE))


@pytest.fixture(scope="module")
def models(model, separate_model):
    return {"shared": model, "separate": separate_model}


@pytest.fixture
def zeros_init(monkeypatch):
    """build_seq2seq with zeros for its RandomNormal: for tests that only count
    parameters (initial values do not change the count, and drawing them costs time)."""
    monkeypatch.setattr(keras.initializers, "RandomNormal",
                        lambda *args, **kwargs: keras.initializers.Zeros())


# --- Config ------------------------------------------------------------------------------

def test_presets_build_valid_configs():
    assert {"tiny", "small", "base"} <= set(SEQ2SEQ_PRESETS)
    for name in SEQ2SEQ_PRESETS:
        config = Seq2SeqConfig.from_preset(name)
        assert config.embed_dim % config.num_heads == 0
        assert config.intermediate_dim == 4 * config.embed_dim
    base = Seq2SeqConfig.from_preset("base")
    assert (base.num_encoder_layers, base.num_decoder_layers, base.embed_dim,
            base.num_heads, base.intermediate_dim) == (6, 6, 512, 8, 2048)


def test_shared_or_separate_vocabulary():
    shared = tiny_config()
    assert shared.shared_vocab and shared.output_vocab_size == VOCAB
    separate = tiny_config(target_vocab_size=TARGET_VOCAB)
    assert not separate.shared_vocab and separate.output_vocab_size == TARGET_VOCAB


def test_overrides_and_dict_round_trip():
    config = Seq2SeqConfig.from_preset("tiny", num_decoder_layers=3, target_vocab_size=500,
                                       embed_dim=64)
    assert (config.num_decoder_layers, config.target_vocab_size) == (3, 500)
    assert config.intermediate_dim == 256  # re-derived from the new width
    assert Seq2SeqConfig.from_dict(config.to_dict()) == config
    assert set(config.to_dict()) == {f.name for f in dataclasses.fields(Seq2SeqConfig)}


def test_json_save_and_load_round_trip(tmp_path):
    config = Seq2SeqConfig.from_preset("tiny", target_vocab_size=300, tie_embeddings=False,
                                       pad_id=3)
    path = str(tmp_path / "config.json")
    config.save(path)
    assert os.listdir(tmp_path) == ["config.json"]  # no temporary file left behind
    with open(path, encoding="utf-8") as f:
        assert json.load(f)["target_vocab_size"] == 300  # plain, readable JSON
    assert Seq2SeqConfig.load(path) == config
    config.save(path)  # overwriting is fine
    assert Seq2SeqConfig.load(path) == config


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        Seq2SeqConfig.load(str(tmp_path / "nope" / "config.json"))


def test_unknown_preset_and_field():
    with pytest.raises(ValueError, match="'huge'") as error:
        Seq2SeqConfig.from_preset("huge")
    assert "tiny" in str(error.value)  # names the valid choices
    with pytest.raises(ValueError, match="num_layers"):
        Seq2SeqConfig.from_preset("tiny", num_layers=2)


@pytest.mark.parametrize("overrides,match", [
    ({"embed_dim": 100, "num_heads": 3}, r"embed_dim=100.*num_heads=3"),
    ({"num_decoder_layers": 0}, "num_decoder_layers"),
    ({"target_vocab_size": -1}, "target_vocab_size"),
    ({"target_vocab_size": 10, "pad_id": 12}, r"pad_id=12.*0\.\.9"),
    ({"dropout": 1.0}, "dropout"),
    ({"position_type": "rotary"}, "'rotary'"),
])
def test_invalid_values(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**overrides)


# --- The model ---------------------------------------------------------------------------

def test_output_shape_dtype_and_dict_inputs(model):
    assert tuple(model.output.shape) == (None, None, VOCAB)
    source, target = token_ids((BATCH, SOURCE)), token_ids((BATCH, SEQ), seed=1)
    logits = model([source, target])
    assert tuple(logits.shape) == (BATCH, SEQ, VOCAB)
    assert dtype_of(logits) == "float32"
    by_name = model({"source_ids": source, "target_ids": target})
    np.testing.assert_array_equal(to_numpy(by_name), to_numpy(logits))


def test_shared_and_separate_embedding_layers(model, separate_model):
    shared = [layer.name for layer in model.layers]
    assert "embedding" in shared and "lm_head" not in shared
    separate = separate_model
    names = [layer.name for layer in separate.layers]
    assert {"source_embedding", "target_embedding", "lm_head"} <= set(names)
    assert tuple(separate.output.shape) == (None, None, TARGET_VOCAB)
    assert separate.get_layer("source_embedding").vocab_size == VOCAB


def expected_param_count(c):
    """By hand: embeddings, encoder blocks (2 norms, qkv, out, ffn), decoder blocks
    (3 norms, qkv, out, cross query, key/value, out, ffn), two final norms, head."""
    e, i = c.embed_dim, c.intermediate_dim
    attention = (e * 3 * e + 3 * e) + (e * e + e)
    ffn = (e * i + i) + (i * e + e)
    cross = (e * e + e) + (e * 2 * e + 2 * e) + (e * e + e)
    count = c.num_encoder_layers * (2 * 2 * e + attention + ffn)
    count += c.num_decoder_layers * (3 * 2 * e + attention + cross + ffn)
    count += 2 * 2 * e
    tables = 1 if c.shared_vocab else 2
    count += (c.vocab_size + (0 if c.shared_vocab else c.target_vocab_size)) * e
    if c.position_type == "learned":
        count += tables * c.context_length * e
    if not c.tie_embeddings:
        count += e * c.output_vocab_size  # lm_head, no bias
    return count


def test_param_count_matches_hand_formula(model, separate_model, zeros_init):
    assert model.count_params() == expected_param_count(tiny_config())
    assert separate_model.count_params() == expected_param_count(tiny_config(**SEPARATE))
    # Separate vocabularies with learned positions: two position tables; a tied head.
    config = tiny_config(target_vocab_size=TARGET_VOCAB, num_encoder_layers=1,
                         num_decoder_layers=1)
    assert build_seq2seq(config).count_params() == expected_param_count(config)


@pytest.mark.parametrize("t", [0, 3, 7])
def test_target_causality(model, t):
    source, target = padded_source(), token_ids((BATCH, SEQ), seed=2)
    changed = target.copy()
    changed[:, t] = target[:, t] % (TARGET_VOCAB - 1) + 1  # a different real token
    before, after = to_numpy(model([source, target])), to_numpy(model([source, changed]))
    np.testing.assert_allclose(after[:, :t], before[:, :t], **TOL)
    assert not np.allclose(after[:, t], before[:, t], atol=1e-4)


def test_every_target_position_reads_the_source(model):
    source, target = padded_source(), token_ids((BATCH, SEQ), seed=3)
    changed = source.copy()
    changed[0, 3] = source[0, 3] % (TARGET_VOCAB - 1) + 1
    before, after = to_numpy(model([source, target])), to_numpy(model([changed, target]))
    assert not np.isclose(after[0], before[0], atol=1e-6).all(axis=-1).any()
    np.testing.assert_allclose(after[1], before[1], **TOL)  # the other row is untouched


@pytest.mark.parametrize("kind", ["shared", "separate"])
def test_source_padding_leaves_logits_unchanged(models, kind):
    model = models[kind]
    source = token_ids((BATCH, PROMPT), seed=4)  # two unpadded sources
    target = token_ids((BATCH, SEQ), seed=5)
    expected = to_numpy(model([source, target]))
    pads = SOURCE - PROMPT
    for left in (0, pads, 1):  # right, left, and both-sides padding
        padded = np.pad(source, [(0, 0), (left, pads - left)])
        np.testing.assert_allclose(to_numpy(model([padded, target])), expected, **TOL,
                                   err_msg=f"{left} pads on the left")
    padded = np.stack([np.pad(source[0], (0, pads)), np.pad(source[1], (pads, 0))])
    np.testing.assert_allclose(to_numpy(model([padded, target])), expected, **TOL)


def test_target_right_padding_leaves_real_logits_unchanged(model):
    source, target = padded_source(), token_ids((BATCH, PROMPT), seed=6)
    expected = to_numpy(model([source, target]))
    padded = np.pad(target, [(0, 0), (0, SEQ - PROMPT)])
    logits = to_numpy(model([source, padded]))
    assert np.isfinite(logits).all()
    np.testing.assert_allclose(logits[:, :PROMPT], expected, **TOL)


def decode_and_compare(model, source, target, prompt_length):
    """Prefill `prompt_length` target tokens, then feed the rest one at a time; every
    step's logits must equal the full forward pass at the same positions."""
    full = to_numpy(model([source, target]))
    encoder_outputs, source_mask = encode(model, source)
    caches = init_decoder_cache(model, encoder_outputs, max_length=SEQ)
    logits, caches = decode_with_cache(model, target[:, :prompt_length], caches, 0,
                                       source_mask)
    assert dtype_of(logits) == "float32"
    np.testing.assert_allclose(to_numpy(logits), full[:, :prompt_length], **TOL)
    for i in range(prompt_length, SEQ):
        step, caches = decode_with_cache(model, target[:, i:i + 1], caches,
                                         ops.convert_to_tensor(i, "int32"), source_mask)
        assert tuple(step.shape) == (BATCH, 1, model.output.shape[-1])
        np.testing.assert_allclose(to_numpy(step)[:, 0], full[:, i], **TOL,
                                   err_msg=f"step at position {i}")


@pytest.mark.parametrize("kind,prompt_length", [("shared", 1), ("separate", PROMPT)])
def test_cached_decoding_matches_full_pass(models, kind, prompt_length):
    decode_and_compare(models[kind], padded_source(seed=7), token_ids((BATCH, SEQ), seed=8),
                       prompt_length)


def test_init_decoder_cache_shapes(model):
    encoder_outputs, source_mask = encode(model, padded_source())
    assert tuple(encoder_outputs.shape) == (BATCH, SOURCE, 8)
    assert to_numpy(source_mask).tolist() == (padded_source() != 0).tolist()
    self_caches, encoder_caches = init_decoder_cache(model, encoder_outputs, max_length=SEQ)
    assert len(self_caches) == len(encoder_caches) == 2  # one pair per decoder block
    for (key, value), (encoder_key, encoder_value) in zip(self_caches, encoder_caches):
        assert tuple(key.shape) == tuple(value.shape) == (BATCH, SEQ, 2, 4)
        assert tuple(encoder_key.shape) == tuple(encoder_value.shape) == (BATCH, SOURCE, 2, 4)
        assert dtype_of(key) == "float32"


@pytest.mark.parametrize("kind", ["shared", "separate"])
def test_keras_save_and_load_gives_identical_logits(tmp_path, models, kind):
    model = models[kind]
    source, target = padded_source(seed=9), token_ids((BATCH, SEQ), seed=10)
    expected = to_numpy(model([source, target]))
    path = str(tmp_path / "seq2seq.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded([source, target])), expected)
    assert loaded.count_params() == model.count_params()
    if kind == "separate":  # the layers the decoding functions look up came back too
        decode_and_compare(loaded, source, target, SEQ - 1)


@tensorflow_only
def test_dropout_only_in_training():
    model = build_seq2seq(tiny_config(dropout=0.5, num_encoder_layers=1, num_decoder_layers=1))
    inputs = [padded_source(), token_ids((BATCH, SEQ), seed=11)]
    np.testing.assert_array_equal(to_numpy(model(inputs)), to_numpy(model(inputs)))
    assert not np.allclose(to_numpy(model(inputs, training=True)),
                           to_numpy(model(inputs, training=True)))


@tensorflow_only
def test_mixed_precision_logits_stay_float32(mixed_bfloat16):
    model = build_seq2seq(tiny_config())
    assert model.get_layer("decoder_block_0").compute_dtype == "bfloat16"
    assert all(dtype_of(w) == "float32" for w in model.weights)
    source, target = padded_source(), token_ids((BATCH, SEQ), seed=12)
    logits = model([source, target])
    assert dtype_of(logits) == "float32"
    assert np.isfinite(to_numpy(logits)).all()
    encoder_outputs, source_mask = encode(model, source)
    self_caches, encoder_caches = init_decoder_cache(model, encoder_outputs, SEQ)
    assert dtype_of(self_caches[0][0]) == dtype_of(encoder_caches[0][0]) == "bfloat16"
    step, _ = decode_with_cache(model, target[:, :PROMPT], (self_caches, encoder_caches), 0,
                                source_mask)
    assert dtype_of(step) == "float32"
    np.testing.assert_allclose(to_numpy(step), to_numpy(logits)[:, :PROMPT], atol=0.05)


# --- Generation --------------------------------------------------------------------------

def greedy_by_full_passes(model, source, steps):
    """Greedy decoding the slow way: the whole target through the model at every step.
    The target has its full length from the start (padding behind the tokens chosen so
    far, which causality hides), so eager JAX compiles each op for one shape only."""
    target = np.zeros((len(source), steps), "int32")
    target[:, 0] = START
    chosen = np.zeros((len(source), steps), "int32")
    for i in range(steps):
        chosen[:, i] = to_numpy(model([source, target]))[:, i].argmax(-1)
        if i + 1 < steps:
            target[:, i + 1] = chosen[:, i]
    return chosen


def test_greedy_generate_matches_full_passes_and_pads_after_stop(model):
    source = padded_source(seed=13)
    free = to_numpy(generate(model, source, SEQ, start_id=START))
    assert free.shape == (BATCH, SEQ) and free.dtype == np.int32
    np.testing.assert_array_equal(free, greedy_by_full_passes(model, source, SEQ))

    stop_id = int(free[0, 2])  # make row 0's third token its stop
    stopped = to_numpy(generate(model, source, SEQ, start_id=START, stop_id=stop_id))
    for row, expected in zip(stopped, free):
        end = list(expected).index(stop_id) + 1 if stop_id in expected else SEQ
        np.testing.assert_array_equal(row[:end], expected[:end])
        assert (row[end:] == 0).all()
    assert (stopped[0, 3:] == 0).all()


def test_sampling_is_seeded(model):
    source, steps = padded_source(seed=14), PROMPT

    def sample(seed, **kwargs):
        return to_numpy(generate(model, source, steps, start_id=START, temperature=2.0,
                                 seed=seed, **kwargs))

    # Two runs only: on JAX every call compiles its loop (other seeds: choose_tokens).
    np.testing.assert_array_equal(sample(3), sample(3))
    np.testing.assert_array_equal(sample(5, top_k=1),
                                  greedy_by_full_passes(model, source, steps))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="tf.function is TensorFlow's compiler")
def test_generate_traces_into_one_tf_function(copy_model):
    import tensorflow as tf

    model = copy_model[0]
    source = copy_task(BATCH, seed=2)[0]
    compiled = tf.function(lambda ids, seed: generate(
        model, ids, PROMPT, start_id=START, stop_id=STOP, temperature=1.0, top_k=5, seed=seed))
    eager = to_numpy(generate(model, source, PROMPT, start_id=START, stop_id=STOP,
                              temperature=1.0, top_k=5, seed=7))
    np.testing.assert_array_equal(compiled(source, tf.constant(7)).numpy(), eager)
    compiled(source[::-1].copy(), tf.constant(8))  # other ids, another seed: no new trace
    assert compiled.experimental_get_tracing_count() == 1


def test_choose_tokens_follows_temperature_and_top_k():
    logits = np.log(np.array([[0.5, 0.3, 0.2, 1e-9]] * 4000, "float32"))
    draws = to_numpy(choose_tokens(logits, temperature=1.0, seed=(1, 2)))
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 4000, [0.5, 0.3, 0.2, 0],
                               atol=0.03)
    np.testing.assert_array_equal(
        to_numpy(choose_tokens(logits, temperature=1.0, seed=(1, 2))), draws)
    assert (to_numpy(choose_tokens(logits, temperature=1.0, seed=(1, 3))) != draws).mean() > 0.3
    draws = to_numpy(choose_tokens(logits, temperature=1.0, top_k=2, seed=(1, 2)))
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 4000,
                               [0.5 / 0.8, 0.3 / 0.8, 0, 0], atol=0.03)
    assert (to_numpy(choose_tokens(logits)) == 0).all()


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="tfllm.generation (the GPT sampler) is TensorFlow code")
def test_hashed_uniform_matches_the_gpt_sampler():
    from tfllm.generation import hashed_uniform as tf_hashed_uniform

    for seed in ([0, 0], [7, 3], [123456, 99]):
        np.testing.assert_array_equal(to_numpy(hashed_uniform((3, 50), seed)),
                                      tf_hashed_uniform([3, 50], seed).numpy())


def test_generate_checks_its_length(model):
    with pytest.raises(ValueError, match="max_new_tokens=17.*16"):
        generate(model, padded_source(), 17, start_id=START)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        generate(model, padded_source(), 0, start_id=START)


# --- Learning a task ---------------------------------------------------------------------

# Copy a string of 2..6 symbols: ids 0 pad, 1 start, 2 stop, 3..10 symbols.
FIRST_SYMBOL, SYMBOLS, LONGEST = 3, 8, 6


def copy_task(n, seed):
    """`(source, decoder input, target)`: the target is the source then STOP, the
    decoder input the target behind START; everything right-padded with 0."""
    rng = np.random.default_rng(seed)
    source = np.zeros((n, LONGEST), "int32")
    decoder_input = np.zeros((n, LONGEST + 1), "int32")
    target = np.zeros((n, LONGEST + 1), "int32")
    for row in range(n):
        length = rng.integers(2, LONGEST + 1)
        symbols = rng.integers(FIRST_SYMBOL, FIRST_SYMBOL + SYMBOLS, length)
        source[row, :length] = symbols
        target[row, :length + 1] = [*symbols, STOP]
        decoder_input[row, :length + 1] = [START, *symbols]
    return source, decoder_input, target


@pytest.fixture(scope="module")
def copy_model():
    """A 1 + 1 layer model trained 300 steps on the copy task; also returns its loss
    before and after, and its weights before."""
    keras.utils.set_random_seed(0)
    model = build_seq2seq(Seq2SeqConfig(
        vocab_size=FIRST_SYMBOL + SYMBOLS, context_length=LONGEST + 1, num_encoder_layers=1,
        num_decoder_layers=1, num_heads=2, embed_dim=32))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    # TensorFlow traces 300 steps of a model this small faster without XLA; JAX without
    # jit would run them op by op.
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss=loss,
                  jit_compile=keras.backend.backend() != "tensorflow")
    source, decoder_input, target = copy_task(300 * 32, seed=0)

    def current_loss():
        return float(to_numpy(loss(target[:256], model([source[:256], decoder_input[:256]]))))

    before, weights = current_loss(), [w.copy() for w in model.get_weights()]
    model.fit([source, decoder_input], target, batch_size=32, epochs=1, verbose=0)
    return model, before, current_loss(), weights


@tensorflow_only
def test_training_moves_every_weight_and_lowers_the_loss(copy_model):
    model, before, after, weights = copy_model
    assert np.isfinite(after) and after < 0.1 * before
    assert all(not np.array_equal(w, v) for w, v in zip(weights, model.get_weights(),
                                                        strict=True))


@tensorflow_only
def test_learns_to_copy_with_greedy_decoding(copy_model):
    model = copy_model[0]
    source, _, target = copy_task(200, seed=1)  # sequences not seen in training
    generated = to_numpy(generate(model, source, LONGEST + 1, start_id=START, stop_id=STOP))
    exact = (generated == target).all(axis=1).mean()
    assert exact >= 0.9, f"only {exact:.0%} of 200 sources copied exactly"
