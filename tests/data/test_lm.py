"""Language-model data: tokenizing a corpus, the train/validation split, windows, tf.data."""

import random

import numpy as np
import pytest
import tensorflow as tf

from tfllm.data import lm
from tfllm.data.lm import (heldout_ids, lm_dataset, scored_bytes, split_texts,
                           tokenize_corpus, window_arrays)
from tfllm.tokenizers import EOS_ID, PAD_ID, CharTokenizer, SentencePieceTokenizer

WORDS = ("the a cat dog sat on mat ran to river sun went down she opened window light "
         "room they walked along until morning filled small model").split()


def make_doc(rng, lines, max_words=12):
    """A document of `lines` short English-like lines, each ending in a newline."""
    return "".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, max_words))) + ".\n"
        for _ in range(lines))


# Documents to tokenize: unicode, CRLF, inner blank lines, no trailing newline, a lone char.
DOCS = [
    "The cat sat on the mat.\nThe dog ran to the river.\n",
    "你好，世界 🙂👍🏽 café\r\nsecond line\n\nafter a blank line",
    "x",
    "  leading and trailing spaces  \n\ttab\n",
]


@pytest.fixture(scope="module")
def sp_tokenizer():
    rng = random.Random(0)
    training = [make_doc(rng, 40) for _ in range(6)]  # ~8 KB of text
    return SentencePieceTokenizer.train(training, vocab_size=300)


@pytest.fixture(scope="module")
def char_tokenizer():
    return CharTokenizer.from_texts(DOCS + [" ".join(WORDS) + ".\n"])


@pytest.fixture(params=["sentencepiece", "char"])
def tokenizer(request, sp_tokenizer, char_tokenizer):
    return {"sentencepiece": sp_tokenizer, "char": char_tokenizer}[request.param]


def split_at_eos(tokenizer, ids):
    """Decode a stream of documents, each followed by EOS, back into the documents."""
    ends = np.flatnonzero(ids == tokenizer.eos_id)
    assert len(ends) and ends[-1] == len(ids) - 1, "the stream must end with EOS"
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokenizer.decode(ids[s:e]) for s, e in zip(starts, ends)]


# ---------------------------------------------------------------- split_texts


def cut_point(texts, val_fraction):
    return int(sum(map(len, texts)) * (1.0 - val_fraction))


def test_split_single_document_loses_nothing_and_cuts_after_a_newline():
    text = make_doc(random.Random(1), 400)
    train, val = split_texts([text], 0.1)
    assert len(train) == 1 and len(val) == 1
    assert train[0] + val[0] == text
    cut, point = len(train[0]), cut_point([text], 0.1)
    assert train[0].endswith("\n") and cut - 1 >= point
    assert "\n" not in text[point:cut - 1]  # the first newline at or after the cut point
    assert abs(len(val[0]) / len(text) - 0.1) < 100 / len(text)  # off by under one line


@pytest.mark.parametrize("val_fraction", [0.05, 0.1, 0.25, 0.5, 0.9])
def test_split_several_documents_keeps_them_whole(val_fraction):
    rng = random.Random(2)
    texts = [make_doc(rng, rng.randint(20, 60)) for _ in range(8)]
    train, val = split_texts(texts, val_fraction)
    total = sum(map(len, texts))
    assert "".join(train + val) == "".join(texts)
    # Whole documents on either side; the document the cut falls in is split once.
    k = len(train) - 1
    assert train[:k] == texts[:k]
    if train[k] == texts[k]:
        assert val == texts[k + 1:]
    else:
        assert train[k] + val[0] == texts[k] and val[1:] == texts[k + 1:]
        assert train[k].endswith("\n")
    assert abs(sum(map(len, val)) / total - val_fraction) < 100 / total


def test_split_is_deterministic():
    rng = random.Random(3)
    texts = [make_doc(rng, 30) for _ in range(5)]
    assert split_texts(texts, 0.2) == split_texts(list(texts), 0.2)
    assert split_texts(tuple(texts), 0.2) == split_texts(texts, 0.2)


def test_split_without_a_newline_cuts_at_the_exact_point():
    text = "abcdefghij" * 100  # 1000 characters, no newline at all
    train, val = split_texts([text], 0.1)
    assert train == [text[:900]] and val == [text[900:]]
    # A later newline in the same document moves the cut just past it.
    text2 = "a" * 950 + "\n" + "b" * 49
    train, val = split_texts([text2], 0.1)
    assert train == ["a" * 950 + "\n"] and val == ["b" * 49]


def test_split_never_returns_empty_documents():
    texts = ["a" * 90, "b" * 10]  # the cut falls exactly on the document boundary
    train, val = split_texts(texts, 0.1)
    assert train == ["a" * 90] and val == ["b" * 10]


