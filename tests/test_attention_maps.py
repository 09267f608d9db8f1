"""Attention maps: the probabilities are the ones the layers mix their values with, the
next-token probabilities are the model's, and evaluate.py --attention draws them (token
labels, a CJK fallback where no CJK font is installed)."""

import numpy as np

from conftest import refused


def tiny_gpt():
    import keras

    from tfllm.models import GPTConfig, build_gpt

    keras.utils.set_random_seed(3)
    return build_gpt(GPTConfig(vocab_size=40, context_length=16, num_layers=2, num_heads=2,
                               embed_dim=16))


def test_maps_are_the_weights_the_layers_mix_values_with():
    from keras import ops

    from tfllm.attention_maps import attention_maps
    from tfllm.models.gpt import transformer_blocks

    model = tiny_gpt()
    ids = [1, 7, 3, 9, 9, 12, 5]
    maps, next_probs = attention_maps(model, ids)
    assert maps.shape == (2, 2, 7, 7)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-6)
    assert np.all(np.triu(maps, k=1) == 0)  # causal: nothing from the future
    # Layer 0's output rebuilt from the maps equals the attention layer's own output.
    block = transformer_blocks(model)[0]
    x = block.attention_norm(model.get_layer("embedding")(np.array([ids], np.int32)))
    value = ops.reshape(ops.split(block.attention.qkv(x), 3, axis=-1)[2], (1, 7, 2, 8))
    mixed = np.einsum("hqk,khd->qhd", maps[0], ops.convert_to_numpy(value)[0])
    rebuilt = ops.convert_to_numpy(block.attention.output_dense(mixed.reshape(1, 7, 16)))
    np.testing.assert_allclose(rebuilt, ops.convert_to_numpy(block.attention(x)), atol=1e-5)
    logits = ops.convert_to_numpy(model(np.array([ids], np.int32)))[0].astype(np.float64)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(next_probs, probs[np.arange(6), ids[1:]], rtol=1e-5)


def test_byte_tokens_show_the_character_they_complete():
    from tfllm.attention_maps import token_pieces
    from tfllm.tokenizers import SentencePieceTokenizer

    tokenizer = SentencePieceTokenizer.train(["A list is a thing, and so is a tuple."] * 200,
                                             vocab_size=290)
    pieces = token_pieces(tokenizer, tokenizer.encode("A list is 中"))
    assert "".join(pieces).replace("<byte>", "") == "A list is 中"
    assert pieces[-3:] == ["<byte>", "<byte>", "中"]  # byte fallback: three UTF-8 bytes


def test_labels_fall_back_to_code_points_without_a_cjk_font():
    from tfllm.attention_maps import token_labels

    assert token_labels(["中文", " a", "\n"], font=None) == ["U+4E2D U+6587", "\u2423a", "\\n"]
    assert token_labels(["中文"], font="Noto Sans CJK SC") == ["中文"]


def test_evaluate_attention_writes_the_grid(trained_run, tmp_path, capsys):
    import evaluate

    from tfllm.attention_maps import cjk_font

    _, run_dir, saved_model, _ = trained_run
    assert evaluate.main([str(run_dir), "--attention", "A list is 中文", "--out",
                          str(tmp_path)]) == 0
    out = capsys.readouterr().out
    png = tmp_path / "attention.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [line for line in out.splitlines() if line[:1] == " " or line[:1].isdigit()]
    assert len(rows) >= 4 and all(0.0 <= float(r.split()[0]) <= 1.0 for r in rows)
    if cjk_font() is None:
        assert "U+" not in out  # printed as text; only the plot's labels fall back
    message = refused(evaluate.main, saved_model, "--attention", "Hi", capsys=capsys)
    assert "--attention needs the run directory" in message
    assert refused(evaluate.main, run_dir, "--attention", "", capsys=capsys) == \
        "error: --attention text is empty: give some words to look at"


def test_attention_on_nothing_is_one_line(tmp_path, capsys):
    import evaluate

    assert "neither a run directory" in refused(evaluate.main, tmp_path, "--attention", "x",
                                                capsys=capsys)


def test_loss_curves_of_several_runs_in_one_plot(trained_run, tmp_path, capsys):
    import shutil

    import evaluate

    run_dir = trained_run[1]
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(run_dir / "metrics.csv", other / "metrics.csv")
    assert evaluate.main([str(run_dir), str(other), "--losses", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "several" not in capsys.readouterr().err
    assert "2 models given" in refused(evaluate.main, run_dir, other, capsys=capsys)
    assert "has no metrics.csv" in refused(evaluate.main, run_dir, tmp_path / "nope",
                                           "--losses", capsys=capsys)
