"""Pretraining a GPT on text: tokenizer, data, train loop, logs, samples, export.

Everything that can fail on bad input (paths, encodings, sizes) is checked before the
first file is written, so a rejected run leaves nothing behind.
"""

import dataclasses
import math
import os
import time

import keras
import numpy as np

from tfllm.data import (default_corpus, heldout_ids, lm_dataset, read_texts, split_texts,
                        tokenize_corpus)
from tfllm.models import GPTConfig, build_gpt
from tfllm.tokenizers import CharTokenizer, SentencePieceTokenizer, load_tokenizer
from tfllm.training import run_dir as rd
from tfllm.training.logs import MetricsLog, plot_losses
from tfllm.training.loop import Trainer
from tfllm.training.optimizer import build_optimizer, current_learning_rate
from tfllm.training.options import TrainOptions  # noqa: F401  (re-exported)
from tfllm.training.strategy import resolve_strategy

SAMPLE_PROMPTS = ("The", "In Python, a list", "This function returns")


def model_config(options):
    config = GPTConfig.from_preset(options.preset, **options.overrides)
    seq_len = options.seq_len or config.context_length
    if seq_len > config.context_length:
        raise ValueError(
            f"--seq-len {seq_len} is above the {options.preset!r} preset's context of "
            f"{config.context_length}: lower --seq-len or raise --context-length")
    return config, seq_len


def make_tokenizer(options, texts, config, run_dir):
    if os.path.exists(os.path.join(run_dir, rd.TOKENIZER, "tokenizer.json")):
        return load_tokenizer(os.path.join(run_dir, rd.TOKENIZER))  # resuming
    if options.tokenizer == "char":
        return CharTokenizer.from_texts(texts)
    return SentencePieceTokenizer.train(texts, vocab_size=config.vocab_size, seed=options.seed)


def unigram_cross_entropy(train_ids, val_ids, vocab_size):
    """Nats/token of the best context-free model (train unigram, add-one smoothed) on
    the validation tokens: the bar a language model must clearly beat."""
    counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
    log_probs = np.log(counts / counts.sum())
    return float(-log_probs[val_ids].mean())


def pretrain(options, log=print):
    """Train, evaluate, sample and export; returns a dict of the final numbers."""
    config, seq_len = model_config(options)
    texts = read_texts(options.data) if options.data else default_corpus()
    run_dir = os.path.join(options.runs_dir, options.name)
    keras.utils.set_random_seed(options.seed)

    t0 = time.time()
    train_texts, val_texts = split_texts(texts, options.val_fraction)
    tokenizer = make_tokenizer(options, train_texts, config, run_dir)
    # The model's vocabulary is the tokenizer's (a char tokenizer's depends on the text).
    config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size)
    train_ids = tokenize_corpus(tokenizer, train_texts)
    val_ids = heldout_ids(tokenizer, val_texts)
    train_ds = lm_dataset(train_ids, seq_len, options.batch_size, shuffle=True,
                          seed=options.seed, repeat=True)
    val_ds = lm_dataset(val_ids, seq_len, options.batch_size, training=False,
                        what="validation")
    log(f"corpus: {sum(map(len, texts)):,} characters; {tokenizer.kind} tokenizer, vocab "
        f"{tokenizer.vocab_size}; train {len(train_ids):,} tokens, validation "
        f"{len(val_ids):,} tokens [{time.time() - t0:.1f}s]")

    check_resumable(run_dir, config)
    os.makedirs(run_dir, exist_ok=True)
    config.save(os.path.join(run_dir, rd.CONFIG))
    rd.write_json(os.path.join(run_dir, rd.TRAIN_CONFIG), dataclasses.asdict(options))
    tokenizer.save(os.path.join(run_dir, rd.TOKENIZER))

    strategy = resolve_strategy(options.strategy)
    with strategy.scope():
        model = build_gpt(config)
        optimizer = build_optimizer(options.lr, options.steps, options.warmup_steps,
                                    options.weight_decay)
    trainer = Trainer(model, optimizer, strategy, pad_id=tokenizer.pad_id,
                      jit_compile=options.xla)
    manager = rd.checkpoint_manager(run_dir, model, optimizer)
    if manager.latest_checkpoint:
        manager.checkpoint.restore(manager.latest_checkpoint)
        log(f"resumed from {manager.latest_checkpoint} at step {int(optimizer.iterations)}")
    log(f"model: {options.preset} preset, {model.count_params():,} parameters, "
        f"{config.num_layers} layers x {config.embed_dim} wide, context {config.context_length}; "
        f"{strategy.num_replicas_in_sync} replica(s)")

    metrics = MetricsLog(os.path.join(run_dir, rd.METRICS))
    train_loop(trainer, train_ds, val_ds, options, manager, metrics)

    val_loss, val_tokens = trainer.evaluate(val_ds)
    unigram = unigram_cross_entropy(train_ids, val_ids, tokenizer.vocab_size)
    log(f"validation loss {val_loss:.4f} nats/token (perplexity {math.exp(val_loss):.1f}) "
        f"vs unigram entropy {unigram:.4f} nats/token")
    plot_losses(metrics.read(), os.path.join(run_dir, rd.LOSS_PLOT),
                title=f"{options.name}: {options.preset} on {options.data or 'pydoc_data'}")
    write_samples(model, tokenizer, config, os.path.join(run_dir, rd.SAMPLES), options)

    result = {"run_dir": run_dir, "val_loss": val_loss, "val_tokens": val_tokens,
              "unigram_entropy": unigram, "steps": int(optimizer.iterations)}
    if options.export:
        from tfllm.export import export_model

        result["saved_model"] = export_model(
            model, tokenizer, config, os.path.join(options.export_dir, options.name),
            train_options=dataclasses.asdict(options))
        log(f"exported SavedModel: {result['saved_model']}")
    return result