@pytest.mark.parametrize("val_fraction", [0, 0.0, 1, 1.0, -0.1, 1.5])
def test_split_rejects_bad_val_fraction(val_fraction):
    with pytest.raises(ValueError, match="val_fraction") as info:
        split_texts(["some text\n"], val_fraction)
    assert str(val_fraction) in str(info.value)


# ---------------------------------------------------------------- tokenize_corpus


def test_tokenize_corpus_appends_eos_and_round_trips(tokenizer):
    ids = tokenize_corpus(tokenizer, DOCS)
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert np.count_nonzero(ids == tokenizer.eos_id) == len(DOCS)
    assert ids[-1] == tokenizer.eos_id
    assert split_at_eos(tokenizer, ids) == DOCS


def test_tokenize_corpus_matches_per_document_encoding(tokenizer):
    ids = tokenize_corpus(tokenizer, DOCS)
    expected = []
    for doc in DOCS:
        expected += tokenizer.encode(doc) + [tokenizer.eos_id]
    np.testing.assert_array_equal(ids, expected)


def test_tokenize_corpus_empty_document_is_just_eos(char_tokenizer):
    tok = char_tokenizer
    ids = tokenize_corpus(tok, ["ab", "", "c"])
    np.testing.assert_array_equal(
        ids, tok.encode("ab") + [EOS_ID, EOS_ID] + tok.encode("c") + [EOS_ID])


def test_tokenize_corpus_of_no_documents_is_empty(tokenizer):
    ids = tokenize_corpus(tokenizer, [])
    assert ids.dtype == np.int32 and ids.shape == (0,)


def long_document():
    return make_doc(random.Random(4), 120) + "a line with no newline at the end"


def test_long_documents_are_chunked_at_line_ends(monkeypatch):
    monkeypatch.setattr(lm, "CHUNK_CHARS", 50)
    text = long_document()
    chunks = list(lm._chunks(text))
    assert len(chunks) > 20
    assert "".join(chunks) == text
    assert all(c.endswith("\n") and len(c) > 50 for c in chunks[:-1])
    # Without a newline past the chunk size the rest stays one piece.
    assert list(lm._chunks("z" * 500)) == ["z" * 500]


def test_chunking_does_not_change_char_ids(monkeypatch, char_tokenizer):
    text = long_document()
    whole = tokenize_corpus(char_tokenizer, [text, "x"])
    monkeypatch.setattr(lm, "CHUNK_CHARS", 50)
    chunked = tokenize_corpus(char_tokenizer, [text, "x"], batch_size=4)  # several tf calls
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_array_equal(
        whole, char_tokenizer.encode(text) + [EOS_ID] + char_tokenizer.encode("x") + [EOS_ID])


def test_chunking_keeps_sentencepiece_round_trip(monkeypatch, sp_tokenizer):
    # Ids may differ at chunk boundaries (a piece cannot span two chunks); the text may not.
    monkeypatch.setattr(lm, "CHUNK_CHARS", 50)
    docs = [long_document(), DOCS[1], long_document()[::-1]]
    ids = tokenize_corpus(sp_tokenizer, docs, batch_size=3)
    assert np.count_nonzero(ids == EOS_ID) == len(docs)
    assert split_at_eos(sp_tokenizer, ids) == docs


# ---------------------------------------------------------------- held-out stream


def test_heldout_ids_start_with_eos(tokenizer):
    ids = heldout_ids(tokenizer, DOCS)
    assert ids.dtype == np.int32
    assert ids[0] == tokenizer.eos_id
    np.testing.assert_array_equal(ids[1:], tokenize_corpus(tokenizer, DOCS))


def test_scored_bytes_counts_utf8_bytes_and_one_per_document():
    assert scored_bytes([]) == 0
    assert scored_bytes(["abc"]) == 4
    # é is 2 bytes, each CJK character 3, the emoji 4.
    assert scored_bytes(["caf\u00e9", "你好", "🙂", ""]) == (5 + 1) + (6 + 1) + (4 + 1) + 1
    assert scored_bytes(DOCS) == sum(len(d.encode("utf-8")) for d in DOCS) + len(DOCS)


def test_empty_validation_split_fails_cleanly(char_tokenizer):
    """A single line ending in a newline leaves nothing after the cut: say so plainly."""
    train, val = split_texts(["a" * 100 + "\n"], 0.1)
    assert val == []
    ids = heldout_ids(char_tokenizer, val)
    np.testing.assert_array_equal(ids, [EOS_ID])
    with pytest.raises(ValueError, match="validation text is empty") as info:
        lm_dataset(ids, 8, 2, training=False, what="validation")
    assert "a larger --val-fraction" in str(info.value)


# ---------------------------------------------------------------- window_arrays


