"""The Hugging Face GPT-2 export: transformers loads it with tfllm's tokens and logits, and
tfllm reads it back (load_gpt2, train.py --init) as the same model.

Three tiny models with every weight random (norms and biases too, so the GELU flavour and
the layer-norm epsilon show in the logits): a SentencePiece one (layer-norm epsilon 1e-3),
a char one (untied output embeddings, no biases) and an imported GPT-2 (a Hugging Face
directory written here, loaded by load_gpt2, given the chat markers). The comparisons with
transformers need torch and transformers and skip without them.
"""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import run_main
from test_pretrained import CORPUS, TEXTS as GPT2_TEXTS, train_vocabulary, write_hf_directory
from test_pretrained import FFN, HEADS, LAYERS, POSITIONS, WIDTH
from tfllm.chat_format import END_TOKEN, ROLE_TOKENS, render_ids
from tfllm.hf_format import export_hf, write_hf
from tfllm.models import GPTConfig, build_gpt
from tfllm.pretrained import add_chat_markers, gpt2_tensor_shapes, load_gpt2
from tfllm.tokenizers import CharTokenizer, SentencePieceTokenizer, load_tokenizer
from tfllm.training.run_dir import load_run

MARKERS = (*ROLE_TOKENS.values(), END_TOKEN)
# Unicode, whitespace runs, newlines, Chinese, emoji, code, characters no vocabulary has.
TEXTS = GPT2_TEXTS + [
    "def f(x):\n    return x  # ok\n", "__init__(self)", "trailing ", " leading",
    "\t\ttabs\r\n", "unseen ÆØÅ ₿ ẞ", "你好，世界。今天天气很好。", "<|user|>hi<|end|>",
]
# Hugging Face matches a special token's text wherever it occurs; tfllm does for the
# SentencePiece chat markers (user-defined symbols) only. Such texts are compared apart.
LITERAL_SPECIALS = ("<|", "<s>", "</s>", "<pad>", "<unk>", "<|endoftext|>")


def randomize(model, seed):
    """Every weight random, norms around 1: logits of several units, far apart."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        base = 1.0 if v.path.endswith("gamma") else 0.0
        scale = 0.3 if len(v.shape) > 1 else 0.5
        v.assign((base + scale * rng.standard_normal(v.shape)).astype("float32"))


def imported_gpt2(root):
    """load_gpt2 of a tiny random Hugging Face GPT-2 directory, with the chat markers."""
    vocab, merges = train_vocabulary()
    hparams = dict(n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH, n_inner=FFN,
                   n_positions=POSITIONS, vocab_size=len(vocab))
    rng = np.random.default_rng(5)
    tensors = {name: (0.3 * rng.standard_normal(shape) + name.endswith("ln_1.weight")
                      ).astype("float32") for name, shape in gpt2_tensor_shapes(hparams).items()}
    source = write_hf_directory(root / "gpt2_source", tensors, vocab, merges)
    return add_chat_markers(*load_gpt2(source))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{kind: (model, tokenizer, config, exported directory)}."""
    from pydoc_data.topics import topics

    root = tmp_path_factory.mktemp("hf")
    texts = [topics[k] for k in sorted(topics)[:6]] + CORPUS
    sp = SentencePieceTokenizer.train(texts, vocab_size=500)
    char = CharTokenizer.from_texts(texts)
    small = dict(context_length=48, num_layers=2, num_heads=2, embed_dim=32)
    models = {
        "sentencepiece": (sp, GPTConfig(vocab_size=sp.vocab_size, intermediate_dim=96,
                                        layer_norm_epsilon=1e-3, **small)),
        "char": (char, GPTConfig(vocab_size=char.vocab_size, tie_embeddings=False,
                                 use_bias=False, **small)),
    }
    found = {}
    for seed, (kind, (tokenizer, config)) in enumerate(models.items()):
        model = build_gpt(config)
        randomize(model, seed)
        found[kind] = (model, tokenizer, config)
    found["gpt2"] = imported_gpt2(root)
    return {kind: (*values, Path(write_hf(*values, root / kind))) for kind, values in found.items()}


@pytest.fixture(scope="module")
def hf():
    pytest.importorskip("torch", reason="the transformers comparison needs torch "
                        "(pip install torch==2.13.0, the CPU wheel)", exc_type=ImportError)
    return pytest.importorskip("transformers", reason="the transformers comparison needs "
                               "transformers (pip install transformers==5.24.0)",
                               exc_type=ImportError)


