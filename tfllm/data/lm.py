"""Language-model data: a corpus tokenized once, split, cut into next-token windows."""

import numpy as np
import tensorflow as tf

# Long documents are tokenized in pieces of about this many characters, cut at line
# ends, so one huge file never becomes one huge string op.
CHUNK_CHARS = 20_000


def _chunks(text):
    start = 0
    while start < len(text):
        end = text.find("\n", start + CHUNK_CHARS)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def tokenize_corpus(tokenizer, texts, batch_size=64):
    """All documents as one int32 stream, each document followed by EOS."""
    pieces = [np.zeros(0, np.int32)]  # no documents: an empty stream
    for text in texts:
        chunks = list(_chunks(text))
        for i in range(0, len(chunks), batch_size):
            ragged = tokenizer.tokenize(tf.constant(chunks[i:i + batch_size]))
            pieces.append(ragged.flat_values.numpy())
        pieces.append(np.array([tokenizer.eos_id], np.int32))
    return np.concatenate(pieces).astype(np.int32)


def split_texts(texts, val_fraction):
    """Deterministic split of the documents' text: the last `val_fraction` of the
    characters (cut at a line end) is validation. Splitting text, not tokens, keeps the
    held-out bytes known, so bits per byte compare across tokenizers."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    remaining = int(sum(map(len, texts)) * (1.0 - val_fraction))
    for k, text in enumerate(texts):
        if remaining < len(text):
            cut = text.find("\n", remaining)
            cut = remaining if cut < 0 else cut + 1
            train = list(texts[:k]) + [text[:cut]]
            val = [text[cut:]] + list(texts[k + 1:])
            return [t for t in train if t], [t for t in val if t]
        remaining -= len(text)
    return list(texts), []


def heldout_ids(tokenizer, texts):
    """The validation stream: EOS first, so the first real token is scored too."""
    return np.concatenate([[tokenizer.eos_id], tokenize_corpus(tokenizer, texts)]).astype(np.int32)


def scored_bytes(texts):
    """UTF-8 bytes of held-out `texts`, plus one per document for its EOS separator."""
    return sum(len(t.encode("utf-8")) + 1 for t in texts)


def window_arrays(ids, seq_len, pad_tail=False, pad_id=0):
    """Packed, non-overlapping windows: inputs `(n, seq_len)` and targets shifted by one.

    With `pad_tail` the leftover tokens form a last, padded window (its padding is not
    scored), so every token after the first is a target exactly once.
    """
    if pad_tail:
        n = -(-(len(ids) - 1) // seq_len)
        ids = np.concatenate([ids, np.full(n * seq_len + 1 - len(ids), pad_id, ids.dtype)])
    n = (len(ids) - 1) // seq_len
    x = ids[: n * seq_len].reshape(n, seq_len)
    y = ids[1: n * seq_len + 1].reshape(n, seq_len)
    return x, y


def lm_dataset(ids, seq_len, batch_size, *, shuffle=False, seed=0, repeat=False,
               training=True, what="training", pad_id=0, random_offsets=False):
    """A tf.data pipeline of `(inputs, targets)` int32 batches `(batch, seq_len)`.

    Training batches are full (shuffled, repeated as asked); evaluation batches cover
    every token, the last window padded and the last batch filled with rows of padding.
    With `random_offsets` (training only) the
    windows start anywhere in the stream instead (as nanoGPT draws them), batch `i`
    a pure function of `(seed, i)`: the stream never repeats a fixed cut of the text, and
    skipping to batch `i` needs nothing but `i`. Without `repeat` it then stops after as
    many batches as the fixed windows fill.
    """
    if len(ids) < 2:
        change = "a smaller" if training else "a larger"  # held-out text grows with it
        raise ValueError(f"the {what} text is empty: give more text or {change} --val-fraction")
    x, y = window_arrays(ids, seq_len, pad_tail=not training, pad_id=pad_id)
    if training and len(x) < batch_size:
        raise ValueError(
            f"the {what} text has {len(ids)} tokens, too few for one batch of {batch_size} "
            f"windows of {seq_len}+1 tokens: give more text or lower --batch-size/--seq-len")
    if random_offsets and training:
        ds = _random_window_batches(ids, seq_len, batch_size, seed)
        return (ds if repeat else ds.take(len(x) // batch_size)).prefetch(tf.data.AUTOTUNE)
    if not training:
        # Whole batches only: a short last batch is a second shape, so a second trace and
        # XLA compile of the eval step. Rows of padding add nothing to the loss or count.
        filler = np.full((-len(x) % batch_size, seq_len), pad_id, x.dtype)
        x, y = np.concatenate([x, filler]), np.concatenate([y, filler])
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _random_window_batches(ids, seq_len, batch_size, seed):
    """Batch i: `batch_size` windows of `seq_len + 1` tokens at offsets drawn uniformly
    from the stream with the stateless seed (seed, i)."""
    stream = tf.constant(ids, tf.int32)
    starts = len(ids) - seq_len  # offsets 0 .. len - seq_len - 1 leave room for the target
    span = tf.range(seq_len + 1, dtype=tf.int64)

    def batch(i):
        offsets = tf.random.stateless_uniform(
            [batch_size], seed=tf.stack([tf.constant(seed, tf.int64), i]),
            maxval=starts, dtype=tf.int64)
        windows = tf.gather(stream, offsets[:, None] + span[None, :])  # (batch, seq + 1)
        return windows[:, :-1], windows[:, 1:]

    return tf.data.Dataset.counter().map(batch)
