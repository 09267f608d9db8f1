import json
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

from tfllm.tokenizers import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    CharTokenizer,
    SentencePieceTokenizer,
    load_tokenizer,
)

# Strings that must survive decode(encode(s)) exactly.
ROUND_TRIP = [
    "The quick brown fox jumps over the lazy dog.",
    "你好，世界",
    "🙂👍🏽",
    "  two  spaces\n\nnew\tlines ",
    "",
    "ctrl\x00\x07\r\n and <|end|> inline",
]

# A small English corpus with paragraphs, so "\n" and "\n\n" are worth learning as pieces.
SENTENCES = [
    "the cat sat on the mat and looked at the garden",
    "a small model learns to write short stories about animals",
    "she opened the window, and the morning light filled the room",
    "they walked along the river until the sun went down",
    "every word is split into pieces that appear often in the text",
]
CORPUS = [
    "\n\n".join(
        "\n".join(f"{SENTENCES[(d + p + s) % 5].capitalize()} ({d}.{p}.{s})." for s in range(4))
        for p in range(6)
    )
    for d in range(30)
]
VOCAB_SIZE = 400


@pytest.fixture(scope="module")
def sp_tokenizer():
    return SentencePieceTokenizer.train(CORPUS, vocab_size=VOCAB_SIZE)


@pytest.fixture(scope="module")
def char_tokenizer():
    return CharTokenizer.from_texts(CORPUS + ROUND_TRIP)


@pytest.fixture(params=["sentencepiece", "char"])
def tokenizer(request, sp_tokenizer, char_tokenizer):
    return {"sentencepiece": sp_tokenizer, "char": char_tokenizer}[request.param]


def test_reserved_ids(tokenizer):
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    for expected_id, piece in enumerate(("<pad>", "<unk>", "<s>", "</s>") + SPECIAL_TOKENS):
        assert tokenizer.token_id(piece) == expected_id
    with pytest.raises(ValueError, match="not a piece"):
        tokenizer.token_id("<|no such token|>")


def test_vocab_size(sp_tokenizer, char_tokenizer):
    assert sp_tokenizer.vocab_size == VOCAB_SIZE
    assert char_tokenizer.vocab_size == 8 + len(char_tokenizer.chars)
    assert list(char_tokenizer.chars) == sorted(set("".join(CORPUS + ROUND_TRIP)))


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(tokenizer, text):
    ids = tokenizer.encode(text)
    assert all(isinstance(i, int) for i in ids)
    assert BOS_ID not in ids and EOS_ID not in ids
    assert tokenizer.decode(ids) == text


def test_special_tokens_decode(tokenizer):
    assert tokenizer.decode([BOS_ID, 5, 7, EOS_ID, PAD_ID, PAD_ID]) == "<|user|><|end|>"
    # Unknown and out-of-range ids decode to the replacement character instead of failing.
    assert tokenizer.decode([UNK_ID, tokenizer.vocab_size, -1]) == "\ufffd" * 3


def test_sentencepiece_matches_special_tokens_in_text(sp_tokenizer):
    ids = sp_tokenizer.encode("<|user|>hi<|end|>")
    assert ids[0] == 5 and ids[-1] == 7


def test_sentencepiece_learns_newlines(sp_tokenizer):
    # The trainer strips each sentence's trailing "\n"; chunking must keep newlines learnable,
    # so they are real pieces rather than <0x0A> byte fallback.
    assert sp_tokenizer.token_id("\n") > 7
    assert "<0x0A>" not in [sp_tokenizer._pieces[i] for i in sp_tokenizer.encode("a.\n\nb\n")]


def test_char_unknown_character(char_tokenizer):
    assert char_tokenizer.encode("a\u2603b")[1] == UNK_ID


def test_batches_scalars_and_dense_padding(tokenizer):
    texts = ["hello there", "", "你好，世界 🙂"]
    ids = tokenizer.tokenize(tf.constant(texts))
    assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
    assert ids.shape.as_list() == [3, None]
    assert ids[0].numpy().tolist() == tokenizer.encode("hello there")
    assert tokenizer.tokenize(tf.constant("hello there")).to_list() == [ids[0].numpy().tolist()]
    padded = ids.to_tensor(default_value=PAD_ID)  # dense, right-padded
    assert tokenizer.detokenize(padded).numpy().tolist() == [t.encode() for t in texts]
    assert tokenizer.detokenize(ids).numpy().tolist() == [t.encode() for t in texts]


def test_tokenize_in_tf_function(tokenizer):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def round_trip(texts):
        ids = tokenizer.tokenize(texts)
        return ids.to_tensor(), tokenizer.detokenize(ids)

    texts = [t for t in ROUND_TRIP if t]
    dense, decoded = round_trip(tf.constant(texts))
    assert decoded.numpy().tolist() == [t.encode() for t in texts]
    assert dense[0].numpy().tolist()[: len(tokenizer.encode(texts[0]))] == tokenizer.encode(texts[0])


