"""Text generation with a key/value cache: one graph for Python, the CLIs and SavedModels.

`generate_text` is written with TensorFlow ops only so it traces into a SavedModel that
TF Serving runs; `Generator` compiles it once (all shapes dynamic) and reuses it.
"""

import numpy as np
import tensorflow as tf

from tfllm.graph_function import graph_function
from tfllm.models.gpt import call_with_cache, init_cache


def _mix(x):
    """A 32-bit integer hash (xor-shift-multiply rounds) over uint32 tensors."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def hashed_uniform(shape, seed):
    """Uniform floats in (0, 1) from a counter hashed with `seed (2,)`.

    TensorFlow's stateless RNG draws differently inside an XLA-compiled loop than in a
    plain graph; integer hashing is bit-identical everywhere, so a seed gives the same
    sample in Python (XLA), the CLIs and an exported SavedModel.
    """
    seed = tf.cast(seed, tf.uint32)
    key = _mix(tf.bitwise.bitwise_xor(seed[0], _mix(seed[1] + tf.constant(0x9E3779B9, tf.uint32))))
    counter = tf.reshape(tf.range(tf.reduce_prod(shape), dtype=tf.int32), shape)
    bits = _mix(tf.bitwise.bitwise_xor(tf.cast(counter, tf.uint32), key))
    return (tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) + 0.5) / 16777216.0


def sample_tokens(logits, temperature, top_k, top_p, seed):
    """Next tokens `(batch,)` from float32 `logits (batch, vocab)`.

    temperature 0 is greedy; otherwise sample from the temperature-scaled
    distribution restricted to the `top_k` most likely tokens (0: all) and to the
    smallest set whose probability reaches `top_p`. `seed` is a stateless seed (2,).
    Each filter runs only when asked for: a sort over the vocabulary per token costs
    more than the rest of a small model's step.
    """
    def sample():
        scaled = logits / tf.cast(temperature, tf.float32)
        scaled = tf.cond(top_k > 0, lambda: keep_top_k(scaled, top_k), lambda: scaled)
        scaled = tf.cond(top_p < 1.0, lambda: keep_top_p(scaled, top_p), lambda: scaled)
        gumbel = -tf.math.log(-tf.math.log(hashed_uniform(tf.shape(scaled), seed)))
        return tf.argmax(scaled + gumbel, axis=-1, output_type=tf.int32)  # Gumbel-max

    return tf.cond(temperature > 0, sample,
                   lambda: tf.argmax(logits, axis=-1, output_type=tf.int32))


def keep_top_k(logits, k):
    """Mask all but the `k` largest logits of each row."""
    # A full sort, not tf.math.top_k: XLA needs top_k's k at compile time.
    sorted_logits = tf.sort(logits, axis=-1, direction="DESCENDING")
    kth_best = tf.gather(sorted_logits, tf.minimum(k, tf.shape(logits)[-1]) - 1, axis=-1)
    return tf.where(logits < kth_best[:, None], -1e9, logits)


def keep_top_p(logits, top_p):
    """Mask all but the smallest set of tokens whose probability reaches `top_p`: a token
    stays while the mass of the strictly more likely ones is below `top_p`."""
    sorted_logits = tf.sort(logits, axis=-1, direction="DESCENDING")
    mass_before = tf.cumsum(tf.nn.softmax(sorted_logits, axis=-1), axis=-1, exclusive=True)
    kept = tf.reduce_sum(tf.cast(mass_before < tf.cast(top_p, tf.float32), tf.int32), -1)
    cutoff = tf.gather(sorted_logits, tf.maximum(kept - 1, 0), batch_dims=1)
    return tf.where(logits < cutoff[:, None], -1e9, logits)


def encode_prompts(tokenizer, prompts):
    """Ragged ids `(batch, None)`: EOS (the document boundary seen in training) + prompt."""
    ids = tokenizer.tokenize(prompts)
    starts = tf.fill([ids.nrows(), 1], tf.constant(tokenizer.eos_id, tf.int32))
    return tf.concat([tf.RaggedTensor.from_tensor(starts), ids], axis=1)


def left_pad(prompt_ids, pad_id=0, length=None):
    """Ragged `(batch, None)` -> dense `(batch, length)` with each row's tokens at the end."""
    lengths = tf.cast(prompt_ids.row_lengths(), tf.int32)
    shape = None if length is None else [None, length]
    right_padded = prompt_ids.to_tensor(default_value=pad_id, shape=shape)
    # Reversing each row's real tokens, then the whole row, moves them to the end.
    return tf.reverse(
        tf.reverse_sequence(right_padded, lengths, seq_axis=1, batch_axis=0), axis=[1])


