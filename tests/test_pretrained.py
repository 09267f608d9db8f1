"""Importing GPT-2: both directory kinds against keras-hub's GPT2 on the same weights, the
byte-level BPE tokenizer against GPT-2's reference (Hugging Face's ByteLevel BPE), errors.

Everything is made here, offline: a byte-level BPE vocabulary trained on a few sentences, a
tiny keras-hub GPT2CausalLM with random weights saved as a preset, and a Hugging Face style
directory (config.json + model.safetensors with GPT-2's tensor names) from the same weights.
"""

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfllm.generation import Generator
from tfllm.models import build_gpt
from tfllm.pretrained import (gpt2_config, load_gpt2, padded_vocab_size, read_safetensors,
                              set_gpt2_weights, write_safetensors)
from tfllm.tokenizers import GPT2Tokenizer, load_tokenizer

# keras's own weight saving (keras-hub presets) trips NumPy 2's __array__ copy warning.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

LAYERS, HEADS, WIDTH, FFN, POSITIONS = 2, 2, 32, 64, 64
CORPUS = [
    "The quick brown fox jumps over the lazy dog. They'll say it's 2019, isn't it?",
    "she opened the window, and the morning light filled the room\n\n",
    "def tokenize(text):\n    return text.split()  # 4 spaces\n",
    "你好，世界。今天天气很好。", "🙂👍🏽 emoji and 😀 faces", "naïve café, über Straße",
] * 4
# English, Chinese, emoji and whitespace edge cases. GPT-2's reference split puts a run of
# spaces before a word as " " * (n - 1) + " word", keeps trailing whitespace whole, and
# treats <|endoftext|> in text as the EOS token.
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "They'll say it's 2019 (or 123456), isn't it? DON'T",
    "你好，世界", "🙂👍🏽 and 👨‍👩‍👧", "naïve café",
    "  two  spaces\n\nnew\tlines ", "   ", "\n\n\n", "a\r\n\r\nb", " \t x", "x \n", "",
    "nbsp\u00a0ideographic\u3000thin\u2009space", "ctrl\x00\x07 bytes", "a  'sa  'll",
    "end<|endoftext|>start", "६ ĴA",
]
# Where keras-hub's own graph tokenizer departs from GPT-2 (trailing whitespace split off,
# "६" and "ĴA" rewritten, text after NUL dropped, spaces before <|endoftext|>): compared
# with the reference only.
KERAS_HUB_DIFFERS = {"  two  spaces\n\nnew\tlines ", "   ", "६ ĴA", "ctrl\x00\x07 bytes",
                     "x  <|endoftext|>"}


def train_vocabulary():
    """A GPT-2 style vocab.json/merges.txt: byte-level BPE, <|endoftext|> the last id."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=420, min_frequency=2, show_progress=False)
    model = json.loads(bpe._tokenizer.to_str())["model"]
    vocab = dict(model["vocab"])
    vocab["<|endoftext|>"] = len(vocab)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return vocab, merges


def reference_tokenizer(vocab, merges):
    """Hugging Face's GPT-2 tokenizer (tokenizer.json of the gpt2 checkpoint): ByteLevel
    pre-tokenizer with GPT-2's regex, BPE, <|endoftext|> a special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    ref = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges]))
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ref.decoder = decoders.ByteLevel()
    ref.add_special_tokens(["<|endoftext|>"])
    return ref