def check_resumable(run_dir, config):
    path = os.path.join(run_dir, rd.CONFIG)
    if os.path.exists(path) and GPTConfig.load(path) != config:
        raise ValueError(
            f"'{run_dir}' holds a run with a different model config: pick another --name "
            "or delete that directory")


def train_loop(trainer, train_ds, val_ds, options, manager, metrics):
    step = int(trainer.optimizer.iterations)
    if step >= options.steps:
        return
    # The shuffled stream is seeded, so skipping the steps already taken resumes the data.
    batches = iter(trainer.distribute(train_ds.skip(step)))
    progress = keras.utils.Progbar(options.steps, stateful_metrics=["loss", "tok/s", "lr"])
    progress.update(step)
    start, window_tokens, window_start = time.time(), 0, time.time()
    while step < options.steps:
        loss, tokens = trainer.train_step(next(batches))
        step += 1
        window_tokens += tokens
        last = step == options.steps
        if step % 10 == 0 or last:
            rate = window_tokens / max(time.time() - window_start, 1e-9)
            lr = current_learning_rate(trainer.optimizer)
            progress.update(step, [("loss", loss), ("tok/s", rate), ("lr", lr)])
            row = dict(step=step, train_loss=f"{loss:.5f}", learning_rate=f"{lr:.3e}",
                       tokens_per_sec=f"{rate:.0f}", elapsed_s=f"{time.time() - start:.1f}")
            if step % options.eval_every == 0 or last:
                val_loss, _ = trainer.evaluate(val_ds, options.eval_batches)
                row["val_loss"] = f"{val_loss:.5f}"
            metrics.write(**row)
            window_tokens, window_start = 0, time.time()
        if step % options.checkpoint_every == 0 or last:
            manager.save(checkpoint_number=step)


def write_samples(model, tokenizer, config, path, options):
    from tfllm.generation import Generator

    generator = Generator(model, tokenizer, config.context_length)
    prompts = list(SAMPLE_PROMPTS)
    max_new = min(options.sample_tokens, config.context_length - 16)
    greedy = generator(prompts, max_new_tokens=max_new)
    sampled = generator(prompts, max_new_tokens=max_new, temperature=0.8, top_k=40,
                        seed=options.seed)
    lines = []
    for prompt, g, s in zip(prompts, greedy, sampled):
        lines += [f"### prompt: {prompt!r}", "--- greedy", prompt + g,
                  "--- sampled (temperature 0.8, top-k 40)", prompt + s, ""]
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    os.replace(tmp, path)
