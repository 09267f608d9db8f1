"""The in-graph JSON conversation parser against Python's json module, in eager mode, in a
traced tf.function, and in a loaded SavedModel (test_chat_serving.py loads a chat model's
signature where tfllm is absent)."""

import json
import random
import re

import pytest
import tensorflow as tf

from tfllm.chat_json import EXPECTED, check_roles, parse_conversation

ROLES = ["system", "user", "assistant"]
TRICKY = ['say "hi"', "back\\slash \\n not a newline", "line\nbreak\ttab\r\n", "{[,:]}\"",
          "中文 and 日本語", "emoji 😀👍🏽 and 𝄞", "control \u0001\u001f \b\f", "/slash/ \\/",
          "", " ", '{"role": "user", "content": "nested"}', "\\u0041 is literal", "é\u00e9"]


@pytest.fixture(scope="module")
def parse():
    """parse_conversation traced the way a serving signature traces it."""
    return tf.function(parse_conversation, input_signature=[tf.TensorSpec([], tf.string)],
                       jit_compile=False)


def parsed(fn, text):
    roles, contents = fn(tf.constant(text))
    return ([r.decode("utf-8") for r in roles.numpy()],
            [c.decode("utf-8") for c in contents.numpy()])


def expected(text):
    value = json.loads(text)
    messages = value["messages"] if isinstance(value, dict) else value
    return [m["role"] for m in messages], [m["content"] for m in messages]


def conversation(contents, **extra):
    return [{"role": ROLES[i % 3], "content": c, **extra} for i, c in enumerate(contents)]


CASES = {
    "ascii_escaped": json.dumps(conversation(TRICKY)),
    "raw_utf8": json.dumps(conversation(TRICKY), ensure_ascii=False),
    "pretty": json.dumps(conversation(TRICKY), indent=2, ensure_ascii=False),
    "compact": json.dumps(conversation(TRICKY), separators=(",", ":")),
    "wrapped": json.dumps({"model": "x", "messages": conversation(TRICKY), "stream": False,
                           "stop": ["\n", "]"], "options": {"messages": [1], "t": 0.5}}),
    "content_first": json.dumps([{"content": "a", "role": "user"},
                                 {"content": "b", "role": "assistant"}]),
    "extra_keys": json.dumps([{"name": "n", "role": "user", "w": -1.5e-3, "ok": True,
                               "no": None, "content": "a", "z": 0, "f": False,
                               "meta": {"role": "x", "content": ["not", "this"]}}]),
    "whitespace": ' \n\t[ {\r\n "role"\t:  "user" ,"content" :"a"  } ]\n ',
    "one": '[{"role":"user","content":"hi"}]',
    "surrogates": '[{"role":"user","content":"\\ud83d\\ude00\\uD83D\\uDE00x\\u00e9\\u4e2d"}]',
    "escaped_key": '[{"r\\u006fle":"user","\\u0063ontent":"\\"\\\\\\/\\b\\f\\n\\r\\t"}]',
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_json_loads(parse, name):
    assert parsed(parse, CASES[name]) == expected(CASES[name])


def test_eager_matches_json_loads():
    for name in ("raw_utf8", "wrapped", "surrogates"):
        assert parsed(parse_conversation, CASES[name]) == expected(CASES[name])


def test_randomized_round_trip(parse):
    rng = random.Random(0)
    alphabet = list('ab z"\\/{}[]:,\n\t\r\b\f\u0000\u001fé中😀👍🏽\u2028') + ["\\u0041", "true", "1"]
    for trial in range(40):
        contents = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
                    for _ in range(rng.randint(1, 6))]
        # Some with the keys in the other order, plus an ignored key.
        messages = [dict(reversed(list(m.items())), extra=rng.random())
                    if rng.random() < 0.5 else m for m in conversation(contents)]
        value = {"messages": messages} if trial % 2 else messages
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5,
                          indent=rng.choice([None, 0, 2]))
        assert parsed(parse, text) == expected(text), text


def lenient_expected(text):
    """What parse_conversation should give for any text: json.loads's messages, with
    lone surrogates as U+FFFD and duplicate keys refused; None where it must fail."""
    def no_duplicates(pairs):
        if len({k for k, _ in pairs}) < len(pairs):
            raise ValueError("duplicate key")
        return dict(pairs)

    try:
        value = json.loads(text, object_pairs_hook=no_duplicates)
    except ValueError:
        return None
    messages = value.get("messages") if isinstance(value, dict) else value
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in messages):
        return None
    utf8 = lambda s: re.sub("[\ud800-\udfff]", "\ufffd", s)  # noqa: E731
    return ([utf8(m["role"]) for m in messages], [utf8(m["content"]) for m in messages])


def test_mutated_json_agrees_with_json_loads(parse):
    """Random edits of valid conversations: accepted exactly when Python accepts them."""
    rng = random.Random(1)
    seeds = [CASES["wrapped"], CASES["extra_keys"], CASES["surrogates"], CASES["pretty"][:400]
             + "\"}]"]
    edits = list('{}[]:,"\\ 0-1.eE') + ["true", "null", '"a"', "\\u", "\\ud83d", "01"]
    accepted = 0
    for _ in range(150):
        text = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text) + 1)
            cut = rng.choice([0, 1])
            text = text[:at] + (rng.choice(edits) if rng.random() < 0.7 else "") + text[at + cut:]
        want = lenient_expected(text)
        try:
            got = parsed(parse, text)
        except tf.errors.InvalidArgumentError:
            got = None
        assert got == want, text
        accepted += want is not None
    assert 10 < accepted < 140  # both outcomes exercised