def hf_tensors(backbone):
    """The backbone's weights under Hugging Face GPT-2 names (Conv1D weights are (in, out),
    as Keras kernels are; keras-hub's (hidden, heads, head_dim) kernels are flattened)."""
    w = {v.path: v.numpy() for v in backbone.weights}
    t = {"wte.weight": w["token_embedding/embeddings"],
         "wpe.weight": w["position_embedding/embeddings"],
         "ln_f.weight": w["layer_norm/gamma"], "ln_f.bias": w["layer_norm/beta"]}
    for i in range(LAYERS):
        k, h = f"transformer_layer_{i}/", f"h.{i}."
        a = k + "self_attention/"
        t[h + "attn.c_attn.weight"] = np.concatenate(
            [w[a + n + "/kernel"].reshape(WIDTH, WIDTH) for n in ("query", "key", "value")], 1)
        t[h + "attn.c_attn.bias"] = np.concatenate(
            [w[a + n + "/bias"].reshape(-1) for n in ("query", "key", "value")])
        t[h + "attn.c_proj.weight"] = w[a + "attention_output/kernel"].reshape(WIDTH, WIDTH)
        t[h + "attn.c_proj.bias"] = w[a + "attention_output/bias"]
        t[h + "ln_1.weight"] = w[k + "self_attention_layer_norm/gamma"]
        t[h + "ln_1.bias"] = w[k + "self_attention_layer_norm/beta"]
        t[h + "ln_2.weight"] = w[k + "feedforward_layer_norm/gamma"]
        t[h + "ln_2.bias"] = w[k + "feedforward_layer_norm/beta"]
        t[h + "mlp.c_fc.weight"] = w[k + "feedforward_intermediate_dense/kernel"]
        t[h + "mlp.c_fc.bias"] = w[k + "feedforward_intermediate_dense/bias"]
        t[h + "mlp.c_proj.weight"] = w[k + "feedforward_output_dense/kernel"]
        t[h + "mlp.c_proj.bias"] = w[k + "feedforward_output_dense/bias"]
    return t


def write_hf_directory(path, tensors, vocab, merges, prefix=""):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": LAYERS,
        "n_head": HEADS, "n_embd": WIDTH, "n_inner": FFN, "n_positions": POSITIONS,
        "n_ctx": POSITIONS, "vocab_size": len(vocab), "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new", "bos_token_id": len(vocab) - 1,
        "eos_token_id": len(vocab) - 1}))
    write_safetensors(path / "model.safetensors",
                      {prefix + k: v for k, v in tensors.items()}, {"format": "pt"})
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                     encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """A tiny random GPT-2 in keras-hub, saved as a preset and as a Hugging Face directory."""
    import keras
    import keras_hub

    root = tmp_path_factory.mktemp("gpt2")
    vocab, merges = train_vocabulary()
    keras.utils.set_random_seed(3)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=len(vocab), num_layers=LAYERS, num_heads=HEADS, hidden_dim=WIDTH,
        intermediate_dim=FFN, max_sequence_length=POSITIONS, dropout=0.0)
    rng = np.random.default_rng(0)
    for v in backbone.weights:  # every weight random (biases, norms too), logits well apart
        scale = 0.5 if "token_embedding" in v.path else 0.15
        base = 1.0 if v.path.endswith("gamma") else 0.0
        v.assign((base + scale * rng.standard_normal(v.shape)).astype("float32"))
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocab, merges=merges)
    causal_lm = keras_hub.models.GPT2CausalLM(
        backbone, preprocessor=keras_hub.models.GPT2CausalLMPreprocessor(tokenizer))
    causal_lm.save_to_preset(str(root / "keras_hub"))
    tensors = hf_tensors(backbone)
    hf_dir = write_hf_directory(root / "hf", tensors, vocab, merges)
    return dict(root=root, vocab=vocab, merges=merges, causal_lm=causal_lm, tensors=tensors,
                hf_dir=hf_dir, keras_hub_dir=root / "keras_hub",
                keras_hub_tokenizer=tokenizer)


@pytest.fixture(scope="module")
def tokenizer(gpt2):
    return GPT2Tokenizer.from_directory(gpt2["hf_dir"])


def keras_hub_logits(causal_lm, ids):
    return causal_lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}).numpy()