def hf_logits(hf_model, ids):
    import torch

    with torch.no_grad():
        return hf_model(torch.tensor([ids])).logits[0].numpy()


def assert_same_tokens(hf_tokenizer, tokenizer, texts):
    expected = tokenizer.tokenize(texts).to_list()
    got = hf_tokenizer(texts, add_special_tokens=False)["input_ids"]
    for text, want, have in zip(texts, expected, got):
        assert have == want, repr(text)


def tfllm_logits(model, ids):
    return model(np.asarray([ids], np.int32)).numpy()[0]


def sample_ids(tokenizer, context):
    ids = tokenizer.encode("The quick brown fox, 你好 🙂\n  def f(x): return naïve café " * 3)
    return ids[:context]


@pytest.mark.parametrize("kind", ["sentencepiece", "char", "gpt2"])
def test_transformers_gives_the_same_tokens_and_logits(exported, hf, kind):
    model, tokenizer, config, out = exported[kind]
    hf_tokenizer = hf.AutoTokenizer.from_pretrained(out)
    hf_model = hf.AutoModelForCausalLM.from_pretrained(out)
    plain = [t for t in TEXTS if not any(s in t for s in LITERAL_SPECIALS)]
    assert len(plain) >= 20
    assert_same_tokens(hf_tokenizer, tokenizer, TEXTS if kind == "sentencepiece" else plain)
    ids = sample_ids(tokenizer, config.context_length)
    expected = tfllm_logits(model, ids)
    got = hf_logits(hf_model, ids)
    vocab = tokenizer.vocab_size  # a padded table's extra rows are not exported
    assert got.shape == (len(ids), vocab)
    assert np.abs(expected).max() > 3  # random weights, logits well apart
    np.testing.assert_allclose(got, expected[:, :vocab], atol=1e-4, rtol=0)
    assert (expected[:, vocab:] == -1e9).all()
    assert hf_model.config.eos_token_id == tokenizer.eos_id
    # The chat markers are special tokens: matched whole, dropped by skip_special_tokens.
    for marker in MARKERS:
        assert hf_tokenizer(marker, add_special_tokens=False)["input_ids"] == \
            [tokenizer.token_id(marker)]
        assert marker in hf_tokenizer.all_special_tokens
    words = tokenizer.encode("hello world")
    marked = [tokenizer.token_id("<|user|>"), *words, tokenizer.token_id(END_TOKEN)]
    assert hf_tokenizer.decode(marked, skip_special_tokens=True) == tokenizer.decode(words)


@pytest.mark.parametrize("kind", ["sentencepiece", "gpt2"])
def test_chat_template_renders_tfllms_chat_format(exported, hf, kind):
    _, tokenizer, _, out = exported[kind]
    hf_tokenizer = hf.AutoTokenizer.from_pretrained(out)
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi <|end|> there, 你好"},
                {"role": "assistant", "content": "Hello!\n"},
                {"role": "user", "content": "  and now?"}]
    got = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                           tokenize=True, return_dict=True)["input_ids"]
    assert got == render_ids(tokenizer, messages, add_reply_prompt=True)[0].tolist()
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [tokenizer.eos_id, tokenizer.token_id(END_TOKEN)]


@pytest.mark.parametrize("kind", ["sentencepiece", "char", "gpt2"])
def test_load_gpt2_reads_the_export_back_as_the_same_model(exported, kind):
    model, tokenizer, config, out = exported[kind]
    back, back_tokenizer, back_config = load_gpt2(out)
    # GPT-2 always has biases: a model without them comes back with zero ones.
    assert back_config == dataclasses.replace(config, use_bias=True)
    assert back_tokenizer.kind == tokenizer.kind
    assert back_tokenizer._pieces == tokenizer._pieces
    if kind == "gpt2":  # the same vocabulary, merges and added pieces: the same tokenizer
        assert back_tokenizer.merges == tokenizer.merges
    else:  # rebuilt from tokenizer.json
        assert back_tokenizer.tokenize(TEXTS).to_list() == tokenizer.tokenize(TEXTS).to_list()
    ids = sample_ids(tokenizer, config.context_length)
    np.testing.assert_allclose(tfllm_logits(back, ids), tfllm_logits(model, ids), atol=1e-6)


