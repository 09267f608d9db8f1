"""Train a small GPT for a few steps on fixed batches, under any strategy: the tests'
window onto the train loop (also run inside subprocesses that split the CPU in two)."""

import numpy as np

CONFIG = dict(vocab_size=97, context_length=16, num_layers=2, num_heads=2, embed_dim=32,
              dropout=0.0)


def random_batches(steps, batch=8, seq=16, vocab=97, seed=0):
    """(inputs, targets) int32 arrays `(steps * batch, seq)` with padded targets (id 0):
    the first half of every batch keeps only 2 real targets per row, so replicas (and
    micro-batches) hold very different numbers of real tokens, and per-replica gradients
    very different norms (clipping each by its own norm would show)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(steps * batch, seq + 1)).astype(np.int32)
    x, y = ids[:, :-1].copy(), ids[:, 1:].copy()
    for row in range(len(y)):
        if row % batch < batch // 2:
            y[row, 2:] = 0
        elif row % 3 == 0:
            y[row, seq - 1 - row % seq:] = 0
    return x, y


def text_batches(steps, batch=16, seq=64, seed=0):
    """Random windows of real English (CPython's docs) as bytes + 1 (0 stays padding):
    a vocabulary of 257 that a small model learns quickly."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics)[:12])
    ids = np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + 1
    starts = np.random.default_rng(seed).integers(0, len(ids) - seq - 1, steps * batch)
    windows = np.stack([ids[s:s + seq + 1] for s in starts])
    return windows[:, :-1], windows[:, 1:]


def train_steps(x, y, *, batch=8, strategy="default", grad_accum=1, clip_norm=1.0,
                precision="fp32", lr=3e-3, xla=True, config=None, seed=0):
    """Train on (x, y) in batches of `batch`; returns (losses, grad norms, weights)."""
    import keras
    import tensorflow as tf

    from tfllm.models import GPTConfig, build_gpt
    from tfllm.training.build import build_model_and_optimizer
    from tfllm.training.loop import Trainer
    from tfllm.training.options import TrainOptions
    from tfllm.training.strategy import resolve_strategy

    steps = len(x) // batch
    options = TrainOptions(steps=steps, batch_size=batch, lr=lr, warmup_steps=1,
                           clip_norm=clip_norm, precision=precision, grad_accum=grad_accum,
                           xla=xla, strategy=strategy)
    chosen = resolve_strategy(strategy)
    keras.utils.set_random_seed(seed)
    model, optimizer = build_model_and_optimizer(
        options, chosen, lambda: build_gpt(GPTConfig(**(config or CONFIG))))
    trainer = Trainer(model, optimizer, chosen, pad_id=0, jit_compile=xla,
                      grad_accum=grad_accum)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True)
    losses, norms = [], []
    for distributed_batch in trainer.distribute(dataset):
        loss, _, norm = trainer.train_step(distributed_batch)
        losses.append(float(loss))
        norms.append(float(norm))
    return losses, norms, [np.array(w) for w in model.get_weights()]
