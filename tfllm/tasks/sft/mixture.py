"""Instruction mixtures: several sources turned into conversations in the one chat format
and mixed by weight, for `train.py --task sft --data mixture.json`.

    {"seed": 0, "examples": 6000,
     "sources": [
       {"data": "cmn-eng", "kind": "translate", "direction": "en-zh", "weight": 2},
       {"data": "cmn-eng", "kind": "translate", "direction": "zh-en"},
       {"data": "gsm8k", "kind": "math"},
       {"data": "sst2", "kind": "sentiment", "labels": ["negative", "positive"]},
       {"data": "waimai_10k", "kind": "sentiment", "labels": ["负面", "正面"],
        "language": "zh"},
       {"data": "personality_chat", "kind": "chat", "weight": 0.5},
       {"data": "tang_poetry", "kind": "continue", "language": "zh"}]}

`data` is a file (relative to the mixture file) or a dataset name (`python -m
tfllm.datasets list`, `NAME:SPLIT` for a split). Kinds:

    translate   source<TAB>target rows (English<TAB>Chinese); `direction` en-zh or zh-en
    math        {"prompt", "response"} JSONL; calculator notes <<...>> are dropped
    sentiment   label<TAB>text rows; `labels` names each label id (0, 1, ...) in words
    chat        conversations JSONL, as --data takes it
    continue    text, one piece per line (or JSONL with a "text" field): the first half of
                a piece's sentences is the message, the rest the reply (poetry continuation)

Each source contributes `examples * weight / total weight` conversations (default
`examples`: every row of every source once), drawn without repeats while it has rows
enough, in a seeded order; the mixture is then shuffled.
"""

import json
import os
import re

import numpy as np

from tfllm.datasets import resolve_data
from tfllm.tasks.classify.data import read_examples
from tfllm.tasks.seq2seq.data import read_pairs
from tfllm.tasks.sft.data import read_conversations

PROMPTS = {
    "en-zh": "Translate into Chinese:\n{text}",
    "zh-en": "把这句话翻译成英文：\n{text}",
    "sentiment/en": "Is the sentiment of this text positive or negative? Answer in one "
                    "word.\n{text}",
    "sentiment/zh": "这段文字的情感是正面还是负面？用一个词回答。\n{text}",
    "continue/en": "Continue this text:\n{text}",
    "continue/zh": "续写下文：\n{text}",
}
KINDS = ("translate", "math", "sentiment", "chat", "continue")
SENTENCE = re.compile(r"[^。？！；.?!;]+[。？！；.?!;]*")


def is_mixture(path):
    return str(path).endswith(".json") and os.path.isfile(path)


def read_mixture(path):
    """The conversations a mixture file describes, mixed and shuffled (seeded)."""
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"mixture '{path}' is not valid JSON ({e.msg} at line {e.lineno}): "
                         "fix it") from None
    sources = spec.get("sources") if isinstance(spec, dict) else None
    if not sources or not isinstance(sources, list):
        raise ValueError(f"mixture '{path}' needs a non-empty \"sources\" list")
    folder = os.path.dirname(os.path.abspath(path))
    drawn = [(source, conversations_of(source, folder, f"mixture '{path}' source {i}"))
             for i, source in enumerate(sources)]
    weights = np.array([float(s.get("weight", 1.0)) for s, _ in drawn])
    if (weights <= 0).any():
        raise ValueError(f"mixture '{path}': every weight must be positive")
    total = int(spec.get("examples") or sum(len(c) for _, c in drawn))
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    mixed = []
    for (_, conversations), share in zip(drawn, weights / weights.sum()):
        mixed += sample(conversations, max(1, round(total * share)), rng)
    return [mixed[i] for i in rng.permutation(len(mixed))]


def sample(items, count, rng):
    """`count` items: whole seeded permutations of `items`, the last one cut."""
    out = []
    while len(out) < count:
        out += [items[i] for i in rng.permutation(len(items))]
    return out[:count]


def conversations_of(source, folder, where):
    """One source's rows as conversations ([{"role", "content"}, ...])."""
    kind = source.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown kind {kind!r}: choose one of {', '.join(KINDS)}")
    if not source.get("data"):
        raise ValueError(f"{where}: give its \"data\" (a file or a dataset name)")
    path = source["data"]
    local = os.path.join(folder, path)
    path = local if os.path.exists(local) else resolve_data(path)
    if kind == "chat":
        return read_conversations(path)
    if kind == "math":
        return [c[:-1] + [{"role": "assistant",
                           "content": re.sub(r"<<[^>]*>>", "", c[-1]["content"])}]
                for c in read_conversations(path)]
    if kind == "continue":
        prompt = PROMPTS["continue/" + language_of(source, where)]
        return [turn(prompt.format(text=head), tail)
                for head, tail in continuation_pairs(read_pieces(path))]
    if kind == "translate":
        direction = source.get("direction", "en-zh")
        if direction not in ("en-zh", "zh-en"):
            raise ValueError(f"{where}: direction {direction!r}: use en-zh or zh-en")
        return [turn(PROMPTS[direction].format(text=src), tgt)
                for src, tgt in read_pairs(path, reverse=direction == "zh-en")]
    labels = source.get("labels")
    if not isinstance(labels, (list, dict)) or not labels:
        raise ValueError(f"{where}: a sentiment source needs \"labels\": the word for each "
                         "label id, e.g. [\"negative\", \"positive\"]")
    names = {str(i): name for i, name in enumerate(labels)} if isinstance(labels, list) \
        else {str(k): v for k, v in labels.items()}
    prompt = PROMPTS["sentiment/" + language_of(source, where)]
    conversations = []
    for example in read_examples(path):
        if example.label not in names:
            raise ValueError(f"{example.source}: label {example.label!r} has no word in "
                             f"{where}'s \"labels\"")
        conversations.append(turn(prompt.format(text=example.text), names[example.label]))
    return conversations


def language_of(source, where):
    language = source.get("language", "en")
    if language not in ("en", "zh"):
        raise ValueError(f"{where}: language {language!r}: use en or zh")
    return language


def read_pieces(path):
    """The non-empty lines of a text file, or the "text" fields of a JSONL file."""
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    if not str(path).endswith(".jsonl"):
        return [line for line in lines if line]
    pieces = []
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            pieces.append(str(json.loads(line)["text"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path}:{number}: not a JSON object with a \"text\" field: "
                             "fix the line") from None
    return pieces


def continuation_pairs(pieces):
    """(first half of the sentences, the rest) of each piece with two sentences or more:
    a quatrain's first couplet and its second, a regulated verse's first four lines and
    its last four."""
    pairs = []
    for piece in pieces:
        sentences = SENTENCE.findall(piece)
        if len(sentences) >= 2:
            half = len(sentences) // 2
            pairs.append(("".join(sentences[:half]).strip(),
                          "".join(sentences[half:]).strip()))
    return pairs


def turn(user, assistant):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def load_conversations(path, flag="--data"):
    """The conversations of a JSONL file, or of a mixture file (.json)."""
    return read_mixture(path) if is_mixture(path) else read_conversations(path, flag)