def generate_ids(model, prompt_ids, max_new_tokens, *, context_length, eos_id, pad_id=0,
                 temperature=0.0, top_k=0, top_p=1.0, seed=0, stop_ids=None):
    """Continue ragged `prompt_ids`; returns `(batch, max_new_tokens)` int32 new tokens,
    `pad_id` after a row's stop token (EOS, or any of `stop_ids`)."""
    stop_ids = [eos_id] if stop_ids is None else stop_ids
    return decode(model, left_pad(prompt_ids, pad_id), max_new_tokens,
                  context_length=context_length, stop_ids=stop_ids, pad_id=pad_id,
                  temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)


def prefill(model, prompt, max_new_tokens, pad_id=0):
    """Run a left-padded prompt `(batch, prompt_len)` through the model once, filling
    fresh caches sized for `max_new_tokens` more. Returns the decoding state:
    (last logits, caches, cache_mask, lengths)."""
    batch, prompt_len = tf.shape(prompt)[0], tf.shape(prompt)[1]
    prompt_mask = tf.cast(tf.not_equal(prompt, pad_id), tf.int32)
    lengths = tf.reduce_sum(prompt_mask, axis=1)
    # Slots after the prompt are filled in order; causality hides the unwritten ones.
    cache_mask = tf.concat([prompt_mask, tf.ones([batch, max_new_tokens], tf.int32)], axis=1)
    positions = tf.maximum(tf.cumsum(prompt_mask, axis=1) - 1, 0)
    caches = init_cache(model, batch, prompt_len + max_new_tokens)
    logits, caches = call_with_cache(model, prompt, caches, 0, cache_mask, positions)
    return logits[:, -1, :], caches, cache_mask, lengths


def decode_step(model, token, caches, cache_mask, prompt_len, lengths, step):
    """Feed the tokens `(batch,)` chosen at `step`; returns (next logits, caches)."""
    logits, caches = call_with_cache(model, token[:, None], caches, prompt_len + step,
                                     cache_mask, (lengths + step)[:, None])
    return logits[:, -1, :], caches


