"""The `chat` signature (what TF Serving answers) and the chat CLI (a terminal user),
both against the in-process engine on the same weights."""

import fcntl
import json
import os
import pty
import select
import subprocess
import sys
import termios
import time

import pytest

from conftest import ROOT, refused

CONVERSATION = [{"role": "system", "content": "You answer about Python."},
                {"role": "user", "content": "What is a list?"}]
MAX_NEW = 10

CHAT_LOADER = r"""
import json, sys
import tensorflow as tf, tensorflow_text
m = tf.saved_model.load(sys.argv[1])
conversations = json.loads(sys.argv[2])
chat = m.signatures["chat"]
def call(convs, **kw):
    params = {**dict(max_new_tokens=10, temperature=0.0, top_k=0, top_p=1.0, seed=0), **kw}
    dtypes = dict(max_new_tokens=tf.int32, temperature=tf.float32, top_k=tf.int32,
                  top_p=tf.float32, seed=tf.int32)
    out = chat(conversations=tf.constant([json.dumps(c) for c in convs]),
               **{k: tf.constant(v, dtypes[k]) for k, v in params.items()})
    return [r.decode("utf-8") for r in out["replies"].numpy()]
out = {"replies": call(conversations), "sampled": call(conversations[:1], temperature=0.9,
                                                          top_k=20, seed=3)}
errors = {}
for name, bad in {"role": '[{"role": "bot", "content": "hi"}]',
                  "json": '[{"role": "user", "content": "hi"}',
                  "long": json.dumps([{"role": "user", "content": "word " * 200}])}.items():
    try:
        chat(conversations=tf.constant([bad]), max_new_tokens=tf.constant(10),
             temperature=tf.constant(0.0), top_k=tf.constant(0), top_p=tf.constant(1.0),
             seed=tf.constant(0))
        errors[name] = None
    except tf.errors.InvalidArgumentError as e:
        errors[name] = e.message
out["errors"] = errors
out["after_errors"] = call(conversations[:1])
out["tfllm_imported"] = sorted(m for m in sys.modules if m.startswith("tfllm"))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def engine(trained_run):
    from tfllm.chat_format import ChatTokens
    from tfllm.generation import Generator
    from tfllm.training.run_dir import load_run

    model, tokenizer, config = load_run(str(trained_run[1]))
    return Generator(model, tokenizer, config.context_length), ChatTokens(tokenizer), config


def expected_reply(engine, messages, max_new=MAX_NEW, **sampling):
    from tfllm.chat_format import prompt_ids

    generator, tokens, config = engine
    ids = prompt_ids(generator.tokenizer, messages, config.context_length - max_new, tokens)
    return "".join(generator.stream(ids, max_new, stop_token_ids=[tokens.end_id,
                                                                  generator.tokenizer.eos_id],
                                    **sampling))


def test_chat_signature_in_a_fresh_process_answers_like_the_engine(trained_run, engine):
    long_history = [CONVERSATION[0]] + [
        {"role": r, "content": "Tell me more about lists and tuples, please."}
        for r in ("user", "assistant") * 6] + [CONVERSATION[1]]
    conversations = [CONVERSATION, CONVERSATION[1:], long_history]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", CHAT_LOADER, str(trained_run[2]),
                             json.dumps(conversations)], capture_output=True, text=True,
                            env=env, cwd="/", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["tfllm_imported"] == []
    expected = [expected_reply(engine, c) for c in conversations]
    assert got["replies"] == expected and all(expected)
    # A history longer than the context is answered from its latest turns.
    assert got["sampled"] == [expected_reply(engine, CONVERSATION, temperature=0.9, top_k=20,
                                             seed=3)]
    assert "unknown role" in got["errors"]["role"] or "role" in got["errors"]["role"]
    assert got["errors"]["json"] is not None
    assert "last message alone is longer" in got["errors"]["long"]
    assert got["after_errors"] == expected[:1]


class Terminal:
    """The chat CLI in a pseudo-terminal, read until a marker appears."""

    def __init__(self, *args):
        self.master, slave = pty.openpty()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tfllm.chat", *map(str, args)], stdin=slave, stdout=slave,
            stderr=slave, env=env, cwd=ROOT, start_new_session=True,
            # The terminal as the child's controlling tty: Ctrl-C then sends it SIGINT.
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.seen = ""

    def read_until(self, marker, timeout=180):
        deadline = time.time() + timeout
        while marker not in self.seen:
            left = deadline - time.time()
            assert left > 0 and self.process.poll() is None, \
                f"no {marker!r} in time; got:\n{self.seen[-2000:]}"
            ready, _, _ = select.select([self.master], [], [], min(left, 1.0))
            if ready:
                try:
                    self.seen += os.read(self.master, 4096).decode("utf-8", "replace")
                except OSError:  # the child closed the terminal
                    pass
        before, _, self.seen = self.seen.partition(marker)
        return before

    def send(self, text):
        os.write(self.master, text.encode("utf-8"))

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        os.close(self.master)


def reply_of(transcript):
    """The assistant's text in the terminal output of one turn."""
    return transcript.split("assistant> ", 1)[1].replace("\r\n", "\n").rstrip("\n")


