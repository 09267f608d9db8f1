"""The KV-cache generation engine against a plain full-recompute loop."""

import numpy as np
import pytest
import tensorflow as tf

from tfllm.generation import Generator, check_generation_args, generate_ids, sample_tokens
from tfllm.models import GPTConfig, build_gpt
from tfllm.tokenizers import EOS_ID, CharTokenizer

CHARS = "abcdefghijklmnopqrstuvwxyz .,!?;"  # + 8 reserved ids = the test model's 40


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(1)
    config = GPTConfig(vocab_size=40, context_length=32, num_layers=2, num_heads=2, embed_dim=16)
    return build_gpt(config)


def uncached_greedy(model, prompt, steps):
    """The slow reference: a full forward pass over the whole sequence for every token."""
    ids, logits_seen = list(prompt), []
    for _ in range(steps):
        logits = model(np.array([ids], np.int32))[0, -1].numpy()
        logits_seen.append(logits)
        ids.append(int(logits.argmax()))
    return ids[len(prompt):], logits_seen


def test_cached_greedy_equals_full_recompute(model):
    prompt = [EOS_ID, 9, 17, 23, 11]
    expected, _ = uncached_greedy(model, prompt, 12)
    got = generate_ids(model, tf.ragged.constant([prompt], tf.int32), 12,
                       context_length=32, eos_id=-1)
    assert got.numpy()[0].tolist() == expected


def test_cached_step_logits_match_full_pass(model):
    from tfllm.models import call_with_cache, init_cache

    sequence = np.array([[EOS_ID, 5, 8, 13, 21, 34, 2, 19]], np.int32)
    full = model(sequence).numpy()
    caches = init_cache(model, 1, 8)
    mask = np.ones((1, 8), np.int32)
    logits, caches = call_with_cache(model, sequence[:, :3], caches, 0, mask,
                                     np.arange(3, dtype=np.int32)[None])
    np.testing.assert_allclose(logits.numpy(), full[:, :3], atol=1e-4)
    for t in range(3, 8):
        logits, caches = call_with_cache(model, sequence[:, t:t + 1], caches, t, mask,
                                         np.array([[t]], np.int32))
        np.testing.assert_allclose(logits.numpy()[:, 0], full[:, t], atol=1e-4)


def test_batch_of_different_lengths_equals_each_alone(model):
    prompts = [[EOS_ID, 7], [EOS_ID, 30, 31, 32, 33, 34, 35], [EOS_ID, 12, 12, 12]]
    batched = generate_ids(model, tf.ragged.constant(prompts, tf.int32), 10,
                           context_length=32, eos_id=-1).numpy()
    for row, prompt in zip(batched, prompts):
        alone = generate_ids(model, tf.ragged.constant([prompt], tf.int32), 10,
                             context_length=32, eos_id=-1).numpy()[0]
        assert row.tolist() == alone.tolist()


def test_stops_at_eos_and_pads_after(model):
    prompt = [EOS_ID, 9, 17]
    greedy, _ = uncached_greedy(model, prompt, 10)
    stop = greedy[3]  # pretend the 4th generated token is the end of text
    got = generate_ids(model, tf.ragged.constant([prompt], tf.int32), 10,
                       context_length=32, eos_id=stop).numpy()[0].tolist()
    first = greedy.index(stop)
    assert got[:first + 1] == greedy[:first + 1]
    assert got[first + 1:] == [0] * (10 - first - 1)