def decode(model, prompt, max_new_tokens, *, context_length, stop_ids, pad_id=0,
           temperature=0.0, top_k=0, top_p=1.0, seed=0):
    """The whole generation as one graph loop over a left-padded `prompt`.

    Positions count real tokens, so each row generates exactly what it would alone.
    Returns `(batch, max_new_tokens)` new tokens, `pad_id` after a row stops.
    """
    max_new_tokens = tf.convert_to_tensor(max_new_tokens, tf.int32)
    tf.debugging.assert_positive(max_new_tokens, message="max_new_tokens must be >= 1")
    prompt_len = tf.shape(prompt)[1]
    tf.debugging.assert_less_equal(
        prompt_len + max_new_tokens, context_length,
        message="prompt plus max_new_tokens exceeds the model's context: shorten the "
                "prompt or lower max_new_tokens")
    next_logits, caches, cache_mask, lengths = prefill(model, prompt, max_new_tokens, pad_id)
    temperature = tf.convert_to_tensor(temperature, tf.float32)
    top_k = tf.convert_to_tensor(top_k, tf.int32)
    top_p = tf.convert_to_tensor(top_p, tf.float32)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
    stop_ids = tf.reshape(tf.convert_to_tensor(stop_ids, tf.int32), [1, -1])

    def keep_going(step, done, *_):
        return tf.logical_and(step < max_new_tokens, tf.logical_not(tf.reduce_all(done)))

    def step_fn(step, done, next_logits, caches, tokens):
        token = sample_tokens(next_logits, temperature, top_k, top_p, tf.stack([seed, step]))
        token = tf.where(done, pad_id, token)
        # A select, not a TensorArray or scatter: fixed shapes, so XLA compiles the loop.
        tokens = tf.where(tf.range(max_new_tokens)[None, :] == step, token[:, None], tokens)
        done = tf.logical_or(done, tf.reduce_any(token[:, None] == stop_ids, axis=1))
        next_logits, caches = decode_step(model, token, caches, cache_mask, prompt_len,
                                          lengths, step)
        return step + 1, done, next_logits, caches, tokens

    batch = tf.shape(prompt)[0]
    tokens = tf.fill([batch, max_new_tokens], tf.constant(pad_id, tf.int32))
    done = tf.zeros([batch], tf.bool)
    _, _, _, _, tokens = tf.while_loop(
        keep_going, step_fn, (tf.constant(0), done, next_logits, caches, tokens))
    return tokens  # (batch, max_new_tokens)


