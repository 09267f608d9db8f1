"""Serving a SavedModel version: the artifact TF Serving loads, through its signatures.

Only TensorFlow and TensorFlow Text run the model (no tfllm model code is imported):
`chat` answers conversations, `serving_default` continues prompts and `tokenize` counts
tokens for `usage`. A signature decodes a whole batch in one call with one set of
parameters, so jobs share a call when they are greedy with the same `max_tokens` (a
sampled row's draws would depend on its place in the batch), and a reply comes whole.
Token counts come from re-tokenizing the texts.
"""

import json
import os

import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the ops the SavedModel's tokenizer uses)

from tfllm.chat_format import defuse_markers
from tfllm.serve.protocol import chat_refusal, cut_at_stop
from tfllm.serve.worker import Worker
from tfllm.training.run_dir import recorded_task

METADATA = os.path.join("assets.extra", "tfllm.json")  # written by tfllm.export


def chat_prompt_length(turn_lengths, has_system, budget):
    """Tokens of the reply prompt the `chat` signature renders: start, the turns kept
    (the oldest dropped until the rest fits `budget`, a leading system turn always
    kept) and the reply marker; ValueError when the last message alone does not fit."""
    system = turn_lengths[0] if has_system else 0
    turns = turn_lengths[1:] if has_system else turn_lengths
    for start in range(len(turns) or 1):
        needed = 2 + system + sum(turns[start:])
        if needed <= budget:
            return needed
    raise ValueError(f"the last message alone is longer than the {budget} tokens the "
                     "context leaves for it: shorten it (or the system prompt)")


class SavedModelEngine(Worker):
    """The worker for `saved_models/NAME/VERSION` (a version written by tfllm.export).

    Args:
        path: the version directory.
        max_batch, batch_window: see `Worker`.
    """

    def __init__(self, path, max_batch=16, batch_window=0.01):
        super().__init__(max_batch, batch_window)
        meta_path = os.path.join(path, METADATA)
        if not os.path.exists(meta_path):
            raise FileNotFoundError(f"'{path}' has no {METADATA}: serve a SavedModel "
                                    "written by tfllm.export (train.py exports one)")
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        self.loaded = tf.saved_model.load(path)
        self.signatures = self.loaded.signatures
        version_dir = os.path.normpath(path)
        name, version = os.path.basename(os.path.dirname(version_dir)), \
            os.path.basename(version_dir)
        self.model_id = name if version.isdigit() else version
        self.context_length = meta["config"]["context_length"]
        self.chat_refusal = chat_refusal(self.model_id, recorded_task(path),
                                         "chat" in self.signatures)

    def token_counts(self, texts):
        """Token count of each text (without start or end markers)."""
        out = self.signatures["tokenize"](texts=tf.constant(list(texts), tf.string))
        return [int(n) for n in out["lengths"].numpy()]

    # --- requests -> jobs ----------------------------------------------------------------

    def chat_prompt(self, messages, max_tokens):
        """(messages, prompt tokens after dropping old turns); ValueError if the last
        message alone does not fit beside `max_tokens`."""
        if max_tokens >= self.context_length - 2:
            raise ValueError(f"max_tokens={max_tokens} leaves no room for the conversation "
                             f"in the model's context of {self.context_length}: lower it")
        lengths = self.token_counts(defuse_markers(m["content"]) for m in messages)
        turns = [n + 2 for n in lengths]  # role marker + content + end marker
        count = chat_prompt_length(turns, messages[0]["role"] == "system",
                                   self.context_length - max_tokens)
        return messages, count

    def completion_prompt(self, prompt, max_tokens):
        count = self.token_counts([prompt])[0] + 1  # EOS starts the prompt
        if count + max_tokens > self.context_length:
            raise ValueError(
                f"a prompt of {count} tokens plus max_tokens={max_tokens} exceeds the "
                f"model's context of {self.context_length}: shorten the prompt or lower "
                "max_tokens")
        return prompt, count

    def warm_up(self):
        """Run both generation signatures once (their first call builds the graph)."""
        self._call("completion", ["Hello"], 1)
        if self.chat_refusal is None:
            self._call("chat", [[{"role": "user", "content": "Hi"}]], 1)

    # --- the worker side -----------------------------------------------------------------

    def fits(self, batch, job):
        first = batch[0]
        return (job.kind == first.kind and job.sampling.max_tokens == first.sampling.max_tokens
                and job.sampling.temperature == 0 and first.sampling.temperature == 0)

    def _call(self, kind, prompts, max_tokens, sampling=None):
        params = {"max_new_tokens": tf.constant(max_tokens, tf.int32),
                  "temperature": tf.constant(0.0), "top_k": tf.constant(0),
                  "top_p": tf.constant(1.0), "seed": tf.constant(0)}
        if sampling is not None:
            params.update(temperature=tf.constant(float(sampling.temperature)),
                          top_k=tf.constant(int(sampling.top_k)),
                          top_p=tf.constant(float(sampling.top_p)),
                          seed=tf.constant(int(sampling.seed)))
        if kind == "chat":
            out = self.signatures["chat"](
                conversations=tf.constant([json.dumps(p) for p in prompts]), **params)
            texts = out["replies"]
        else:
            out = self.signatures["serving_default"](prompts=tf.constant(prompts), **params)
            texts = out["outputs"]
        return [t.decode("utf-8", errors="replace") for t in texts.numpy()]

    def run_batch(self, jobs):
        first = jobs[0]
        try:
            texts = self._call(first.kind, [job.prompt for job in jobs],
                               first.sampling.max_tokens, first.sampling)
        except tf.errors.InvalidArgumentError as e:
            if len(jobs) > 1:  # one bad row: answer the others, each on its own
                for job in jobs:
                    self.run_batch([job])
                return
            reason = e.message.split("assertion failed: ")[-1].splitlines()[0]
            first.emit("error", f"the SavedModel refused the request: {reason}")
            self.count("failed")
            return
        whole = self.token_counts(texts)
        cut = [cut_at_stop(text, job.sampling.stop) for text, job in zip(texts, jobs)]
        kept = self.token_counts(cut)
        for job, text, short, n_whole, n_kept in zip(jobs, texts, cut, whole, kept):
            if job.cancelled:
                self.finish(job, None, n_whole)
                continue
            if short:
                job.emit("text", short)
            reason = "length" if short == text and n_whole >= job.sampling.max_tokens \
                else "stop"
            self.finish(job, reason, n_kept)