def test_config_pads_the_vocabulary(gpt2):
    vocab = len(gpt2["vocab"])
    config = gpt2_config(gpt2["hf_dir"])
    assert (config.vocab_size, config.pad_id, config.real_vocab_size) == (
        padded_vocab_size(vocab), vocab, vocab)
    assert config.vocab_size % 64 == 0 and config.vocab_size > vocab
    assert padded_vocab_size(50257) == 50304  # GPT-2: pad id 50257, as in nanoGPT's table
    assert (config.num_layers, config.num_heads, config.embed_dim, config.intermediate_dim,
            config.context_length) == (LAYERS, HEADS, WIDTH, FFN, POSITIONS)
    assert gpt2_config(gpt2["keras_hub_dir"]) == config
    assert gpt2_config(gpt2["hf_dir"], context_length=16, dropout=0.1).context_length == 16
    with pytest.raises(ValueError, match="only .*'dropout', 'context_length'"):
        gpt2_config(gpt2["hf_dir"], num_layers=3)
    with pytest.raises(ValueError, match="longer than the checkpoint's 64"):
        gpt2_config(gpt2["hf_dir"], context_length=65)


@pytest.mark.parametrize("route", ["hf", "keras_hub", "hf_prefixed"])
def test_logits_equal_keras_hub(gpt2, route):
    if route == "hf_prefixed":  # GPT2LMHeadModel's names, the causal-mask buffers, lm_head
        tensors = {**gpt2["tensors"], "lm_head.weight": gpt2["tensors"]["wte.weight"]}
        tensors.update({f"h.{i}.attn.bias": np.tril(np.ones((1, 1, 8, 8), np.float32))
                        for i in range(LAYERS)})
        path = write_hf_directory(gpt2["root"] / "prefixed", tensors, gpt2["vocab"],
                                  gpt2["merges"], prefix="transformer.")
    else:
        path = gpt2[f"{route}_dir"]
    model, tokenizer, config = load_gpt2(path)
    vocab = len(gpt2["vocab"])
    rng = np.random.default_rng(1)
    ids = rng.integers(0, vocab, (2, 40)).astype(np.int32)
    ids[0, :3] = [vocab - 1, 0, 0]  # EOS and GPT-2's id 0 ("!"): ordinary tokens here
    expected = keras_hub_logits(gpt2["causal_lm"], ids)
    logits = model(ids).numpy()
    assert logits.shape == (2, 40, config.vocab_size)
    np.testing.assert_allclose(logits[..., :vocab], expected, atol=1e-4, rtol=1e-4)
    assert (logits[..., vocab:] <= -1e8).all()  # pad rows: never predicted
    assert (tokenizer.pad_id, tokenizer.eos_id) == (config.pad_id, vocab - 1)


def test_padding_with_the_pad_id_leaves_logits_unchanged(gpt2):
    model, tokenizer, config = load_gpt2(gpt2["hf_dir"])
    ids = np.array([[len(gpt2["vocab"]) - 1, 0, 5, 0, 9]], np.int32)
    alone = model(ids).numpy()
    padded = np.concatenate([np.full((1, 3), config.pad_id, np.int32), ids], axis=1)
    np.testing.assert_allclose(model(padded).numpy()[:, 3:], alone, atol=1e-4)


def test_greedy_generation_equals_keras_hub(gpt2, tokenizer):
    import keras_hub

    model, _, config = load_gpt2(gpt2["hf_dir"])
    prompts, steps = ["The quick brown", "你好"], 6
    got = Generator(model, tokenizer, config.context_length, bucket=8).generate_ids(
        prompts, max_new_tokens=steps, stop_token_ids=[])
    # keras-hub continues each right-padded row after its own prompt: EOS + prompt, as tfllm.
    rows = [[tokenizer.eos_id] + tokenizer.encode(p) for p in prompts]
    width = max(map(len, rows)) + steps
    causal_lm = keras_hub.models.GPT2CausalLM(gpt2["causal_lm"].backbone, preprocessor=None)
    causal_lm.compile(sampler="greedy", jit_compile=False)
    out = causal_lm.generate(
        {"token_ids": np.array([r + [0] * (width - len(r)) for r in rows], np.int32),
         "padding_mask": np.array([[1] * len(r) + [0] * (width - len(r)) for r in rows])},
        stop_token_ids=None)["token_ids"]
    for row, ids, ours in zip(rows, out, got):
        assert ids[len(row):len(row) + steps].tolist() == ours.tolist()
    assert len(set(got[0].tolist())) > 1  # not a degenerate repeat of one token