def generate_text(model, tokenizer, prompts, max_new_tokens, *, context_length,
                  temperature=0.0, top_k=0, top_p=1.0, seed=0):
    """Prompt strings `(batch,)` -> generated continuations `(batch,)` (tf.string)."""
    ids = generate_ids(
        model, encode_prompts(tokenizer, prompts), max_new_tokens,
        context_length=context_length, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
        temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    return tokenizer.detokenize(ids)


class Generator:
    """Generation from Python with a compiled decoding loop.

    Prompts are left-padded to a bucket of `bucket` tokens, and one function is compiled
    (with XLA by default) per (batch, bucket, max_new_tokens) and reused across calls.
    `stream` yields text as each token is chosen, with the same results as `__call__`.
    """

    def __init__(self, model, tokenizer, context_length, jit_compile=True, bucket=32):
        self.model, self.tokenizer = model, tokenizer
        self.context_length, self.bucket = context_length, bucket
        self._loop = graph_function(self._loop_fn, jit_compile=jit_compile)
        self._prefill = graph_function(
            lambda prompt, max_new: prefill(model, prompt, max_new, tokenizer.pad_id),
            jit_compile=jit_compile)
        self._step = graph_function(
            lambda *args: decode_step(model, *args), jit_compile=jit_compile)

    def _loop_fn(self, prompt, max_new_tokens, temperature, top_k, top_p, seed, stop_ids):
        return decode(self.model, prompt, max_new_tokens, context_length=self.context_length,
                      stop_ids=stop_ids, pad_id=self.tokenizer.pad_id, temperature=temperature,
                      top_k=top_k, top_p=top_p, seed=seed)

    def encode(self, prompts, max_new_tokens):
        """Left-padded prompt ids `(batch, bucketed_len)`, checked against the context.

        A prompt is a string (EOS is put before its tokens) or a list of token ids
        (used as they are, e.g. a rendered chat conversation).
        """
        prompts = list(prompts)
        if all(isinstance(p, str) for p in prompts):
            ids = encode_prompts(self.tokenizer, tf.constant(prompts, tf.string))
        elif any(isinstance(p, str) or not len(p) for p in prompts):
            raise ValueError("prompts must be all strings or all non-empty lists of token "
                             "ids, not a mix")
        else:
            ids = tf.ragged.constant(prompts, tf.int32)
        longest = int(tf.reduce_max(ids.row_lengths()))
        room = self.context_length - max_new_tokens
        if longest > room:
            raise ValueError(
                f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds "
                f"the model's context of {self.context_length}: shorten the prompt or lower "
                "max_new_tokens")
        length = min(-(-longest // self.bucket) * self.bucket, room)
        return left_pad(ids, self.tokenizer.pad_id, length)

    def stop_ids(self, stop_token_ids):
        """The ids that end a row: `stop_token_ids` if given (even empty), else EOS."""
        return [self.tokenizer.eos_id] if stop_token_ids is None else list(stop_token_ids)

    def generate_ids(self, prompts, max_new_tokens=64, temperature=0.0, top_k=0, top_p=1.0,
                     seed=0, stop_token_ids=None):
        """New token ids `(batch, max_new_tokens)` as a NumPy array (0 after a stop)."""
        check_generation_args(max_new_tokens, temperature, top_k, top_p)
        prompt = self.encode(prompts, max_new_tokens)
        return self._loop(prompt, int(max_new_tokens), tf.constant(float(temperature)),
                          tf.constant(int(top_k)), tf.constant(float(top_p)),
                          tf.constant(int(seed)),
                          tf.constant(self.stop_ids(stop_token_ids), tf.int32)).numpy()

    def __call__(self, prompts, max_new_tokens=64, temperature=0.0, top_k=0, top_p=1.0,
                 seed=0, stop=(), stop_token_ids=None):
        """Continuations of `prompts` (a list of strings), each cut before its stop token
        (which, like `stream`'s, is not part of it) or the first of the `stop` strings."""
        ids = self.generate_ids(prompts, max_new_tokens, temperature, top_k, top_p, seed,
                                stop_token_ids)
        # A stop token with text of its own (the chat end marker) would show in the text.
        ids = np.where(np.isin(ids, self.stop_ids(stop_token_ids)), self.tokenizer.pad_id, ids)
        texts = [s.decode("utf-8", errors="replace")
                 for s in self.tokenizer.detokenize(tf.constant(ids)).numpy()]
        return [cut_at_stop(t, stop) for t in texts]

    def stream(self, prompt, max_new_tokens=64, temperature=0.0, top_k=0, top_p=1.0,
               seed=0, stop=(), stop_token_ids=None, callback=None):
        """Yield the continuation of one `prompt` (a string or a list of token ids) piece
        by piece as tokens are chosen;
        `callback(piece)` is called with each piece too. Stops at a stop token or string."""
        check_generation_args(max_new_tokens, temperature, top_k, top_p)
        prompt_ids = self.encode([prompt], max_new_tokens)
        prompt_len = tf.shape(prompt_ids)[1]
        logits, caches, cache_mask, lengths = self._prefill(prompt_ids, int(max_new_tokens))
        stops = set(self.stop_ids(stop_token_ids))
        params = (tf.constant(float(temperature)), tf.constant(int(top_k)),
                  tf.constant(float(top_p)))
        ids, shown = [], ""
        for step in range(max_new_tokens):
            token = sample_tokens(logits, *params, tf.constant([int(seed), step], tf.int32))
            if int(token[0]) in stops:
                break
            ids.append(int(token[0]))
            text = self.tokenizer.decode(ids)
            cut = cut_at_stop(text, stop)
            # Hold back a partial UTF-8 character (a byte piece still waiting for the rest).
            ready = cut if cut != text or not text.endswith("\ufffd") else text.rstrip("\ufffd")
            if len(ready) > len(shown):
                piece, shown = ready[len(shown):], ready
                if callback is not None:
                    callback(piece)
                yield piece
            if cut != text:
                break
            logits, caches = self._step(token, caches, cache_mask, prompt_len, lengths,
                                        tf.constant(step))


def cut_at_stop(text, stop):
    """`text` up to (not including) the earliest of the `stop` strings."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[:min(cuts)] if cuts else text


def check_generation_args(max_new_tokens, temperature, top_k, top_p):
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 keeps every token), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
