"""Serving a run directory: batched KV-cache decoding, streamed token by token.

Jobs decoded together share one prompt pass and one model call per step; each row keeps
its own sampling parameters, seed, stop tokens, stop strings and length, and rows that
finish (or whose client leaves) stop while the others go on. A row's tokens are exactly
what `Generator.stream` chooses for it alone: positions count real tokens, pads are
masked, and a sampled row draws from its own logits with its own `(seed, step)`.

The decoding functions are TensorFlow graphs without XLA, traced with shapes left free:
batch sizes and lengths change with every batch, and an XLA compile per shape takes
seconds where a request takes milliseconds.
"""

import os
import time

import numpy as np
import tensorflow as tf

from tfllm.chat_format import ChatTokens, prompt_ids
from tfllm.generation import (cut_at_stop, decode_step, encode_prompts, left_pad, prefill,
                              sample_tokens)
from tfllm.graph_function import graph_function
from tfllm.models.gpt import init_cache
from tfllm.serve.protocol import chat_refusal
from tfllm.serve.worker import Job, Sampling, Worker
from tfllm.training.run_dir import load_run, recorded_task

# A prompt is left-padded to a multiple of this many tokens, as Generator pads it, so a
# request decoded alone runs the same shapes as Generator.stream.
BUCKET = 32


def stop_prefix_length(text, stop):
    """The length of the longest end of `text` that begins one of the `stop` strings
    (text that may turn out to be part of a stop string)."""
    return max((k for s in stop for k in range(1, min(len(s), len(text) + 1))
                if text.endswith(s[:k])), default=0)


class RowState:
    """One job's reply as its tokens come: the text shown so far and when it ends.

    Shown text is final: a partial UTF-8 character (a byte piece waiting for the rest)
    and an end that may begin a stop string are held back until the next tokens settle
    them, so the streamed pieces always join to the plain reply.
    """

    def __init__(self, job, stop_ids):
        self.job, self.stop_ids = job, stop_ids
        self.ids, self.text, self.shown, self.done = [], "", "", False

    def take(self, token, text):
        """Add `token`, whose addition makes the reply `text` (None for a stop token);
        returns (piece to send or "", finish reason or None)."""
        sampling = self.job.sampling
        if token in self.stop_ids:
            return self._show(self.text.rstrip("\ufffd")), "stop"
        self.ids.append(token)
        self.text = text
        cut = cut_at_stop(text, sampling.stop)
        if cut != text:
            return self._show(cut), "stop"
        ready = text.rstrip("\ufffd")
        if len(self.ids) >= sampling.max_tokens:
            return self._show(ready), "length"
        return self._show(ready[:len(ready) - stop_prefix_length(ready, sampling.stop)]), None

    def _show(self, ready):
        if len(ready) <= len(self.shown):
            return ""
        piece, self.shown = ready[len(self.shown):], ready
        return piece


