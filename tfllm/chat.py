"""Chat with a model in the terminal.

    python -m tfllm.chat runs/tiny-sft                      # multi-turn, streamed
    python -m tfllm.chat saved_models/tiny-sft/1 --system "You are terse."
    python -m tfllm.chat runs/tiny-sft --prompt "Hello!"     # one reply, then exit

A run directory streams the reply token by token (the compiled KV-cache engine). A
SavedModel answers through its `chat` signature, the same graph TF Serving runs, so its
reply is shown whole. In a session: /reset forgets the conversation, /exit (or Ctrl-D)
leaves, Ctrl-C stops the reply being written and keeps the session. When the
conversation outgrows the context, the oldest turns are dropped (the system prompt
stays).
"""

import argparse
import contextlib
import json
import os
import signal
import sys

from tfllm.cli import exit_code, import_tensorflow_quietly
from tfllm.quiet import quiet_stderr
from tfllm.tasks import require

HELP = "commands: /reset (forget the conversation), /exit (or Ctrl-D) to leave"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m tfllm.chat", description="Chat with a fine-tuned tfllm model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="a run directory (runs/NAME) or a SavedModel "
                   "(saved_models/NAME/VERSION) with a chat signature")
    p.add_argument("--system", default="", help="system prompt that opens the conversation")
    p.add_argument("--prompt", default=None,
                   help="one-shot: answer this message, print the reply and exit")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="longest reply, in tokens (default: 128, at most half the context)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest; 0: all")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (per reply: seed + turn)")
    return p.parse_args(argv)


class RunChat:
    """Replies from a run directory's weights, streamed through the Python engine."""

    def __init__(self, run_dir):
        from tfllm.chat_format import ChatTokens
        from tfllm.generation import Generator
        from tfllm.training.run_dir import load_run

        model, self.tokenizer, config = load_run(run_dir)
        try:
            self.tokens = ChatTokens(self.tokenizer)
        except ValueError:  # an imported GPT-2's vocabulary
            raise ValueError(f"'{run_dir}' has a {self.tokenizer.kind} tokenizer without "
                             "chat markers: chat with a run fine-tuned by train.py --task "
                             "sft") from None
        self.context_length = config.context_length
        self.generator = Generator(model, self.tokenizer, config.context_length)

    def warm_up(self, max_new_tokens):
        """Compile the prompt pass and one decoding step before the first question."""
        from tfllm.chat_format import prompt_ids

        ids = prompt_ids(self.tokenizer, [{"role": "user", "content": "Hi"}],
                         self.context_length - max_new_tokens, self.tokens)
        next(self.generator.stream(ids, max_new_tokens, stop_token_ids=[]), None)

    def reply(self, messages, max_new_tokens, sampling, on_piece, stopped=()):
        from tfllm.chat_format import prompt_ids

        ids = prompt_ids(self.tokenizer, messages, self.context_length - max_new_tokens,
                         self.tokens)
        stops = [self.tokens.end_id, self.tokenizer.eos_id]
        pieces = []
        for piece in self.generator.stream(ids, max_new_tokens, stop_token_ids=stops,
                                           **sampling):
            if stopped:
                break
            pieces.append(piece)
            on_piece(piece)
        if stopped:
            on_piece(" [stopped]")
        return "".join(pieces)


class SavedModelChat:
    """Replies from a SavedModel's `chat` signature (what TF Serving answers)."""

    def __init__(self, path):
        import tensorflow as tf

        self.tf = tf
        self.loaded = tf.saved_model.load(path)
        with open(os.path.join(path, "assets.extra", "tfllm.json"), encoding="utf-8") as f:
            self.context_length = json.load(f)["config"]["context_length"]
        if "chat" not in self.loaded.signatures:
            raise ValueError(f"'{path}' has no chat signature: export a model whose "
                             "tokenizer has the chat tokens (train.py --task sft)")

    def warm_up(self, max_new_tokens):
        self.reply([{"role": "user", "content": "Hi"}], 1,
                   {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}, lambda _: None)

    def reply(self, messages, max_new_tokens, sampling, on_piece, stopped=()):
        tf = self.tf
        try:
            out = self.loaded.signatures["chat"](
                conversations=tf.constant([json.dumps(messages)]),
                max_new_tokens=tf.constant(max_new_tokens, tf.int32),
                temperature=tf.constant(sampling["temperature"], tf.float32),
                top_k=tf.constant(sampling["top_k"], tf.int32),
                top_p=tf.constant(sampling["top_p"], tf.float32),
                seed=tf.constant(sampling["seed"], tf.int32))
        except tf.errors.InvalidArgumentError as e:
            reason = e.message.split("assertion failed: ")[-1].splitlines()[0]
            raise ValueError(f"the SavedModel refused the conversation: {reason}") from None
        if stopped:  # the reply comes whole: Ctrl-C while it was computed drops it
            on_piece("[stopped]")
            return ""
        text = out["replies"].numpy()[0].decode("utf-8", errors="replace")
        on_piece(text)
        return text


