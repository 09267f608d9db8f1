"""The chat format: one conversation layout for SFT data, the chat CLI and the `chat`
signature of a SavedModel.

A conversation is a list of messages `{"role": "system"|"user"|"assistant",
"content": str}`. It renders, in token ids, as

    EOS <|system|> text <|end|> <|user|> text <|end|> <|assistant|> text <|end|> ...

EOS is the document boundary the model saw in pretraining. Role and end-of-turn markers
are the tokenizer's reserved ids (4-7), inserted as ids rather than parsed from text.
To ask for a reply, the rendering ends with `<|assistant|>`, and generation stops at
`<|end|>`. In training, the model learns the assistant's tokens and its `<|end|>` only.
"""

import re

import numpy as np
import tensorflow as tf

ROLES = ("system", "user", "assistant")
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
END_TOKEN = "<|end|>"
# Marker text typed inside a message ("<|end|>") would tokenize to the marker itself with
# SentencePiece (they are user-defined symbols); it becomes "<end>" so that no message
# can open or close a turn.
_MARKER_TEXT = r"<\|(system|user|assistant|end)\|>"


def defuse_markers(text):
    return re.sub(_MARKER_TEXT, r"<\1>", text)


class ChatTokens:
    """The ids of the chat markers in one tokenizer."""

    def __init__(self, tokenizer):
        self.role_ids = {role: tokenizer.token_id(piece) for role, piece in ROLE_TOKENS.items()}
        self.end_id = tokenizer.token_id(END_TOKEN)
        self.start_id = tokenizer.eos_id
        self.assistant_id = self.role_ids["assistant"]


def check_messages(messages, where="conversation"):
    """`messages` as a validated list of {"role", "content"} dicts; a ValueError naming
    `where` (e.g. "train.jsonl line 12") and the problem otherwise."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: 'messages' must be a non-empty list of "
                         '{"role": ..., "content": ...} objects')
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f'{where}: message {i} must be an object with "role" and '
                             f'"content", got {_short(message)}')
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise ValueError(f"{where}: message {i} has unknown role {_short(role)}: use "
                             f"one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"{where}: message {i} content must be a string, got "
                             f"{type(content).__name__}")
        if role == "system" and i != 0:
            raise ValueError(f"{where}: a system message may only come first (message {i})")
        checked.append({"role": role, "content": content})
    return checked


def messages_from_row(row, where="row"):
    """The messages of one SFT row: `{"messages": [...]}` or `{"prompt", "response"}`."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        return check_messages(row["messages"], where)
    if "prompt" in row and "response" in row:
        return check_messages([{"role": "user", "content": row["prompt"]},
                               {"role": "assistant", "content": row["response"]}], where)
    raise ValueError(f'{where}: expected "messages", or "prompt" and "response"; got keys '
                     f"{sorted(row)}")


def render_ids(tokenizer, messages, add_reply_prompt=False, tokens=None):
    """(ids, learned) for one conversation: int32 ids and a bool array, True at the
    assistant's tokens and their end-of-turn (the tokens SFT learns to produce).

    add_reply_prompt: end with `<|assistant|>`, ready for the model to write a reply.
    """
    tokens = tokens or ChatTokens(tokenizer)
    contents = [defuse_markers(m["content"]) for m in messages]
    content_ids = tokenizer.tokenize(tf.constant(contents, tf.string)).to_list() \
        if contents else []
    ids, learned = [tokens.start_id], [False]
    for message, body in zip(messages, content_ids):
        is_reply = message["role"] == "assistant"
        ids += [tokens.role_ids[message["role"]], *body, tokens.end_id]
        learned += [False] + [is_reply] * (len(body) + 1)
    if add_reply_prompt:
        ids.append(tokens.assistant_id)
        learned.append(False)
    return np.asarray(ids, np.int32), np.asarray(learned, bool)


def render_text(messages, add_reply_prompt=False):
    """The same layout as readable text (markers spelled out), for logs and docs."""
    text = "".join(f"{ROLE_TOKENS[m['role']]}{m['content']}{END_TOKEN}" for m in messages)
    return text + (ROLE_TOKENS["assistant"] if add_reply_prompt else "")


def trim_to_fit(tokenizer, messages, budget, tokens=None):
    """The longest suffix of whole turns (keeping a leading system message) whose reply
    prompt fits in `budget` tokens: history is dropped from the oldest turn first.
    Raises ValueError when even the last message alone does not fit."""
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns = messages[len(system):]
    for start in range(len(turns)):
        kept = system + turns[start:]
        if len(render_ids(tokenizer, kept, True, tokens)[0]) <= budget:
            return kept
    raise ValueError(f"the last message alone is longer than the {budget} tokens the "
                     "context leaves for it: shorten it (or the system prompt)")


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def render_prompt(tokenizer, tokens, roles, contents, budget):
    """Graph version for the reply prompt: `roles`, `contents` 1-D tf.string (one
    conversation) -> 1-D int32 ids ending in `<|assistant|>`, the same ids as
    `render_ids(..., add_reply_prompt=True)` after `trim_to_fit` to `budget` tokens.

    TensorFlow ops only: the `chat` signature of a SavedModel runs it.
    """
    role_ids = tf.where(
        roles == "system", tokens.role_ids["system"],
        tf.where(roles == "user", tokens.role_ids["user"], tokens.assistant_id))
    body = tokenizer.tokenize(tf.strings.regex_replace(contents, _MARKER_TEXT, r"<\1>"))
    count = tf.shape(roles, out_type=tf.int64)[0]
    turns = tf.concat([tf.RaggedTensor.from_tensor(role_ids[:, None]), body,
                       tf.RaggedTensor.from_tensor(tf.fill([count, 1], tokens.end_id))], axis=1)
    lengths = turns.row_lengths()
    has_system = roles[0] == "system"
    system_length = tf.where(has_system, lengths[0], 0)
    # Tokens needed to keep every turn from i on (plus the system turn, start and
    # reply marker); history goes from the oldest turn until the rest fits.
    needed = tf.cumsum(lengths, reverse=True) + system_length + 2
    first = tf.range(count) == 0
    needed = tf.where(first & has_system, system_length + 2, needed)
    keep = needed <= tf.cast(budget, tf.int64)
    check = tf.debugging.Assert(
        keep[-1], ["the last message alone is longer than the tokens the context leaves "
                   "for it (context minus max_new_tokens): shorten it, got needed, budget",
                   needed[-1], budget])
    with tf.control_dependencies([check]):
        kept = tf.ragged.boolean_mask(turns, keep).flat_values
    return tf.concat([[tokens.start_id], kept, [tokens.assistant_id]], axis=0)


def prompt_ids(tokenizer, messages, budget, tokens=None):
    """Eager convenience: the reply prompt of `messages` as a list of ids, oldest turns
    dropped to fit `budget`; ValueError when the last message alone does not fit."""
    tokens = tokens or ChatTokens(tokenizer)
    roles = tf.constant([m["role"] for m in messages])
    contents = tf.constant([m["content"] for m in messages])
    try:
        return render_prompt(tokenizer, tokens, roles, contents, budget).numpy().tolist()
    except tf.errors.InvalidArgumentError:
        raise ValueError(f"the last message alone is longer than the {budget} tokens the "
                         "context leaves for it: shorten it") from None