class RunEngine(Worker):
    """The batching decoder for a train.py run directory.

    Args:
        run_dir: the run directory (its latest checkpoint is served).
        max_batch, batch_window: see `Worker`.
        step_delay: seconds to pause after each decoding step (demos and tests of
            streaming and of stopping a reply; 0 in normal use).
    """

    def __init__(self, run_dir, max_batch=16, batch_window=0.01, step_delay=0.0):
        super().__init__(max_batch, batch_window)
        model, self.tokenizer, config = load_run(run_dir)
        self.model_id = os.path.basename(os.path.normpath(run_dir))
        self.context_length = config.context_length
        self.step_delay = step_delay
        try:
            self.tokens = ChatTokens(self.tokenizer)
        except ValueError:  # an imported GPT-2's vocabulary
            self.tokens = None
        self.chat_refusal = chat_refusal(self.model_id, recorded_task(run_dir),
                                         self.tokens is not None)
        pad = self.tokenizer.pad_id
        ids = tf.TensorSpec([None, None], tf.int32)  # (batch, length)
        row, scalar = tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32)
        caches = [tuple(tf.TensorSpec([None, None, *t.shape[2:]], t.dtype) for t in pair)
                  for pair in init_cache(model, 1, 1)]  # (batch, length, heads, head_dim)
        # One trace each, whatever the batch, prompt and reply lengths.
        self._prefill = graph_function(lambda p, n: prefill(model, p, n, pad),
                                       input_signature=[ids, scalar])
        self._step = graph_function(lambda *args: decode_step(model, *args),
                                    input_signature=[row, caches, ids, scalar, row, scalar])
        self._sample = graph_function(sample_tokens, reduce_retracing=True)

    # --- requests -> jobs (called from the web side; raise ValueError for a 400) ---------

    def chat_prompt(self, messages, max_tokens):
        """(prompt ids, their count): the conversation rendered for a reply, oldest turns
        dropped to leave `max_tokens` of room."""
        ids = prompt_ids(self.tokenizer, messages, self.context_length - max_tokens,
                         self.tokens)
        return ids, len(ids)

    def completion_prompt(self, prompt, max_tokens):
        """(prompt ids, their count): EOS + the prompt's tokens, as Generator encodes."""
        ids = encode_prompts(self.tokenizer, tf.constant([prompt]))[0].numpy().tolist()
        if len(ids) + max_tokens > self.context_length:
            raise ValueError(
                f"a prompt of {len(ids)} tokens plus max_tokens={max_tokens} exceeds the "
                f"model's context of {self.context_length}: shorten the prompt or lower "
                "max_tokens")
        return ids, len(ids)

    def warm_up(self):
        """Trace the graphs (a greedy and a sampled row), so that the first requests do
        not wait for tracing."""
        eos = self.tokenizer.eos_id
        self.run_batch([Job("completion", [eos, eos], Sampling(2), 2),
                        Job("completion", [eos], Sampling(2, temperature=1.0), 1)])
        self.stats.update(tokens_generated=0, completed=0)

    # --- the worker side -----------------------------------------------------------------

    def stop_ids(self, kind):
        eos = self.tokenizer.eos_id
        return {self.tokens.end_id, eos} if kind == "chat" else {eos}

    def padded_length(self, jobs):
        longest = max(len(job.prompt) for job in jobs)
        room = self.context_length - max(job.sampling.max_tokens for job in jobs)
        return min(-(-longest // BUCKET) * BUCKET, room)

    def fits(self, batch, job):
        """Together the longest prompt and the longest reply must fit the context."""
        jobs = batch + [job]
        return (max(len(j.prompt) for j in jobs) + max(j.sampling.max_tokens for j in jobs)
                <= self.context_length)

    def choose(self, logits, logits_np, row, sampling, step):
        if sampling.temperature == 0:
            return int(np.argmax(logits_np[row]))
        token = self._sample(logits[row:row + 1], tf.constant(float(sampling.temperature)),
                             tf.constant(int(sampling.top_k)),
                             tf.constant(float(sampling.top_p)),
                             tf.constant([int(sampling.seed), step], tf.int32))
        return int(token[0])

    def run_batch(self, jobs):
        pad = self.tokenizer.pad_id
        max_new = max(job.sampling.max_tokens for job in jobs)
        prompt = left_pad(tf.ragged.constant([job.prompt for job in jobs], tf.int32), pad,
                          self.padded_length(jobs))  # (batch, padded_len)
        logits, caches, cache_mask, lengths = self._prefill(prompt, tf.constant(max_new))
        prompt_len = tf.constant(int(prompt.shape[1]))
        rows = [RowState(job, self.stop_ids(job.kind)) for job in jobs]
        for step in range(max_new):
            logits_np = logits.numpy()  # (batch, vocab)
            chosen = np.full([len(rows)], pad, np.int32)
            kept = []
            for i, row in enumerate(rows):
                if row.done:
                    continue
                if row.job.cancelled:
                    row.done = True
                    self.finish(row.job, None, len(row.ids))
                    continue
                chosen[i] = self.choose(logits, logits_np, i, row.job.sampling, step)
                kept.append(i)
            if kept:
                self._advance([rows[i] for i in kept], chosen[kept])
            if all(row.done for row in rows):
                return
            if self.step_delay:
                time.sleep(self.step_delay)
            logits, caches = self._step(tf.constant(chosen), caches, cache_mask, prompt_len,
                                        lengths, tf.constant(step))

    def _advance(self, rows, tokens):
        """Give each row its token; the texts of all rows decode in one call."""
        tokens = [int(t) for t in tokens]
        growing = [k for k, (row, t) in enumerate(zip(rows, tokens)) if t not in row.stop_ids]
        texts = {}
        if growing:
            ids = tf.ragged.constant([rows[k].ids + [tokens[k]] for k in growing], tf.int32)
            decoded = self.tokenizer.detokenize(ids).numpy()
            texts = {k: s.decode("utf-8", errors="replace") for k, s in zip(growing, decoded)}
        for k, (row, token) in enumerate(zip(rows, tokens)):
            piece, reason = row.take(token, texts.get(k))
            if piece:
                row.job.emit("text", piece)
            if reason is not None:
                row.done = True
                self.finish(row.job, reason, len(row.ids))