def test_window_arrays_targets_are_inputs_shifted_by_one():
    ids = np.arange(10, 33, dtype=np.int32)  # 23 tokens
    x, y = window_arrays(ids, 5)
    assert x.shape == y.shape == (4, 5) and x.dtype == y.dtype == np.int32
    np.testing.assert_array_equal(x.ravel(), ids[:20])
    np.testing.assert_array_equal(y.ravel(), ids[1:21])
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # within a window, too
    # Without pad_tail the last two tokens are never targets.
    assert 31 not in y and 32 not in y


@pytest.mark.parametrize("length", [2, 5, 6, 7, 21, 22, 23, 100])
@pytest.mark.parametrize("pad_id", [PAD_ID, -1])
def test_window_arrays_pad_tail_scores_every_token_once(length, pad_id):
    seq_len = 5
    ids = np.arange(10, 10 + length, dtype=np.int32)
    x, y = window_arrays(ids, seq_len, pad_tail=True, pad_id=pad_id)
    n = -(-(length - 1) // seq_len)
    assert x.shape == y.shape == (n, seq_len) and y.dtype == np.int32
    flat_x, flat_y = x.ravel(), y.ravel()
    np.testing.assert_array_equal(flat_y[:length - 1], ids[1:])  # each target exactly once
    np.testing.assert_array_equal(flat_x[:length - 1], ids[:-1])
    assert np.all(flat_y[length - 1:] == pad_id)
    assert np.count_nonzero(flat_y != pad_id) == length - 1


def test_window_arrays_pad_tail_adds_nothing_when_windows_fit():
    ids = np.arange(21, dtype=np.int32)  # 20 targets = 4 windows of 5
    x, y = window_arrays(ids, 5, pad_tail=True)
    x2, y2 = window_arrays(ids, 5, pad_tail=False)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


def test_window_arrays_too_short():
    x, y = window_arrays(np.arange(4, dtype=np.int32), 5)
    assert x.shape == y.shape == (0, 5)
    x, y = window_arrays(np.array([7], np.int32), 5, pad_tail=True)
    assert x.shape == (0, 5)


# ---------------------------------------------------------------- lm_dataset


def token_stream(length, seed=0):
    """Non-pad token ids, distinct, so windows can be told apart."""
    return np.random.default_rng(seed).permutation(length).astype(np.int32) + 8


def batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_lm_dataset_shapes_and_dtypes():
    ds = lm_dataset(token_stream(200), seq_len=8, batch_size=4)
    spec_x, spec_y = ds.element_spec
    assert spec_x.shape.as_list() == spec_y.shape.as_list() == [4, 8]
    assert spec_x.dtype == spec_y.dtype == tf.int32
    x, y = next(iter(ds))
    assert x.shape == (4, 8) and x.dtype == tf.int32


def test_lm_dataset_training_batches_are_full_and_in_order():
    ids = token_stream(200)  # 199 targets: 24 windows of 8 -> 6 full batches of 4
    wx, wy = window_arrays(ids, 8)
    got = batches(lm_dataset(ids, 8, 5))  # 24 windows -> 4 batches of 5, 4 windows dropped
    assert len(got) == 4
    assert all(x.shape == (5, 8) and y.shape == (5, 8) for x, y in got)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in got]), wx[:20])
    np.testing.assert_array_equal(np.concatenate([y for _, y in got]), wy[:20])


def test_lm_dataset_evaluation_covers_every_window():
    ids = token_stream(203)  # 202 targets: 25 full windows and a padded one
    ds = lm_dataset(ids, 8, 5, training=False, what="validation")
    # One batch shape (one trace and compile of the eval step): the last is filled with
    # rows of padding.
    assert ds.element_spec[0].shape.as_list() == [5, 8]
    got = batches(ds)
    assert [len(x) for x, _ in got] == [5] * 6
    wx, wy = window_arrays(ids, 8, pad_tail=True)
    inputs = np.concatenate([x for x, _ in got])
    np.testing.assert_array_equal(inputs[:len(wx)], wx)
    assert np.all(inputs[len(wx):] == PAD_ID)
    targets = np.concatenate([y for _, y in got]).ravel()
    np.testing.assert_array_equal(targets[targets != PAD_ID], ids[1:])


def test_lm_dataset_evaluation_smaller_than_one_batch():
    ids = token_stream(12)
    got = batches(lm_dataset(ids, 8, 64, training=False))
    assert len(got) == 1 and got[0][0].shape == (64, 8)
    assert np.all(got[0][1][2:] == PAD_ID)  # 2 windows, 62 rows of padding


def window_order(ds):
    """The first input token of every window, in the order the dataset yields them."""
    return np.concatenate([x[:, 0] for x, _ in batches(ds)])