def test_exported_saved_model_serves_the_imported_model(gpt2, tokenizer, tmp_path):
    """export_model as for a native run: the pad id pads, the pad rows take no probability."""
    from tfllm.savedmodel.gpt import export_model

    model, _, config = load_gpt2(gpt2["hf_dir"])
    path = export_model(model, tokenizer, config, str(tmp_path / "gpt2"), max_new_tokens=5)
    served = tf.saved_model.load(path).signatures
    prompts = ["The quick brown", "你好"]
    outputs = served["greedy"](prompts=tf.constant(prompts),
                                        max_new_tokens=tf.constant(5))["outputs"].numpy()
    expected = Generator(model, tokenizer, config.context_length, jit_compile=False)(
        prompts, max_new_tokens=5)
    assert [o.decode("utf-8", errors="replace") for o in outputs] == expected
    tokens = served["tokenize"](texts=tf.constant(["hi there", "a"]))["token_ids"].numpy()
    assert tokens[1, 1:].tolist() == [config.pad_id] * (tokens.shape[1] - 1)
    # score: log P(text, EOS | EOS) over GPT-2's real vocabulary, as keras-hub computes it.
    ids = [tokenizer.eos_id] + tokenizer.encode("The quick brown fox") + [tokenizer.eos_id]
    logits = keras_hub_logits(gpt2["causal_lm"], np.array([ids[:-1]], np.int32))[0]
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected_log_prob = log_probs[np.arange(len(ids) - 1), ids[1:]].sum()
    score = served["score"](texts=tf.constant(["The quick brown fox"]))
    np.testing.assert_allclose(score["log_prob"].numpy()[0], expected_log_prob, rtol=1e-4)


def test_missing_or_misshaped_tensor_is_one_clear_error(gpt2, tmp_path):
    tensors = dict(gpt2["tensors"])
    del tensors["h.1.mlp.c_fc.weight"]
    tensors["h.0.attn.c_attn.bias"] = tensors["h.0.attn.c_attn.bias"][:-1]
    path = write_hf_directory(tmp_path / "bad", tensors, gpt2["vocab"], gpt2["merges"])
    with pytest.raises(ValueError) as error:
        load_gpt2(path)
    message = str(error.value)
    assert "tensor 'h.1.mlp.c_fc.weight' is missing (expected shape (32, 64))" in message
    assert "tensor 'h.0.attn.c_attn.bias' has shape (95,), expected (96,)" in message
    assert "model.safetensors" in message


def test_keras_hub_preset_with_missing_or_misshaped_tensor(gpt2, tmp_path):
    import h5py

    path = tmp_path / "preset"
    shutil.copytree(gpt2["keras_hub_dir"], path)
    with h5py.File(path / "model.weights.h5", "r+") as f:
        dense = "layers/transformer_decoder_1/_feedforward_intermediate_dense/vars/"
        del f[dense + "0"]
        del f[dense + "1"]
        f[dense + "1"] = np.zeros(63, np.float32)
    with pytest.raises(ValueError) as error:
        load_gpt2(path)
    message = str(error.value)
    assert "model.weights.h5" in message
    assert "tensor 'transformer_layer_1/feedforward_intermediate_dense/kernel' " in message
    assert "is missing (expected shape (32, 64))" in message
    assert "has shape (63,), expected (64,)" in message


