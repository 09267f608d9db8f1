"""tfllm.tasks.sft.data: reading and checking JSONL conversations, the loss mask in the
targets, truncation and packing, with a real SentencePiece tokenizer."""

import json

import numpy as np
import pytest

from tfllm.chat_format import ChatTokens, render_ids

THINGS = ["sky", "grass", "sun", "snow", "coal", "sea", "rose", "lemon", "plum", "cloud",
          "leaf", "brick", "milk", "ink", "sand", "fire"]
COLOURS = ["blue", "green", "yellow", "white", "black", "blue", "red", "yellow", "purple",
           "grey", "green", "red", "white", "black", "brown", "orange"]


def make_conversations(n, seed=0):
    """`n` made-up conversations in a learnable pattern: system, user and assistant turns,
    some two turns long, some as prompt/response rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a, b = rng.integers(len(THINGS), size=2)
        ask = f"What colour is the {THINGS[a]}?"
        say = f"The {THINGS[a]} is {COLOURS[a]}."
        if i % 4 == 0:
            rows.append({"prompt": ask, "response": say})
            continue
        messages = [{"role": "user", "content": ask}, {"role": "assistant", "content": say}]
        if i % 4 == 1:
            messages.insert(0, {"role": "system", "content": "You answer questions about colours."})
        if i % 4 == 2:
            messages += [{"role": "user", "content": f"And the {THINGS[b]}?"},
                         {"role": "assistant", "content": f"The {THINGS[b]} is {COLOURS[b]}."}]
        rows.append({"messages": messages})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer(corpus_file):
    from tfllm.tokenizers import SentencePieceTokenizer

    return SentencePieceTokenizer.train([corpus_file.read_text(encoding="utf-8")],
                                        vocab_size=400)


def test_reads_both_row_forms_and_skips_blank_lines(tmp_path):
    from tfllm.tasks.sft.data import read_conversations

    path = write_jsonl(tmp_path / "chat.jsonl", make_conversations(8))
    path.write_text(path.read_text() + "\n   \n", encoding="utf-8")
    conversations = read_conversations(str(path))
    assert len(conversations) == 8
    assert conversations[0] == [{"role": "user", "content": "What colour is the ink?"},
                                {"role": "assistant", "content": "The ink is black."}]
    assert [m["role"] for m in conversations[1]] == ["system", "user", "assistant"]


@pytest.mark.parametrize("line, expected", [
    ('{"messages": [', "line 3: not valid JSON"),
    ('{"messages": [{"role": "bot", "content": "hi"}]}',
     "line 3: message 0 has unknown role 'bot'"),
    ('{"messages": [{"role": "user", "content": "hi"}]}',
     "line 3: the conversation has no assistant turn"),
    ('{"prompt": "hi"}', 'line 3: expected "messages", or "prompt" and "response"'),
    ('[1, 2]', "line 3: expected a JSON object"),
])
def test_a_bad_row_names_file_and_line(tmp_path, line, expected):
    from tfllm.tasks.sft.data import read_conversations

    path = tmp_path / "bad.jsonl"
    good = json.dumps(make_conversations(1)[0])
    path.write_text(f"{good}\n{good}\n{line}\n{good}\n", encoding="utf-8")
    with pytest.raises(ValueError) as error:
        read_conversations(str(path))
    message = str(error.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_empty_and_missing_files_are_refused(tmp_path):
    from tfllm.tasks.sft.data import read_conversations

    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no conversations"):
        read_conversations(str(tmp_path / "empty.jsonl"))
    with pytest.raises(FileNotFoundError, match="missing"):
        read_conversations(str(tmp_path / "nope.jsonl"))


def test_held_out_share_is_deterministic_and_disjoint():
    from tfllm.tasks.sft.data import split_conversations

    conversations = [[{"role": "assistant", "content": str(i)}] for i in range(50)]
    train, val = split_conversations(conversations, 0.2)
    again = split_conversations(conversations, 0.2)
    assert (train, val) == again
    assert len(val) == 10 and len(train) == 40
    assert sorted(m[0]["content"] for m in train + val) == sorted(str(i) for i in range(50))
    # Random, not the tail: grouped files would otherwise validate on one group only.
    assert val != conversations[-10:]


def test_targets_hold_only_assistant_tokens_and_their_end(tokenizer):
    from tfllm.tasks.sft.data import targets_of

    tokens = ChatTokens(tokenizer)
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What colour is the sky?"},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": "And grass?"},
                {"role": "assistant", "content": "Green."}]
    ids, learned = render_ids(tokenizer, messages, tokens=tokens)
    inputs, targets = targets_of(ids, learned, tokenizer.pad_id)
    assert np.array_equal(inputs, ids[:-1])
    kept = targets[targets != tokenizer.pad_id]
    replies = [tokenizer.encode("Blue."), tokenizer.encode("Green.")]
    assert kept.tolist() == replies[0] + [tokens.end_id] + replies[1] + [tokens.end_id]


def _trainer(tokenizer):
    import tensorflow as tf

    from tfllm.models import GPTConfig, build_gpt
    from tfllm.training.loop import Trainer
    from tfllm.training.optimizer import build_optimizer

    config = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=128, num_layers=1,
                       num_heads=2, embed_dim=32)
    model = build_gpt(config)
    return Trainer(model, build_optimizer(model, 1e-3, 10, 0), tf.distribute.get_strategy(),
                   pad_id=tokenizer.pad_id), model


def test_loss_ignores_system_user_and_padding_targets(tokenizer):
    """What the train loop scores: changing every non-assistant target (system, user,
    markers) or adding padding leaves the loss unchanged; an assistant target does not."""
    from tfllm.data.rows import rows_dataset
    from tfllm.tasks.sft.data import targets_of

    trainer, _ = _trainer(tokenizer)
    messages = [{"role": "system", "content": "You answer questions about colours."},
                {"role": "user", "content": "What colour is the sky?"},
                {"role": "assistant", "content": "The sky is blue."}]
    ids, learned = render_ids(tokenizer, messages)
    pad = tokenizer.pad_id

    def loss(inputs, targets):
        data = rows_dataset(inputs[None], targets[None], 1, training=False)
        return trainer.evaluate(data)

    x, y = targets_of(ids, learned, pad)
    base, count = loss(x, y)
    assert count == int(learned.sum())
    other = np.where(learned, ids, (ids + 17) % tokenizer.vocab_size + 8)  # every prompt token
    _, y_changed = targets_of(other, learned, pad)
    assert np.array_equal(loss(x, y_changed), (base, count))
    padded = (np.concatenate([x, np.full(20, pad, np.int32)]),
              np.concatenate([y, np.full(20, pad, np.int32)]))
    padded_loss, padded_count = loss(*padded)
    assert padded_count == count and abs(padded_loss - base) < 1e-5
    reply = np.flatnonzero(learned)[1]
    flipped = ids.copy()
    flipped[reply] = (flipped[reply] + 17) % tokenizer.vocab_size
    assert abs(loss(x, targets_of(flipped, learned, pad)[1])[0] - base) > 1e-4


def test_long_conversations_keep_whole_turns_from_the_start(tokenizer):
    from tfllm.tasks.sft.data import encode_conversations

    short = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    long_tail = short + [{"role": "user", "content": "Tell me more. " * 20},
                         {"role": "assistant", "content": "No. " * 20}]
    long_prompt = [{"role": "user", "content": "words " * 100}, short[1]]
    long_reply = [short[0], {"role": "assistant", "content": "yes " * 100}]
    examples, stats = encode_conversations(
        tokenizer, [short, long_tail, long_prompt, long_reply], max_tokens=40)
    assert stats == {"conversations": 4, "truncated": 3, "left_out": 1}
    (ids0, _), (ids1, learned1), (ids2, learned2) = examples
    assert np.array_equal(ids1, ids0)  # the first exchange, whole
    assert len(ids2) == 40 and learned2.any() and learned2[-1]  # the reply cut at the limit
    assert all(len(ids) <= 40 for ids, _ in examples)


def test_packing_keeps_conversations_whole_and_every_learned_token(tokenizer):
    from tfllm.chat_format import messages_from_row
    from tfllm.tasks.sft.data import encode_conversations, pack_rows

    rows = make_conversations(30)
    examples, _ = encode_conversations(tokenizer, [messages_from_row(r) for r in rows], 65)
    inputs, targets = pack_rows(examples, 64, tokenizer.pad_id)
    assert inputs.shape == targets.shape and inputs.shape[1] == 64
    assert len(inputs) < len(examples)  # more than one conversation in some rows
    learned = sum(int(m[1:].sum()) for _, m in examples)
    assert int((targets != tokenizer.pad_id).sum()) == learned
    # Each conversation starts with EOS, never cut: the EOS count matches.
    starts = int((inputs == tokenizer.eos_id).sum())
    assert starts == len(examples)