def test_lone_surrogate_becomes_replacement_character(parse):
    text = '[{"role":"user","content":"a\\ud800b\\udc00c"}]'
    assert parsed(parse, text) == (["user"], ["a\ufffdb\ufffdc"])


def test_long_and_deep_inputs_finish(parse):
    long = json.dumps(conversation(["x" * 200_000, "y\\" * 50_000] + ["z"] * 2000))
    assert parsed(parse, long) == expected(long)
    with pytest.raises(tf.errors.InvalidArgumentError, match="message 0 is not an object"):
        parse(tf.constant("[" * 50_000 + "]" * 50_000))


MESSAGE = '[{"role":"user","content":"a"}]'
ERRORS = {
    "": "the input is empty or does not start with [ or {",
    "  \n": "the input is empty or does not start with [ or {",
    '"text"': "the input is empty or does not start with [ or {",
    "42": "the input is empty or does not start with [ or {",
    "hello": "unexpected text `hello` at byte 0",
    "[]": "the messages array is empty",
    '{"messages": []}': "the messages array is empty",
    "{}": 'the object needs exactly one "messages" key holding an array',
    '{"msgs": ' + MESSAGE + "}": 'the object needs exactly one "messages" key holding an array',
    '{"messages": {"role": "user", "content": "a"}}': 'exactly one "messages" key holding an',
    '{"messages": ' + MESSAGE + ', "messages": ' + MESSAGE + "}": 'exactly one "messages" key',
    "[1]": "message 0 is not an object",
    '[{"role":"user","content":"a"}, ["x"]]': "message 1 is not an object",
    '[{"role":"user"}]': 'message 0 must have exactly one "content" (it has 0)',
    '[{"role":"user","content":"a"},{"content":"b"}]':
        'message 1 must have exactly one "role" (it has 0)',
    '[{"role":"user","role":"system","content":"a"}]':
        'message 0 must have exactly one "role" (it has 2)',
    '[{"role":"user","content":1}]': 'message 0 "content" must be a string',
    '[{"role":"user","content":null}]': 'message 0 "content" must be a string',
    '[{"role":"user","content":["a"]}]': 'message 0 "content" must be a string',
    '[{"role":true,"content":"a"}]': 'message 0 "role" must be a string',
    MESSAGE + " x": "unexpected text `x` at byte 32",
    MESSAGE + " []": "unbalanced brackets or trailing text: `[` at byte 32",
    MESSAGE + "]": "unbalanced brackets or trailing text: `]` at byte 31",
    MESSAGE[:-1]: "unbalanced brackets or trailing text: end of input (byte 30)",
    '[{"role":"user","content":"a}]': 'unexpected text `"a` at byte 26',
    '[{"role":"user","content":"a"]}': "invalid JSON, unexpected `]` at byte 29",
    '[{"role":"user","content":"a",}]': "invalid JSON, unexpected `}` at byte 30",
    '[{"role":"user","content":"a"},]': "invalid JSON, unexpected `]` at byte 31",
    '[{"role":"user","content":"a"} {"role":"user","content":"b"}]':
        "invalid JSON, unexpected `{` at byte 31",
    '[{"role" "user","content":"a"}]': 'invalid JSON, unexpected `"user"` at byte 9',
    '[{"role":"user","content":"a","n":01}]': "invalid JSON, unexpected `1` at byte 35",
    '[{"role":"user","content":"a","n":NaN}]': "unexpected text `NaN` at byte 34",
    "[{'role':'user','content':'a'}]": "unexpected text `'role'` at byte 2",
    '[{"role":"user","content":"\\x"}]': 'unexpected text `"\\x"` at byte 26',
    '[{"role":"user","content":"\\u12"}]': 'unexpected text `"\\u12"` at byte 26',
    '[{"role":"user","content":"a\nb"}]': "unexpected text",
    b'[{"role":"user","content":"\xff"}]': "the input is not valid UTF-8",
}


@pytest.mark.parametrize("text", list(ERRORS), ids=range(len(ERRORS)))
def test_invalid_input_names_the_problem(parse, text):
    for fn in (parse, parse_conversation):
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            fn(tf.constant(text))
        # Assertions print their message escaped (C-style in graphs, repr() in eager).
        message = re.sub(r"\\(.)", r"\1", error.value.message)
        assert EXPECTED in message and ERRORS[text] in message, message


def test_check_roles(parse):
    roles, _ = parse(tf.constant(CASES["wrapped"]))
    assert check_roles(roles, ROLES).numpy().tolist() == roles.numpy().tolist()
    checked = tf.function(lambda r: check_roles(r, ROLES))
    for fn in (checked, lambda r: check_roles(r, ROLES)):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match="chat message 1 has role `bot`: roles must be one of "
                                 "system, user, assistant"):
            fn(tf.constant(["user", "bot", "tool"]))


def test_the_parser_in_a_loaded_saved_model(tmp_path):
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="conversation")],
                 jit_compile=False)
    def chat(conversation):
        roles, contents = parse_conversation(conversation)
        return {"roles": check_roles(roles, ROLES), "contents": contents}

    module.chat = chat
    tf.saved_model.save(module, str(tmp_path / "model"), signatures={"chat": chat})

    chat = tf.saved_model.load(str(tmp_path / "model")).signatures["chat"]
    text = CASES["wrapped"]
    out = chat(conversation=tf.constant(text))
    assert [[s.decode() for s in out[k].numpy()] for k in ("roles", "contents")] == list(
        expected(text))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r'exactly one \\"content\\"'):
        chat(conversation=tf.constant('[{"role": "user"}]'))