def test_bad_directories(gpt2, tmp_path):
    with pytest.raises(FileNotFoundError, match="no directory"):
        load_gpt2(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_gpt2(tmp_path)
    shutil.copy(gpt2["hf_dir"] / "config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_gpt2(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    with pytest.raises(ValueError, match="activation 'relu'"):
        gpt2_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="not a GPT-2 config"):
        gpt2_config(tmp_path)
    untied = dataclasses.replace(gpt2_config(gpt2["hf_dir"]), tie_embeddings=False)
    with pytest.raises(ValueError, match="'lm_head/kernel' .* no GPT-2 counterpart"):
        set_gpt2_weights(build_gpt(untied), gpt2["hf_dir"], untied)


def test_safetensors_format(tmp_path):
    tensors = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.array([1, -2], np.int64),
               "c": np.ones((0, 4), np.float16)}
    write_safetensors(tmp_path / "t.safetensors", tensors, {"format": "pt"})
    raw = (tmp_path / "t.safetensors").read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    assert header["__metadata__"] == {"format": "pt"} and (8 + size) % 8 == 0
    assert header["a"] == {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}
    assert header["b"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [16, 40]}
    loaded = read_safetensors(tmp_path / "t.safetensors")
    for name, value in tensors.items():
        assert loaded[name].dtype == value.dtype
        np.testing.assert_array_equal(loaded[name], value)
    # BF16 (the top half of float32) reads as float32.
    values = np.array([1.5, -2.25, 3e38], np.float32)
    data = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    head = json.dumps({"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    (tmp_path / "bf16.safetensors").write_bytes(len(head).to_bytes(8, "little") + head + data)
    bf16 = read_safetensors(tmp_path / "bf16.safetensors")["x"]
    np.testing.assert_allclose(bf16, values, rtol=1e-2)


def test_tokenizer_matches_gpt2_reference_and_keras_hub(gpt2, tokenizer):
    reference = reference_tokenizer(gpt2["vocab"], gpt2["merges"])
    keras_hub_tokenize = tf.function(gpt2["keras_hub_tokenizer"].tokenize)  # its graph path
    texts = TEXTS + ["x  <|endoftext|>"]
    ours = tokenizer.tokenize(tf.constant(texts)).to_list()
    for text, ids in zip(texts, ours):
        assert ids == reference.encode(text).ids, text
        assert ids == tokenizer.encode(text)
        if text not in KERAS_HUB_DIFFERS:
            assert ids == keras_hub_tokenize(tf.constant([text])).to_list()[0], text
        assert tokenizer.decode(ids) == text.replace("<|endoftext|>", "")  # EOS is dropped
    ids = tokenizer.encode("end<|endoftext|>start")
    assert ids == tokenizer.encode("end") + [tokenizer.eos_id] + tokenizer.encode("start")


def test_tokenizer_ids_and_decoding(gpt2, tokenizer):
    vocab = len(gpt2["vocab"])
    assert tokenizer.vocab_size == vocab and tokenizer.kind == "gpt2"
    assert (tokenizer.eos_id, tokenizer.bos_id, tokenizer.pad_id) == (vocab - 1, vocab - 1, vocab)
    assert tokenizer.token_id("!") == 0 and tokenizer.decode([0]) == "!"  # not padding here
    hello = tokenizer.encode("hello")
    padded = [tokenizer.eos_id] + hello + [tokenizer.eos_id, tokenizer.pad_id, tokenizer.pad_id]
    assert tokenizer.decode(padded) == "hello"
    assert tokenizer.decode([vocab + 5, -1]) == "\ufffd\ufffd"  # table padding rows, bad ids
    # A character split across tokens decodes once its bytes are together.
    emoji = tokenizer.encode("🙂")
    assert len(emoji) > 1 and tokenizer.decode(emoji) == "🙂"


def test_tokenizer_save_load_and_from_keras_hub_preset(gpt2, tokenizer, tmp_path):
    tokenizer.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"tokenizer.json", "vocab.json", "merges.txt"}
    loaded = load_tokenizer(tmp_path)
    from_preset = GPT2Tokenizer.from_directory(gpt2["keras_hub_dir"])
    for other in (loaded, from_preset):
        assert type(other) is GPT2Tokenizer and other.vocab_size == tokenizer.vocab_size
        assert other.tokenize(tf.constant(TEXTS)).to_list() == \
            tokenizer.tokenize(tf.constant(TEXTS)).to_list()
    with pytest.raises(FileNotFoundError, match="no GPT-2 tokenizer"):
        GPT2Tokenizer.from_directory(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="not a GPT-2 byte-level vocabulary"):
        GPT2Tokenizer({"a": 0, "<|endoftext|>": 1}, [])


def test_chat_markers_are_added_after_gpt2_ids_and_saved(gpt2, tokenizer, tmp_path):
    from tfllm.chat_format import ChatTokens, render_ids
    from tfllm.pretrained import add_chat_markers

    base = tokenizer.vocab_size
    model, config = load_gpt2(gpt2["hf_dir"])[::2]
    chat_model, chat_tokenizer, chat_config = add_chat_markers(model, tokenizer, config)
    tokens = ChatTokens(chat_tokenizer)
    assert [*tokens.role_ids.values(), tokens.end_id] == [base, base + 1, base + 2, base + 3]
    assert chat_tokenizer.pad_id == chat_config.pad_id == chat_config.real_vocab_size == base + 4
    assert chat_config.vocab_size == config.vocab_size  # the padded table had room
    # Text tokenizes as before; the markers decode to their own text.
    assert chat_tokenizer.tokenize(tf.constant(TEXTS)).to_list() == \
        tokenizer.tokenize(tf.constant(TEXTS)).to_list()
    assert chat_tokenizer.decode([tokens.end_id]) == "<|end|>"
    chat_tokenizer.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.vocab_size == base + 4 and loaded.pad_id == base + 4
    assert ChatTokens(loaded).end_id == base + 3

    # GPT-2's weights are unchanged; the marker rows are near the mean row, not zero,
    # and their logits come out of the mask while padding stays masked.
    old = {v.path: v.numpy() for v in model.weights}
    for variable in chat_model.weights:
        value = variable.numpy()
        if variable.path == "embedding/token_embeddings":
            np.testing.assert_array_equal(value[:base], old[variable.path][:base])
            mean = old[variable.path][:base].mean(0)
            markers = value[base:base + 4]
            assert np.abs(markers - mean).max() < 0.5 * old[variable.path][:base].std()
            assert len({row.tobytes() for row in markers}) == 4
        else:
            np.testing.assert_array_equal(value, old[variable.path])
    ids, _ = render_ids(chat_tokenizer, [{"role": "user", "content": "hello"}], True)
    logits = chat_model(ids[None]).numpy()[0, -1]
    assert np.all(logits[base:base + 4] > -1e8) and np.all(logits[base + 4:] <= -1e8)
    assert add_chat_markers(chat_model, chat_tokenizer, chat_config)[1] is chat_tokenizer


def test_sft_with_lora_from_gpt2_trains_adapters_and_marker_rows(gpt2, tmp_path):
    from conftest import run_main

    from tfllm.training.run_dir import load_run

    rows = [{"prompt": f"the {w} word?", "response": f"{w} is it."}
            for w in ("first", "second", "third", "fourth", "fifth", "sixth")] * 4
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = run_main("train.py", "--task", "sft", "--init", gpt2["hf_dir"], "--data", data,
                      "--name", "g-chat", "--lora-rank", "2", "--steps", "12",
                      "--batch-size", "4", "--seq-len", "32", "--lr", "1e-2",
                      "--warmup-steps", "2", "--eval-every", "6", "--checkpoint-every", "6",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    base = len(gpt2["vocab"])
    assert f"chat markers added to the gpt2 vocabulary as ids {base}-{base + 3}" in result.stdout
    # rank 2: a (in, 2) and b (2, out) on qkv, output, ffn_in and ffn_out of each block
    adapters = LAYERS * 2 * ((WIDTH + 3 * WIDTH) + (WIDTH + WIDTH) + (WIDTH + FFN) +
                             (FFN + WIDTH))
    assert f"training {adapters + 4 * WIDTH:,} of" in result.stdout
    report = json.loads((tmp_path / "runs" / "g-chat" / "sft_report.json").read_text())
    assert report["sft"]["val_loss"] < report["base"]["val_loss"], report

    # Only the marker rows of the token table moved; the adapters are merged in.
    tuned, tokenizer, config = load_run(str(tmp_path / "runs" / "g-chat"))
    original, _, _ = load_gpt2(gpt2["hf_dir"])
    table = {v.path: v.numpy() for v in tuned.weights}["embedding/token_embeddings"]
    gpt2_table = {v.path: v.numpy() for v in original.weights}["embedding/token_embeddings"]
    np.testing.assert_array_equal(table[:base], gpt2_table[:base])
    assert tokenizer.added == ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")

    # The export has the chat signature, and the chat CLI answers through it.
    export = tmp_path / "saved_models" / "g-chat" / "1"
    metadata = json.loads((export / "assets.extra" / "tfllm.json").read_text())
    assert "chat" in metadata["signatures"]
    from tfllm import chat

    assert chat.main([str(export), "--prompt", "the first word?", "--max-new-tokens", "8"]) == 0


def test_tokenizer_saved_model_in_fresh_process(tokenizer, tmp_path):
    """Tracked tables only (no keras-hub cache): a SavedModel that TF Serving can run."""
    module = tf.Module()
    module.tokenizer = tokenizer

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(texts):
        ids = module.tokenizer.tokenize(texts)
        return {"ids": ids.to_tensor(default_value=tokenizer.pad_id), "lengths": ids.row_lengths()}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def detokenize(ids):
        return {"texts": module.tokenizer.detokenize(ids)}

    tf.saved_model.save(module, str(tmp_path / "tok"),
                        signatures={"tokenize": tokenize, "detokenize": detokenize})
    texts = [t for t in TEXTS if "<|endoftext|>" not in t]
    script = textwrap.dedent(f"""
        import json
        import tensorflow as tf
        import tensorflow_text  # registers RegexSplitWithOffsets, as TF Serving links it
        loaded = tf.saved_model.load({str(tmp_path / "tok")!r})
        out = loaded.signatures["tokenize"](texts=tf.constant({texts!r}))
        ids = tf.RaggedTensor.from_tensor(out["ids"], lengths=out["lengths"])
        back = loaded.signatures["detokenize"](ids=out["ids"])["texts"]
        print(json.dumps({{"ids": ids.to_list(), "texts": [t.decode() for t in back.numpy()]}}))
        """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ids"] == tokenizer.tokenize(tf.constant(texts)).to_list()
    assert result["texts"] == texts


def test_train_py_init_continues_pretraining_and_exports(gpt2, tmp_path, corpus_file,
                                                         monkeypatch, capsys):
    from conftest import refused, run_main

    # A few thousand characters are enough for 4 steps (GPT-2's BPE on the whole corpus
    # took longer than the run).
    data = tmp_path / "docs.txt"
    data.write_text(corpus_file.read_text(encoding="utf-8")[:6000], encoding="utf-8")
    result = run_main("train.py", "--init", gpt2["hf_dir"], "--data", data, "--name", "g",
                      "--steps", "4", "--batch-size", "4", "--seq-len", "32",
                      "--eval-every", "2", "--checkpoint-every", "2", "--sample-tokens", "4",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "initialized from the GPT-2 weights" in result.stdout
    assert load_tokenizer(tmp_path / "runs" / "g" / "tokenizer").kind == "gpt2"
    assert (tmp_path / "saved_models" / "g" / "1" / "saved_model.pb").exists()
    import train
    from tfllm import chat

    assert "--num-layers" in refused(train.main, "--init", gpt2["hf_dir"], "--num-layers", "3",
                                     capsys=capsys)
    # GPT-2's vocabulary has no chat markers: the chat CLI says so in one line, and the
    # export has no chat signature.
    monkeypatch.chdir(tmp_path)
    assert refused(chat.main, "runs/g", "--prompt", "Hi", capsys=capsys) == (
        "error: 'runs/g' has a gpt2 tokenizer without chat markers: chat with a run "
        "fine-tuned by train.py --task sft")
    metadata = json.loads((tmp_path / "saved_models" / "g" / "1" / "assets.extra" /
                           "tfllm.json").read_text())
    assert "chat" not in metadata["signatures"]