def test_a_global_seed_or_a_second_copy_leaves_a_tokenizer_working(tokenizer, tmp_path):
    """Setting a seed drops TensorFlow's cached kernels, which held TF Text's SentencePiece
    model: a notebook that loads a run, then seeds (or trains), must keep its tokenizer."""
    import gc

    import keras

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def traced(texts):
        return tokenizer.tokenize(texts).to_tensor()

    text = "hello world, again"
    expected = tokenizer.encode(text)
    traced(tf.constant([text]))
    tokenizer.save(tmp_path)
    copy = load_tokenizer(tmp_path)
    keras.utils.set_random_seed(3)
    assert copy.encode(text) == expected
    del copy
    gc.collect()
    tf.random.set_seed(4)
    assert tokenizer.encode(text) == expected
    assert traced(tf.constant([text])).numpy()[0].tolist() == expected
    assert tokenizer.decode(expected) == text


def test_save_and_load(tokenizer, tmp_path):
    tokenizer.save(tmp_path)
    config = json.loads((tmp_path / "tokenizer.json").read_text())
    assert config["kind"] == tokenizer.kind and config["vocab_size"] == tokenizer.vocab_size
    expected = {"tokenizer.json"} | ({"tokenizer.model"} if tokenizer.kind == "sentencepiece" else set())
    assert {p.name for p in tmp_path.iterdir()} == expected  # no temporary files left behind
    loaded = load_tokenizer(tmp_path)
    assert type(loaded) is type(tokenizer) and loaded.vocab_size == tokenizer.vocab_size
    for text in ROUND_TRIP:
        assert loaded.encode(text) == tokenizer.encode(text)


def test_load_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer in .*expected tokenizer.json"):
        load_tokenizer(tmp_path / "nowhere")


def test_training_is_deterministic(sp_tokenizer):
    again = SentencePieceTokenizer.train(CORPUS, vocab_size=VOCAB_SIZE)
    assert again.model_proto == sp_tokenizer.model_proto
    unigram = [SentencePieceTokenizer.train(CORPUS, VOCAB_SIZE, model_type="unigram") for _ in range(2)]
    assert unigram[0].model_proto == unigram[1].model_proto


def test_seed_picks_the_training_sample(monkeypatch):
    import tfllm.tokenizers

    monkeypatch.setattr(tfllm.tokenizers, "_MAX_TRAINING_CHUNKS", 20)  # CORPUS is ~60 chunks
    a, b, c = (SentencePieceTokenizer.train(CORPUS, VOCAB_SIZE, seed=s).model_proto for s in (0, 0, 1))
    assert a == b and a != c


@pytest.mark.parametrize(
    "texts, vocab_size, model_type, message",
    [
        (CORPUS, 100_000, "bpe", r"vocab_size=100000 is too large .* smaller --vocab-size"),
        (CORPUS, 50, "bpe", r"vocab_size=50 is too small"),
        (["", ""], VOCAB_SIZE, "bpe", r"no text"),
        (CORPUS, VOCAB_SIZE, "wordpiece", r"model_type='wordpiece'"),
    ],
)
def test_training_errors(texts, vocab_size, model_type, message):
    with pytest.raises(ValueError, match=message):
        SentencePieceTokenizer.train(texts, vocab_size=vocab_size, model_type=model_type)


def test_saved_model_in_fresh_process(sp_tokenizer, char_tokenizer, tmp_path):
    """Export like export.py will, then serve with only TensorFlow + TF Text imported."""
    texts = ["hello there", "你好，世界 🙂", "  a\n\tb ", ""]
    expected = {}
    for tokenizer in (sp_tokenizer, char_tokenizer):
        module = tf.Module()
        module.tokenizer = tokenizer  # tracked child: its model/table is saved with the module

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def tokenize(texts):
            ids = module.tokenizer.tokenize(texts)
            return {"ids": ids.to_tensor(default_value=PAD_ID), "lengths": ids.row_lengths()}

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
        def detokenize(ids):
            return {"texts": module.tokenizer.detokenize(ids)}

        tf.saved_model.save(
            module,
            str(tmp_path / tokenizer.kind),
            signatures={"tokenize": tokenize, "detokenize": detokenize},
        )
        expected[tokenizer.kind] = [tokenizer.encode(t) for t in texts]

    script = textwrap.dedent(
        f"""
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # registers the SentencePiece ops, as TF Serving links them
        result = {{}}
        for kind in ("sentencepiece", "char"):
            loaded = tf.saved_model.load({str(tmp_path)!r} + "/" + kind)
            out = loaded.signatures["tokenize"](texts=tf.constant({texts!r}))
            ids = tf.RaggedTensor.from_tensor(out["ids"], lengths=out["lengths"])
            texts = loaded.signatures["detokenize"](ids=out["ids"])["texts"]
            result[kind] = {{"ids": ids.to_list(), "texts": [t.decode() for t in texts.numpy()]}}
        print(json.dumps(result))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for kind, ids in expected.items():
        assert result[kind]["ids"] == ids
        assert result[kind]["texts"] == texts