def test_lm_dataset_shuffle_is_seeded():
    ids = token_stream(401)  # 100 windows of 4
    first = window_order(lm_dataset(ids, 4, 10, shuffle=True, seed=1))
    again = window_order(lm_dataset(ids, 4, 10, shuffle=True, seed=1))
    other = window_order(lm_dataset(ids, 4, 10, shuffle=True, seed=2))
    plain = window_order(lm_dataset(ids, 4, 10))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, plain)
    # A permutation of the same windows: nothing lost, nothing repeated.
    np.testing.assert_array_equal(np.sort(first), np.sort(plain))


def test_lm_dataset_repeat_keeps_yielding_and_reshuffles():
    ids = token_stream(41)  # 10 windows of 4 -> 2 batches of 5 per epoch
    ds = lm_dataset(ids, 4, 5, shuffle=True, seed=3, repeat=True)
    got = batches(ds.take(20))  # ten epochs
    assert len(got) == 20 and all(x.shape == (5, 4) for x, _ in got)
    order = np.concatenate([x[:, 0] for x, _ in got]).reshape(10, 10)
    plain = window_order(lm_dataset(ids, 4, 5))
    for epoch in order:
        np.testing.assert_array_equal(np.sort(epoch), np.sort(plain))
    assert len({tuple(epoch) for epoch in order}) > 1  # each epoch reshuffled
    # Without shuffling, repetition replays the same windows.
    got = batches(lm_dataset(ids, 4, 5, repeat=True).take(6))
    assert len(got) == 6
    np.testing.assert_array_equal(got[0][0], got[2][0])


def test_lm_dataset_random_offsets_are_a_pure_function_of_seed_and_batch():
    ids = token_stream(300)
    ds = lm_dataset(ids, 8, 6, random_offsets=True, seed=4, repeat=True)
    got = batches(ds.take(5))
    assert all(x.shape == (6, 8) and x.dtype == np.int32 for x, _ in got)
    position = {int(token): i for i, token in enumerate(ids)}
    starts = set()
    for x, y in got:
        for row_x, row_y in zip(x, y):
            start = position[int(row_x[0])]  # a window of the stream, targets shifted by one
            np.testing.assert_array_equal(row_x, ids[start:start + 8])
            np.testing.assert_array_equal(row_y, ids[start + 1:start + 9])
            starts.add(start)
    assert len(starts) > 20 and any(s % 8 for s in starts)  # not the fixed cuts
    # Batch i depends on (seed, i) alone: skipping to it gives it, another seed does not.
    np.testing.assert_array_equal(batches(ds.skip(3).take(1))[0][0], got[3][0])
    other = batches(lm_dataset(ids, 8, 6, random_offsets=True, seed=5, repeat=True).take(1))
    assert not np.array_equal(other[0][0], got[0][0])
    # Without repeat: as many batches as the fixed windows fill.
    assert len(batches(lm_dataset(ids, 8, 6, random_offsets=True))) == 299 // 8 // 6


def test_lm_dataset_too_short_for_a_batch():
    ids = token_stream(50)  # 49 targets: 6 windows of 8, fewer than a batch of 7
    with pytest.raises(ValueError) as info:
        lm_dataset(ids, 8, 7)
    message = str(info.value)
    assert "50 tokens" in message and "training" in message
    assert "--batch-size" in message and "--seq-len" in message
    assert len(batches(lm_dataset(ids, 8, 6))) == 1  # exactly one batch fits


@pytest.mark.parametrize("ids", [np.zeros(0, np.int32), np.array([EOS_ID], np.int32)])
@pytest.mark.parametrize("training", [True, False])
def test_lm_dataset_empty_text(ids, training):
    with pytest.raises(ValueError, match="text is empty") as info:
        lm_dataset(ids, 8, 2, training=training)
    change = "a smaller" if training else "a larger"
    assert f"{change} --val-fraction" in str(info.value)


def test_lm_dataset_real_corpus(char_tokenizer):
    """End to end: split, tokenize, batch; evaluation sees every held-out token."""
    texts = [make_doc(random.Random(5), 60) for _ in range(4)]
    train_texts, val_texts = split_texts(texts, 0.25)
    train_ids = tokenize_corpus(char_tokenizer, train_texts)
    val_ids = heldout_ids(char_tokenizer, val_texts)
    train = lm_dataset(train_ids, 32, 8, shuffle=True, repeat=True)
    x, y = next(iter(train))
    assert x.shape == y.shape == (8, 32)
    n_targets = sum(int(np.count_nonzero(y != PAD_ID))
                    for _, y in lm_dataset(val_ids, 32, 8, training=False))
    assert n_targets == len(val_ids) - 1
    # Each target is one character or an EOS: scored_bytes matches for ASCII text.
    assert n_targets == scored_bytes(val_texts)
