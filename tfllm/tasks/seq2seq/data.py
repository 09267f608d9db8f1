"""Pairs for sequence to sequence: `source<TAB>target` files (further columns, such as
Tatoeba's attribution, are ignored), seeded splits, and the rows an encoder-decoder
trains on.

Every bad row (no tab, an empty side) is an error naming the file and line: no row is
ever skipped. Only entirely empty lines are not rows.
"""

import numpy as np

from tfllm.data.rows import encode_array
from tfllm.data.text import held_out_split, read_text_file


def read_pairs(path, reverse=False):
    """[(source, target)] of a `source<TAB>target` file; `reverse` swaps the columns."""
    pairs = []
    for number, line in enumerate(read_text_file(path).split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line:
            continue
        columns = line.split("\t")
        if len(columns) < 2:
            raise ValueError(f"{path}:{number}: no tab in this row: write each row as "
                             "source<TAB>target")
        source, target = columns[0].strip(), columns[1].strip()
        for side, text in (("source", source), ("target", target)):
            if not text:
                raise ValueError(f"{path}:{number}: the {side} is empty: give both sides "
                                 "some text or remove the row")
        pairs.append((target, source) if reverse else (source, target))
    if not pairs:
        raise ValueError(f"'{path}' holds no source<TAB>target rows")
    return pairs


def split_pairs(pairs, val_fraction, seed=0):
    """(train, validation): a seeded random `val_fraction` of the pairs held out."""
    return held_out_split(pairs, val_fraction, seed, "pair")


def encode_pairs(tokenizer, pairs, seq_len):
    """((sources, decoder inputs), decoder targets): int32 `(n, seq_len)` rows.

    A source is its tokens (cut to `seq_len - 1`) and EOS, as `encode_texts` makes every
    text. The decoder reads EOS (the start token) and the target's tokens, and learns each
    next token and a final EOS; padding is the tokenizer's pad id, which the loss skips.
    """
    sources = encode_array(tokenizer, [s for s, _ in pairs], seq_len)
    targets = encode_array(tokenizer, [t for _, t in pairs], seq_len)
    inputs = np.concatenate([np.full((len(pairs), 1), tokenizer.eos_id, np.int32),
                             targets[:, :-1]], axis=1)
    # The EOS a target ends with is only ever a target: as an input it would be a token
    # after the end, learning nothing.
    inputs = np.where(inputs == tokenizer.eos_id, tokenizer.pad_id, inputs)
    inputs[:, 0] = tokenizer.eos_id
    return (sources, inputs), targets