def test_sampling_is_seeded_and_top_k_1_is_greedy(model):
    tok = CharTokenizer(list(CHARS))
    gen = Generator(model, tok, context_length=32)
    prompts = ["abc", "hello"]
    a = gen(prompts, max_new_tokens=12, temperature=1.5, seed=7)
    b = gen(prompts, max_new_tokens=12, temperature=1.5, seed=7)
    assert a == b
    others = [gen(prompts, max_new_tokens=12, temperature=1.5, seed=s) for s in range(8, 12)]
    assert any(o != a for o in others)
    assert gen(prompts, max_new_tokens=12, temperature=1.0, top_k=1, seed=3) == \
        gen(prompts, max_new_tokens=12)


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = np.array([0.5, 0.3, 0.15, 0.05], np.float32)
    logits = tf.constant(np.log(np.tile(probs, (64, 1))))

    def support(top_p, top_k=0):
        seen = set()
        for s in range(20):
            tokens = sample_tokens(logits, tf.constant(1.0), tf.constant(top_k),
                                   tf.constant(top_p), tf.constant([s, 0]))
            seen |= set(tokens.numpy().tolist())
        return seen

    assert support(0.5) == {0}
    assert support(0.7) == {0, 1}
    assert support(0.81) == {0, 1, 2}
    assert support(1.0) == {0, 1, 2, 3}
    assert support(1.0, top_k=2) == {0, 1}


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=-1), "top_k"),
    (dict(temperature=-0.1), "temperature"),
])
def test_bad_generation_arguments(kwargs, message):
    args = dict(max_new_tokens=4, temperature=0.0, top_k=0, top_p=1.0) | kwargs
    with pytest.raises(ValueError, match=message):
        check_generation_args(**args)


def test_prompt_longer_than_context_is_refused(model):
    tok = CharTokenizer(list("ab"))
    gen = Generator(model, tok, context_length=32)
    with pytest.raises(ValueError, match="31 tokens plus max_new_tokens=8 exceeds the model's "
                       "context of 32"):
        gen(["a" * 30], max_new_tokens=8)
    # The graph itself refuses too (what a SavedModel caller meets).
    with pytest.raises(tf.errors.InvalidArgumentError, match="exceeds the model"):
        generate_ids(model, tf.ragged.constant([[1] * 30], tf.int32), 8,
                     context_length=32, eos_id=-1)


def test_stream_yields_what_a_call_returns(model):
    tok = CharTokenizer(list(CHARS))
    gen = Generator(model, tok, context_length=32)
    for kwargs in (dict(), dict(temperature=1.2, top_k=5, seed=4)):
        pieces, seen = [], []
        for piece in gen.stream("hello", max_new_tokens=10, callback=seen.append, **kwargs):
            pieces.append(piece)
        assert pieces == seen and all(pieces)
        assert "".join(pieces) == gen(["hello"], max_new_tokens=10, **kwargs)[0] != ""


def test_stop_strings_and_stop_tokens(model):
    tok = CharTokenizer(list(CHARS))
    gen = Generator(model, tok, context_length=32)
    full = gen(["hello"], max_new_tokens=12)[0]
    assert len(full) >= 6
    stop = full[3:5]
    cut = gen(["hello"], max_new_tokens=12, stop=[stop])[0]
    assert cut == full[:full.index(stop)]
    assert "".join(gen.stream("hello", max_new_tokens=12, stop=[stop])) == cut
    ids = gen.generate_ids(["hello"], max_new_tokens=12)[0].tolist()
    stop_id = ids[2]
    by_token = gen.generate_ids(["hello"], max_new_tokens=12, stop_token_ids=[stop_id])[0]
    first = ids.index(stop_id)
    assert by_token[:first + 1].tolist() == ids[:first + 1]
    assert not by_token[first + 1:].any()
    # As text, a reply ends before its stop token, called whole or streamed.
    text = gen(["hello"], max_new_tokens=12, stop_token_ids=[stop_id])[0]
    assert text == tok.decode(ids[:first])
    assert "".join(gen.stream("hello", max_new_tokens=12, stop_token_ids=[stop_id])) == text


def test_bucketed_xla_path_matches_the_plain_graph(model):
    tok = CharTokenizer(list(CHARS))
    fast = Generator(model, tok, context_length=32, bucket=8)
    plain = Generator(model, tok, context_length=32, jit_compile=False, bucket=1)
    prompts = ["a", "hello there", "xyz"]
    assert fast(prompts, max_new_tokens=9) == plain(prompts, max_new_tokens=9)
