"""Rows of token ids: texts encoded into padded rows (in the graph, so a SavedModel runs
the same code), and tf.data batches of (inputs, targets) rows, where inputs may be a
tuple (an encoder-decoder's source and target rows)."""

import numpy as np
import tensorflow as tf


def encode_texts(tokenizer, texts, max_length):
    """tf.string (batch,) -> int32 `(batch, longest)`: each text's tokens, cut to
    `max_length - 1`, then EOS, right-padded with the tokenizer's pad id.

    The final EOS gives every text (even an empty one) a real token, and a causal model
    a last position that has read the whole text. Graph-safe: the SavedModel runs it.
    """
    ids = tf.cast(tokenizer.tokenize(texts)[:, : max_length - 1], tf.int32)
    lengths = tf.cast(ids.row_lengths(), tf.int32)
    dense = tf.pad(ids.to_tensor(default_value=tokenizer.pad_id), [[0, 0], [0, 1]],
                   constant_values=tokenizer.pad_id)  # (batch, longest + 1)
    # EOS written into the dense tensor: a ragged concat would run int64 ops that oneDNN
    # logs an error line about on CPUs without AVX-512.
    at_end = tf.equal(tf.range(tf.shape(dense)[1])[None, :], lengths[:, None])
    return tf.where(at_end, tf.constant(tokenizer.eos_id, tf.int32), dense)


def token_counts(tokenizer, texts, batch_size=512):
    """Tokens per text (without EOS), in batches: for the default sequence length."""
    counts = []
    for i in range(0, len(texts), batch_size):
        ragged = tokenizer.tokenize(tf.constant(texts[i:i + batch_size]))
        counts.append(ragged.row_lengths().numpy())
    return np.concatenate(counts) if counts else np.zeros(0, np.int64)


def encode_array(tokenizer, texts, max_length, batch_size=512):
    """`encode_texts` over many texts: int32 `(n, max_length)`, right-padded."""
    out = np.full((len(texts), max_length), tokenizer.pad_id, np.int32)
    for i in range(0, len(texts), batch_size):
        ids = encode_texts(tokenizer, tf.constant(texts[i:i + batch_size]), max_length)
        out[i:i + len(ids), : ids.shape[1]] = ids.numpy()
    return out


def rows_dataset(inputs, targets, batch_size, *, training=True, seed=0):
    """`(inputs, targets)` batches: for training shuffled (seeded), repeated and full;
    for evaluation every row once, in order."""
    ds = tf.data.Dataset.from_tensor_slices((inputs, targets))
    if training:
        ds = ds.shuffle(len(inputs), seed=seed, reshuffle_each_iteration=True).repeat()
    return ds.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)