def test_chat_cli_holds_two_turns_obeys_reset_and_exits(trained_run, engine):
    terminal = Terminal(trained_run[1], "--max-new-tokens", MAX_NEW, "--system",
                        CONVERSATION[0]["content"])
    try:
        terminal.read_until("you> ")
        terminal.send("What is a list?\n")
        first = reply_of(terminal.read_until("you> "))
        assert first == expected_reply(engine, CONVERSATION)
        terminal.send("And a tuple?\n")
        second = reply_of(terminal.read_until("you> "))
        history = CONVERSATION + [{"role": "assistant", "content": first},
                                  {"role": "user", "content": "And a tuple?"}]
        assert second == expected_reply(engine, history)  # the first turn was in context
        terminal.send("/reset\n")
        assert "(conversation reset)" in terminal.read_until("you> ")
        terminal.send("And a tuple?\n")
        fresh = reply_of(terminal.read_until("you> "))
        assert fresh == expected_reply(engine, [CONVERSATION[0], history[-1]])
        terminal.send("/exit\n")
        assert terminal.process.wait(timeout=60) == 0
    finally:
        terminal.close()


def test_ctrl_c_stops_a_reply_and_keeps_the_session(trained_run):
    terminal = Terminal(trained_run[1], "--max-new-tokens", 40)
    try:
        terminal.read_until("you> ")
        terminal.send("Tell me everything.\n")
        terminal.read_until("assistant> ")
        terminal.send("\x03")  # the terminal turns it into SIGINT for the foreground job
        assert "[stopped]" in terminal.read_until("you> ")
        terminal.send("/reset\n")
        assert "(conversation reset)" in terminal.read_until("you> ")
        terminal.send("\x04")  # Ctrl-D leaves
        assert terminal.process.wait(timeout=60) == 0
    finally:
        terminal.close()


def test_one_shot_prompt_for_scripts_and_bad_input(trained_run, engine, tmp_path, capsys):
    # In this process: the terminal tests above run the real command.
    from tfllm import chat

    one_shot = ("--prompt", "What is a list?", "--system", CONVERSATION[0]["content"],
                "--max-new-tokens", str(MAX_NEW))
    assert chat.main([str(trained_run[1]), *one_shot]) == 0
    reply = capsys.readouterr().out
    assert reply.rstrip("\n") == expected_reply(engine, CONVERSATION)
    # The SavedModel answers the same through its chat signature.
    assert chat.main([str(trained_run[2]), *one_shot]) == 0
    assert capsys.readouterr().out == reply
    for args, message in [((tmp_path,), "neither a run directory"),
                          ((trained_run[1], "--top-p", "0"), "top_p must be in (0, 1]"),
                          ((trained_run[1], "--prompt", " "), "--prompt is empty"),
                          ((trained_run[2], "--max-new-tokens", "60"), "leaves no room")]:
        assert message in refused(chat.main, *args, capsys=capsys)