def test_directory_layout_and_ids(exported):
    _, tokenizer, config, out = exported["sentencepiece"]
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json",
                                       "model.safetensors", "tokenizer.json",
                                       "tokenizer_config.json"]
    hf_config = json.loads((out / "config.json").read_text())
    assert (hf_config["bos_token_id"], hf_config["eos_token_id"], hf_config["pad_token_id"]) \
        == (2, 3, 0)
    assert hf_config["activation_function"] == "gelu_new"  # tfllm's tanh GELU
    assert hf_config["layer_norm_epsilon"] == 1e-3
    gpt2_out = exported["gpt2"][3]
    assert {"vocab.json", "merges.txt"} <= set(os.listdir(gpt2_out))
    assert "tokenizer.json" not in os.listdir(gpt2_out)
    gpt2_config = json.loads((gpt2_out / "config.json").read_text())
    assert gpt2_config["vocab_size"] == exported["gpt2"][1].vocab_size  # pad rows cut
    assert gpt2_config["pad_token_id"] is None  # GPT-2 has no pad token


def test_refusals_write_nothing(exported, tmp_path):
    model, tokenizer, config, _ = exported["sentencepiece"]
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists and is not empty"):
        write_hf(model, tokenizer, config, occupied)
    assert os.listdir(occupied) == ["keep.txt"]
    sinusoidal = dataclasses.replace(config, position_type="sinusoidal")
    with pytest.raises(ValueError, match="position_type='sinusoidal'"):
        write_hf(build_gpt(sinusoidal), tokenizer, sinusoidal, tmp_path / "new")
    with pytest.raises(FileNotFoundError, match="no run directory"):
        export_hf(tmp_path / "missing", tmp_path / "new")
    assert sorted(os.listdir(tmp_path)) == ["occupied"]  # no staging directory left
    empty = tmp_path / "empty"
    empty.mkdir()
    assert os.path.isfile(os.path.join(write_hf(model, tokenizer, config, empty),
                                       "model.safetensors"))


def test_cli_export_of_a_trained_run_and_train_py_init_round_trip(trained_run, tmp_path,
                                                                   corpus_file, capsys):
    """A real SentencePiece run: `python -m tfllm.export RUN --format hf OUT`, transformers
    on OUT (when installed), then `train.py --init OUT` starts from the same model."""
    from tfllm.export import main

    _, run_dir, _, _ = trained_run
    out = tmp_path / "hf"
    assert main([str(run_dir), "--format", "hf", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    model, tokenizer, config = load_run(run_dir)
    ids = sample_ids(tokenizer, config.context_length)
    expected = tfllm_logits(model, ids)
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError:
        transformers = None
    if transformers is not None:
        lines = corpus_file.read_text(encoding="utf-8").split("\n")  # the training text
        assert_same_tokens(transformers.AutoTokenizer.from_pretrained(out), tokenizer,
                           TEXTS + lines)
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(out)
        np.testing.assert_allclose(hf_logits(hf_model, ids), expected, atol=1e-4, rtol=0)
    # One step at a learning rate too small to move a float32 weight: the run starts
    # from, and keeps, exactly the exported model and tokenizer.
    again = run_main("train.py", "--init", out, "--data", corpus_file, "--name", "back",
                     "--steps", "1", "--lr", "1e-30", "--warmup-steps", "0", "--no-xla",
                     "--batch-size", "2", "--seq-len", "32", "--eval-every", "1",
                     "--eval-batches", "1", "--sample-tokens", "0", "--no-export",
                     cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    back, back_tokenizer, back_config = load_run(tmp_path / "runs" / "back")
    assert back_config == config
    assert load_tokenizer(tmp_path / "runs" / "back" / "tokenizer").kind == "sentencepiece"
    assert back_tokenizer.tokenize(TEXTS).to_list() == tokenizer.tokenize(TEXTS).to_list()
    np.testing.assert_allclose(tfllm_logits(back, ids), expected, atol=1e-5)
    # Once written, the directory is never overwritten: one error line, exit code 2.
    capsys.readouterr()
    assert main([str(run_dir), "--format", "hf", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: '{out}' already exists and is not empty: export to a new directory (an "
        "export never overwrites one)"]
