"""Text generation with a key/value cache: one graph for Python, the CLIs and SavedModels.

`generate_text` is written with TensorFlow ops only so it traces into a SavedModel that
TF Serving runs; `Generator` compiles it once (all shapes dynamic) and reuses it.
"""

import tensorflow as tf

from tfllm.models.gpt import call_with_cache, init_cache


def sample_tokens(logits, temperature, top_k, top_p, seed):
    """Next tokens `(batch,)` from float32 `logits (batch, vocab)`.

    temperature 0 is greedy; otherwise sample from the temperature-scaled
    distribution restricted to the `top_k` most likely tokens (0: all) and to the
    smallest set whose probability reaches `top_p`. `seed` is a stateless seed (2,).
    """
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    vocab = tf.shape(logits)[-1]
    scaled = logits / tf.maximum(tf.cast(temperature, tf.float32), 1e-6)
    k = tf.where(top_k > 0, tf.minimum(top_k, vocab), vocab)
    kth_best = tf.math.top_k(scaled, k=k).values[:, -1:]
    scaled = tf.where(scaled < kth_best, -1e9, scaled)
    # Nucleus: keep a token while the mass of the strictly more likely ones is < top_p.
    sorted_logits = tf.sort(scaled, axis=-1, direction="DESCENDING")
    sorted_probs = tf.nn.softmax(sorted_logits, axis=-1)
    mass_before = tf.cumsum(sorted_probs, axis=-1, exclusive=True)
    kept = tf.cast(mass_before < tf.cast(top_p, tf.float32), tf.int32)
    cutoff = tf.gather(sorted_logits, tf.maximum(tf.reduce_sum(kept, -1) - 1, 0), batch_dims=1)
    scaled = tf.where(scaled < cutoff[:, None], -1e9, scaled)
    sampled = tf.random.stateless_categorical(scaled, 1, seed=seed, dtype=tf.int32)[:, 0]
    return tf.where(temperature > 0, sampled, greedy)


def encode_prompts(tokenizer, prompts):
    """Ragged ids `(batch, None)`: EOS (the document boundary seen in training) + prompt."""
    ids = tokenizer.tokenize(prompts)
    starts = tf.fill([ids.nrows(), 1], tf.constant(tokenizer.eos_id, tf.int32))
    return tf.concat([tf.RaggedTensor.from_tensor(starts), ids], axis=1)


