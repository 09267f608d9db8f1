"""What a GPT attends to: every layer's and head's attention probabilities over a text,
and the probability the model gave each next token, as numbers and as one PNG grid.

The probabilities are recomputed from each block's own weights (its norm and qkv
projection) on the inputs the real blocks produce, so they are exactly the weights the
model mixes its values with; `attention_maps` checks nothing else about the layers.
"""

import math

import numpy as np
from keras import ops

from tfllm.atomic import save_figure
from tfllm.models.gpt import transformer_blocks

# Fonts with CJK glyphs that a machine may have (Debian: fonts-noto-cjk, fonts-wqy-*).
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "WenQuanYi Zen Hei",
             "WenQuanYi Micro Hei", "Source Han Sans SC", "SimHei", "Droid Sans Fallback",
             "AR PL UMing CN")


def attention_maps(model, token_ids):
    """For one row of `token_ids` (a list of ints): (probabilities `(layers, heads, seq,
    seq)`, next-token probabilities `(seq - 1,)`: what the model gave token i + 1 after
    reading tokens 0..i), as float64 NumPy arrays."""
    ids = ops.convert_to_tensor(np.asarray([token_ids], np.int32))
    x = model.get_layer("embedding")(ids)
    maps = []
    for block in transformer_blocks(model):
        attention = block.attention
        heads = (1, len(token_ids), attention.num_heads, attention.head_dim)
        query, key, _ = (ops.reshape(part, heads) for part in
                         ops.split(attention.qkv(block.attention_norm(x)), 3, axis=-1))
        scores = ops.einsum("bqhd,bkhd->bhqk", ops.cast(query, "float32"),
                            ops.cast(key, "float32")) / math.sqrt(attention.head_dim)
        causal = np.tril(np.ones((len(token_ids), len(token_ids)), bool))
        scores = ops.where(causal[None, None], scores, -1e9)
        maps.append(ops.convert_to_numpy(ops.softmax(scores, axis=-1))[0])
        x = block(x)
    logits = ops.convert_to_numpy(model(ids, training=False))[0].astype(np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    chosen = log_probs[np.arange(len(token_ids) - 1), np.asarray(token_ids[1:])]
    return np.stack(maps).astype(np.float64), np.exp(chosen)


def cjk_font():
    """The name of an installed font with CJK glyphs, or None."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


def token_labels(pieces, font):
    """Axis labels for the token pieces: as they are where the font can draw them; a
    piece with CJK characters and no CJK font shows its code points instead."""
    labels = []
    for piece in pieces:
        shown = piece.replace("\n", "\\n").replace(" ", "\u2423") or "\u2205"
        if font is None and any(ord(c) > 0x2E7F for c in shown):
            shown = " ".join(f"U+{ord(c):04X}" if ord(c) > 0x2E7F else c for c in shown)
        labels.append(shown)
    return labels


def plot_attention(maps, next_probs, pieces, path, title=""):
    """One PNG: a row per layer and a column per head, each the (query x key) attention
    with the tokens on both axes, and a last row with each next token's probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers, heads, length, _ = maps.shape
    font = cjk_font()
    labels = token_labels(pieces, font)
    size = max(2.2, 0.28 * length)
    with plt.rc_context({"font.family": [font, "DejaVu Sans"] if font else ["DejaVu Sans"],
                         "font.size": 7}):
        fig, axes = plt.subplots(layers + 1, heads, figsize=(size * heads, size * (layers + 1)),
                                 squeeze=False)
        for layer in range(layers):
            for head in range(heads):
                ax = axes[layer, head]
                ax.imshow(maps[layer, head], cmap="viridis", vmin=0.0, vmax=1.0)
                ax.set_title(f"layer {layer} head {head}")
                ax.set_xticks(range(length), labels, rotation=90)
                ax.set_yticks(range(length), labels)
        for ax in axes[layers, 1:]:
            ax.axis("off")
        bars = axes[layers, 0]
        bars.bar(range(1, length), next_probs)
        bars.set_xticks(range(1, length), labels[1:], rotation=90)
        bars.set_ylim(0, 1)
        bars.set_title("probability of each next token")
        note = "" if font or all(label == p for label, p in zip(labels, pieces)) else \
            " (no CJK font installed: CJK pieces shown as code points)"
        fig.suptitle(token_labels([title], font)[0].replace("\u2423", " ") + note)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        save_figure(fig, path, dpi=110)
        plt.close(fig)
    return path


def token_pieces(tokenizer, ids):
    """The text each token adds to the decoded text. A byte token that only starts a
    character (SentencePiece's byte fallback) adds nothing yet: it shows as <byte>, and the
    token that completes the character shows the character."""
    pieces, done = [], ""
    for k in range(len(ids)):
        text = tokenizer.decode(ids[:k + 1])
        if text.endswith("\ufffd"):
            pieces.append("<byte>")
            continue
        pieces.append(text[len(done):] if text.startswith(done) else text)
        done = text
    return pieces


def attention_report(model, tokenizer, text, path, max_tokens=48):
    """Tokenize `text` (after the EOS every sequence starts with), cut to `max_tokens`,
    compute the maps and write the PNG; returns (maps, next-token probabilities, pieces)."""
    ids = [tokenizer.eos_id] + tokenizer.encode(text)[: max_tokens - 1]
    if len(ids) < 2:
        raise ValueError("--attention text is empty: give some words to look at")
    pieces = ["<eos>"] + token_pieces(tokenizer, ids[1:])
    maps, next_probs = attention_maps(model, ids)
    plot_attention(maps, next_probs, pieces, path, title=repr(text[:60]))
    return maps, next_probs, pieces

