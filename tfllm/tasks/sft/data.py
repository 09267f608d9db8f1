"""SFT data: JSONL conversations checked line by line, rendered in the chat format with
their loss mask, cut to the sequence length, and laid out as (inputs, targets) rows.

The loss mask travels in the targets: a target is `pad_id` wherever the token is not one
the model should learn (system and user turns, role markers, padding), and the train loop
already scores only targets that differ from `pad_id`. So one (inputs, targets) pipeline
serves pretraining and SFT alike.

    conversations = read_conversations("chat.jsonl")   # [[{"role", "content"}, ...], ...]
    examples, stats = encode_conversations(tokenizer, conversations, max_tokens=129)
    inputs, targets = pack_rows(examples, seq_len=128, pad_id=tokenizer.pad_id)
"""

import json
import os

import numpy as np

from tfllm.chat_format import ChatTokens, messages_from_row, render_ids
from tfllm.data.text import held_out_split


def read_conversations(path, flag="--data"):
    """The conversations of a JSONL file, one per non-blank line: `{"messages": [...]}`
    or `{"prompt": ..., "response": ...}`. Every row is checked; the first bad one raises
    a ValueError naming the file and line."""
    if not os.path.isfile(path):
        what = "a directory" if os.path.isdir(path) else "missing"
        raise FileNotFoundError(f"{flag} '{path}' is {what}: give a JSONL file of "
                                'conversations ({"messages": [...]} per line)')
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise ValueError(f"'{path}' is not UTF-8 (undecodable byte at offset {e.start}): "
                         "convert it to UTF-8") from None
    conversations = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno}): "
                             "fix or remove that line") from None
        messages = messages_from_row(row, where)
        if not any(m["role"] == "assistant" for m in messages):
            raise ValueError(f"{where}: the conversation has no assistant turn, so there is "
                             "nothing to learn from it: add the reply or remove the line")
        conversations.append(messages)
    if not conversations:
        raise ValueError(f"'{path}' holds no conversations: give one JSON object per line")
    return conversations


def split_conversations(conversations, val_fraction, seed=0):
    """(train, validation): a seeded random `val_fraction` of the conversations (at least
    one each way) is held out. Random rather than the file's tail, since chat files are
    often grouped by topic or persona; seeded, so every run holds out the same ones."""
    return held_out_split(conversations, val_fraction, seed, "conversation")


def encode_conversations(tokenizer, conversations, max_tokens, tokens=None):
    """([(ids, learned), ...], stats) with each conversation at most `max_tokens` long.

    A longer one keeps its longest prefix of whole messages that still holds a learned
    token; when even the first reply does not fit whole, its tokens are cut at
    `max_tokens`. One with no learned token within `max_tokens` (a prompt longer than
    that) is left out. `stats` counts {"conversations", "truncated", "left_out"}.
    """
    tokens = tokens or ChatTokens(tokenizer)
    examples, truncated, left_out = [], 0, 0
    for messages in conversations:
        ids, learned = render_ids(tokenizer, messages, tokens=tokens)
        if len(ids) > max_tokens:
            truncated += 1
            ids, learned = _truncate(tokenizer, messages, ids, learned, max_tokens, tokens)
            if not learned.any():
                left_out += 1
                continue
        examples.append((ids, learned))
    return examples, {"conversations": len(conversations), "truncated": truncated,
                      "left_out": left_out}


def _truncate(tokenizer, messages, ids, learned, max_tokens, tokens):
    # A rendering is the start token then each message's own rendering, so whole-message
    # prefixes end at 1 + the cumulative message lengths.
    lengths = [len(render_ids(tokenizer, [m], tokens=tokens)[0]) - 1 for m in messages]
    ends = 1 + np.cumsum(lengths)
    for end in ends[::-1]:
        if end <= max_tokens and learned[:end].any():
            return ids[:end], learned[:end]
    return ids[:max_tokens], learned[:max_tokens]


def targets_of(ids, learned, pad_id):
    """(inputs, targets) of one token sequence: targets are the next tokens where they
    are learned, `pad_id` elsewhere (so the loss ignores them)."""
    return ids[:-1], np.where(learned[1:], ids[1:], pad_id).astype(np.int32)


def pack_rows(examples, seq_len, pad_id, window=64):
    """Training rows `(n, seq_len)` int32 inputs and targets, packed: each whole
    conversation goes into the first of the last `window` rows with room for it in
    `seq_len + 1` tokens (first fit, bounded so packing stays linear), or a new row; the
    rest of a row is padding. Each conversation starts with EOS, the document boundary
    pretraining packed on, and targets across a boundary are never learned."""
    rows, free = [], []  # conversations per row; tokens left in each row
    for example in examples:
        size = len(example[0])
        start = max(0, len(rows) - window)
        slot = next((k for k in range(start, len(rows)) if free[k] >= size), None)
        if slot is None:
            rows.append([])
            free.append(seq_len + 1)
            slot = len(rows) - 1
        rows[slot].append(example)
        free[slot] -= size
    return _stack([(np.concatenate([i for i, _ in r]), np.concatenate([m for _, m in r]))
                   for r in rows], seq_len, pad_id)


def conversation_rows(examples, pad_id):
    """One conversation per row, right-padded to the longest: what validation scores, so
    each reply is judged with its own conversation only."""
    longest = max((len(ids) for ids, _ in examples), default=2) - 1
    return _stack(examples, longest, pad_id)


def _stack(sequences, seq_len, pad_id):
    inputs = np.full((len(sequences), seq_len), pad_id, np.int32)
    targets = np.full((len(sequences), seq_len), pad_id, np.int32)
    for k, (ids, learned) in enumerate(sequences):
        x, y = targets_of(ids, learned, pad_id)
        inputs[k, :len(x)], targets[k, :len(y)] = x, y
    return inputs, targets