def generate_ids(model, prompt_ids, max_new_tokens, *, context_length, eos_id, pad_id=0,
                 temperature=0.0, top_k=0, top_p=1.0, seed=0):
    """Continue ragged `prompt_ids`; returns `(batch, max_new_tokens)` int32 new tokens,
    `pad_id` after a row's EOS. Prompts are left-padded; positions count real tokens,
    so every row generates exactly what it would alone."""
    max_new_tokens = tf.convert_to_tensor(max_new_tokens, tf.int32)
    tf.debugging.assert_positive(max_new_tokens, message="max_new_tokens must be >= 1")
    lengths = tf.cast(prompt_ids.row_lengths(), tf.int32)  # (batch,)
    # Left-pad: reversing each row's real tokens, then the whole row, moves them to the end.
    right_padded = prompt_ids.to_tensor(default_value=pad_id)
    prompt = tf.reverse(
        tf.reverse_sequence(right_padded, lengths, seq_axis=1, batch_axis=0), axis=[1])
    batch, prompt_len = tf.shape(prompt)[0], tf.shape(prompt)[1]
    total = prompt_len + max_new_tokens
    tf.debugging.assert_less_equal(
        total, context_length,
        message="prompt plus max_new_tokens exceeds the model's context: shorten the "
                "prompt or lower max_new_tokens")

    prompt_mask = tf.cast(tf.not_equal(prompt, pad_id), tf.int32)
    cache_mask = tf.concat([prompt_mask, tf.ones([batch, max_new_tokens], tf.int32)], axis=1)
    positions = tf.maximum(tf.cumsum(prompt_mask, axis=1) - 1, 0)
    caches = init_cache(model, batch, total)
    logits, caches = call_with_cache(model, prompt, caches, 0, cache_mask, positions)
    next_logits = logits[:, -1, :]

    temperature = tf.convert_to_tensor(temperature, tf.float32)
    top_k = tf.convert_to_tensor(top_k, tf.int32)
    top_p = tf.convert_to_tensor(top_p, tf.float32)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)

    def keep_going(step, done, *_):
        return tf.logical_and(step < max_new_tokens, tf.logical_not(tf.reduce_all(done)))

    def step_fn(step, done, next_logits, caches, tokens):
        token = sample_tokens(next_logits, temperature, top_k, top_p, tf.stack([seed, step]))
        token = tf.where(done, pad_id, token)
        tokens = tokens.write(step, token)
        done = tf.logical_or(done, tf.equal(token, eos_id))
        logits, caches = call_with_cache(
            model, token[:, None], caches, prompt_len + step, cache_mask,
            (lengths + step)[:, None])
        return step + 1, done, logits[:, -1, :], caches, tokens

    tokens = tf.TensorArray(tf.int32, size=max_new_tokens, element_shape=[None])
    done = tf.zeros([batch], tf.bool)
    step, _, _, _, tokens = tf.while_loop(
        keep_going, step_fn, (tf.constant(0), done, next_logits, caches, tokens))
    generated = tf.transpose(tokens.stack()[:step])  # (batch, steps)
    return tf.pad(generated, [[0, 0], [0, max_new_tokens - step]], constant_values=pad_id)


def generate_text(model, tokenizer, prompts, max_new_tokens, *, context_length,
                  temperature=0.0, top_k=0, top_p=1.0, seed=0):
    """Prompt strings `(batch,)` -> generated continuations `(batch,)` (tf.string)."""
    ids = generate_ids(
        model, encode_prompts(tokenizer, prompts), max_new_tokens,
        context_length=context_length, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
        temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    return tokenizer.detokenize(ids)


class Generator:
    """Generation from Python: compiled once, reused for every call and batch size."""

    def __init__(self, model, tokenizer, context_length, jit_compile=False):
        self.model, self.tokenizer, self.context_length = model, tokenizer, context_length

        def fn(prompts, max_new_tokens, temperature, top_k, top_p, seed):
            return generate_text(model, tokenizer, prompts, max_new_tokens,
                                 context_length=context_length, temperature=temperature,
                                 top_k=top_k, top_p=top_p, seed=seed)

        self._fn = tf.function(fn, jit_compile=jit_compile, input_signature=SIGNATURE)

    def __call__(self, prompts, max_new_tokens=64, temperature=0.0, top_k=0, top_p=1.0,
                 seed=0):
        check_generation_args(max_new_tokens, temperature, top_k, top_p)
        prompts = tf.constant(list(prompts), tf.string)
        longest = int(tf.reduce_max(encode_prompts(self.tokenizer, prompts).row_lengths()))
        if longest + max_new_tokens > self.context_length:
            raise ValueError(
                f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds "
                f"the model's context of {self.context_length}: shorten the prompt or lower "
                "max_new_tokens")
        out = self._fn(prompts, max_new_tokens,
                       float(temperature), top_k, float(top_p), seed)
        return [s.decode("utf-8", errors="replace") for s in out.numpy()]


SIGNATURE = [
    tf.TensorSpec([None], tf.string, name="prompts"),
    tf.TensorSpec([], tf.int32, name="max_new_tokens"),
    tf.TensorSpec([], tf.float32, name="temperature"),
    tf.TensorSpec([], tf.int32, name="top_k"),
    tf.TensorSpec([], tf.float32, name="top_p"),
    tf.TensorSpec([], tf.int32, name="seed"),
]


def check_generation_args(max_new_tokens, temperature, top_k, top_p):
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 keeps every token), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