@contextlib.contextmanager
def ctrl_c_noted():
    """Within the block Ctrl-C is noted in the yielded list instead of raising
    KeyboardInterrupt: an exception thrown into a running TensorFlow call can crash
    the process, so a reply checks the list between tokens."""
    stopped = []
    previous = signal.signal(signal.SIGINT, lambda *_: stopped.append(True))
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGINT, previous)


def reply_length(asked, context_length):
    """`asked` (None: 128, at most half the context), checked to leave room for a prompt."""
    if asked is None:
        return min(128, context_length // 2)
    if asked > context_length - 8:
        raise ValueError(f"--max-new-tokens {asked} leaves no room for the conversation in "
                         f"the model's context of {context_length}: use at most "
                         f"{context_length // 2} or so")
    return asked


def chat_for(path):
    """SavedModelChat or RunChat for `path`, refused in one line (before TensorFlow loads)
    when its task's models are no GPTs (a classifier, a translator); RunChat refuses a
    tokenizer without the chat markers."""
    require(path, "chat", lambda task: task.generates)
    return SavedModelChat if os.path.exists(os.path.join(path, "saved_model.pb")) else RunChat


def write(text):
    sys.stdout.write(text)
    sys.stdout.flush()


class Session:
    """One conversation: the messages so far and the turn count (for per-turn seeds)."""

    def __init__(self, chat, args):
        self.chat, self.args = chat, args
        self.reset()

    def reset(self):
        self.messages = [{"role": "system", "content": self.args.system}] \
            if self.args.system else []
        self.turn = 0

    def say(self, text, prefix=""):
        """Answer `text` (printed after `prefix`), keeping both turns in the history."""
        args = self.args
        sampling = {"temperature": args.temperature, "top_k": args.top_k,
                    "top_p": args.top_p, "seed": args.seed + self.turn}
        asked = self.messages + [{"role": "user", "content": text}]
        with ctrl_c_noted() as stopped:
            write(prefix)
            reply = self.chat.reply(asked, args.max_new_tokens, sampling, write, stopped)
        write("\n")
        self.messages = asked + [{"role": "assistant", "content": reply}]
        self.turn += 1
        return reply


def interactive(session):
    write(f"{HELP}\n")
    while True:
        try:
            line = input("you> ")
        except EOFError:
            write("\n")
            return
        except KeyboardInterrupt:
            write("\n(Ctrl-C stops a reply; /exit or Ctrl-D leaves)\n")
            continue
        text = line.strip()
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            session.reset()
            write("(conversation reset)\n")
            continue
        if not text:
            continue
        try:
            session.say(text, prefix="assistant> ")
        except ValueError as e:  # e.g. a message longer than the context: keep the session
            write(f"\nerror: {e}\n")


def main(argv=None):
    args = parse_args(argv)

    def run():
        if args.prompt is not None and not args.prompt.strip():
            raise ValueError("--prompt is empty: give the message to answer")
        kind = chat_for(args.model)
        import_tensorflow_quietly()  # before tfllm.generation imports TensorFlow
        from tfllm.generation import check_generation_args

        asked = 1 if args.max_new_tokens is None else args.max_new_tokens
        check_generation_args(asked, args.temperature, args.top_k, args.top_p)
        # TF's C++ side logs notices on its first ops (oneDNN); keep them off the chat.
        with quiet_stderr():
            chat = kind(args.model)
        args.max_new_tokens = reply_length(args.max_new_tokens, chat.context_length)
        with quiet_stderr():
            chat.warm_up(args.max_new_tokens)
        session = Session(chat, args)
        if args.prompt is not None:
            session.say(args.prompt)
        else:
            interactive(session)

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
