"""Pretraining a GPT on text: tokenizer, data, train loop, logs, samples, export.

Everything that can fail on bad input (paths, encodings, sizes) is checked before the
first file is written, so a rejected run leaves nothing behind.
"""

import dataclasses
import math
import os
import time
import zlib

import keras
import numpy as np
import tensorflow as tf

from tfllm.atomic import write_atomic
from tfllm.data import (default_corpus, heldout_ids, lm_dataset, read_texts, split_texts,
                        tokenize_corpus)
from tfllm.graph_function import graph_function
from tfllm.models import GPTConfig, build_gpt
from tfllm.savedmodel.gpt import export_final
from tfllm.tokenizers import (CharTokenizer, SentencePieceTokenizer, load_hf_tokenizer,
                              load_tokenizer)
from tfllm.training import run_dir as rd
from tfllm.training.build import build_model_and_optimizer, check_batch, inference_copy
from tfllm.training.checkpoints import Checkpoints
from tfllm.training.logs import plot_in_background
from tfllm.training.loop import Trainer
from tfllm.training.run_dir import check_resumable
from tfllm.training.strategy import is_chief, resolve_strategy, worker_id
from tfllm.training.train_loop import logged_train_loop, tagged

SAMPLE_PROMPTS = ("The", "In Python, a list", "This function returns")


def model_config(options):
    if options.init:  # the shape of the pretrained checkpoint (its vocabulary padded)
        from tfllm.pretrained import gpt2_config

        config = gpt2_config(options.init, **options.overrides)
    else:
        config = GPTConfig.from_preset(options.preset, **options.overrides)
    seq_len = options.seq_len or config.context_length
    if seq_len > config.context_length:
        raise ValueError(
            f"--seq-len {seq_len} is above the model's context of "
            f"{config.context_length}: lower --seq-len or raise --context-length")
    return config, seq_len


def make_tokenizer(options, texts, config, run_dir, chief=True):
    # Resuming: the run's own. A MultiWorker worker trains its own instead (the same
    # text and seed give the same tokenizer, checked below) rather than race the chief.
    if chief and os.path.exists(os.path.join(run_dir, rd.TOKENIZER, "tokenizer.json")):
        return load_tokenizer(os.path.join(run_dir, rd.TOKENIZER))
    if options.init:
        return load_hf_tokenizer(options.init)
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
    """Train, evaluate, sample and export; returns a dict of the final numbers
    (`train_losses`: the loss of every step this call ran, keyed by step)."""
    config, seq_len = model_config(options)
    texts = read_texts(options.data) if options.data else default_corpus()
    run_dir = os.path.join(options.runs_dir, options.name)
    strategy = resolve_strategy(options.strategy)
    check_batch(options, strategy.num_replicas_in_sync)
    chief = is_chief(strategy)
    if not chief:  # only the chief prints the full story; a worker tags its lines
        log = tagged(log, f"[worker {worker_id(strategy)}] ")
    keras.utils.set_random_seed(options.seed)

    t0 = time.time()
    if options.val:
        train_texts, val_texts = texts, read_texts(options.val)
    else:
        train_texts, val_texts = split_texts(texts, options.val_fraction)
    tokenizer = make_tokenizer(options, train_texts, config, run_dir, chief)
    if not options.init:
        # The model's vocabulary is the tokenizer's (a char tokenizer's depends on the text);
        # an imported GPT-2 keeps its padded table (pad rows above the tokenizer's ids).
        config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size)
    train_ids = tokenize_corpus(tokenizer, train_texts)
    val_ids = heldout_ids(tokenizer, val_texts)
    train_ds = lm_dataset(train_ids, seq_len, options.batch_size, shuffle=True,
                          seed=options.seed, repeat=True, random_offsets=options.random_windows)
    val_ds = lm_dataset(val_ids, seq_len, options.batch_size, training=False,
                        what="validation", pad_id=tokenizer.pad_id)
    log(f"corpus: {sum(map(len, texts)):,} characters; {tokenizer.kind} tokenizer, vocab "
        f"{tokenizer.vocab_size}; train {len(train_ids):,} tokens, validation "
        f"{len(val_ids):,} tokens [{time.time() - t0:.1f}s]")

    check_resumable(run_dir, config, options)
    if chief:  # under MultiWorker the other workers write nothing here
        rd.start_run(run_dir, config, options, tokenizer)

    model, optimizer = build_model_and_optimizer(options, strategy, lambda: build_gpt(config))
    trainer = Trainer(model, optimizer, strategy, pad_id=tokenizer.pad_id,
                      jit_compile=options.xla, grad_accum=options.grad_accum,
                      steps_per_call=options.steps_per_call)
    checkpoints = Checkpoints(os.path.join(run_dir, rd.CHECKPOINTS), model, optimizer,
                              keep=options.keep_checkpoints, chief=chief)
    restored = checkpoints.restore()
    check_workers_agree(strategy, int(checkpoints.step), zlib.crc32(train_ids.tobytes()))
    if restored:
        log(f"resumed from {restored} at step {int(checkpoints.step)}")
    elif options.init:
        from tfllm.pretrained import set_gpt2_weights

        set_gpt2_weights(model, options.init, config)
        log(f"initialized from the GPT-2 weights in '{options.init}'")
    log(f"model: {options.init or options.preset + ' preset'}, "
        f"{model.count_params():,} parameters, "
        f"{config.num_layers} layers x {config.embed_dim} wide, context {config.context_length}; "
        f"{strategy.num_replicas_in_sync} replica(s) ({type(strategy).__name__}), "
        f"{options.precision}, XLA {'on' if options.xla else 'off'}")

    losses, logs = logged_train_loop(trainer, train_ds, val_ds, options, checkpoints, run_dir,
                                     chief, log)
    # Drawn while the final evaluation runs.
    plot = chief and plot_in_background(
        logs.metrics, run_dir,
        f"{options.name}: {options.preset} on {options.data or 'pydoc_data'}")

    val_loss, val_tokens = trainer.evaluate(val_ds)
    unigram = unigram_cross_entropy(train_ids, val_ids, tokenizer.vocab_size)
    log(f"validation loss {val_loss:.4f} nats/token (perplexity {math.exp(val_loss):.1f}) "
        f"vs unigram entropy {unigram:.4f} nats/token")
    result = {"run_dir": run_dir, "val_loss": val_loss, "val_tokens": val_tokens,
              "unigram_entropy": unigram, "steps": int(checkpoints.step),
              "train_losses": losses}
    if not chief:
        return result

    plot.result()
    final = inference_copy(model, lambda: build_gpt(config), options, strategy)
    if options.sample_tokens:
        write_samples(final, tokenizer, config, os.path.join(run_dir, rd.SAMPLES), options)
    if options.export:
        result["saved_model"] = export_final(final, tokenizer, config, options, log)
    return result


def check_workers_agree(strategy, step, data_fingerprint):
    """Under MultiWorker every worker must resume from the same step (they do when the
    run directory is on a filesystem they all see) and tokenize the same text the same
    way (a fingerprint of the training tokens)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return

    @graph_function()
    def gather():
        mine = tf.constant([[step, data_fingerprint]], tf.int64)
        return strategy.gather(strategy.run(lambda: mine), axis=0)

    rows = {tuple(int(v) for v in row) for row in gather().numpy()}
    steps = sorted({row[0] for row in rows})
    if len(steps) > 1:
        raise ValueError(
            f"the workers resumed from different steps {steps}: put --runs-dir on a "
            "filesystem every worker sees (NFS, GCS), so they all read the chief's checkpoints")
    if len(rows) > 1:
        raise ValueError("the workers tokenized different training text: give every worker "
                         "the same --data (and the same tfllm version)")


def write_samples(model, tokenizer, config, path, options):
    from tfllm.generation import Generator

    # Two calls only: XLA's compile would cost more than it saves (the chat CLI and the
    # server, which decode again and again, compile).
    generator = Generator(model, tokenizer, config.context_length, jit_compile=False)
    prompts = list(SAMPLE_PROMPTS)
    max_new = min(options.sample_tokens, config.context_length - 16)
    greedy = generator(prompts, max_new_tokens=max_new)
    sampled = generator(prompts, max_new_tokens=max_new, temperature=0.8, top_k=40,
                        seed=options.seed)
    lines = []
    for prompt, g, s in zip(prompts, greedy, sampled):
        lines += [f"### prompt: {prompt!r}", "--- greedy", prompt + g,
                  "--- sampled (temperature 0.8, top-k 40)", prompt + s, ""]
    write_atomic(path, "\n".join(lines))
