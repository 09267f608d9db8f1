"""Supervised fine-tuning: a train.py run taught to answer in the chat format.

    train.py --task sft --init runs/tiny --data chat.jsonl [--val val.jsonl] [--lora-rank 8]

The model learns the assistant's tokens and their `<|end|>` only (tfllm.tasks.sft.data puts
the mask in the targets). Training rows are packed conversations; validation scores each
held-out conversation alone. The run directory has the layout of a pretraining run
(run_dir.py), so load_run, evaluate.py and export read it unchanged, plus
`sft_report.json`: the assistant-token validation loss and the rate of replies that end
with `<|end|>` within `max_new_tokens`, for the base model and the fine-tuned one.

`tfllm.tasks.sft.evaluate` computes those numbers for any model on any conversations
file, outside training too.

Everything that can fail on bad input (the --init run, every JSONL line, an existing run
directory to resume) is checked before the first file is written.
"""

import dataclasses
import filecmp
import json
import os
import tempfile
import time

import keras
import numpy as np

from tfllm.atomic import write_atomic
from tfllm.chat_format import END_TOKEN, ChatTokens
from tfllm.data.rows import rows_dataset
from tfllm.lora import embedding_row_masks, enable_lora, merged_gpt
from tfllm.models import build_gpt
from tfllm.savedmodel.gpt import export_final
from tfllm.tasks.sft.data import (conversation_rows, encode_conversations, pack_rows,
                                  split_conversations)
from tfllm.tasks.sft.evaluate import evaluate_sft, summary
from tfllm.tasks.sft.mixture import load_conversations
from tfllm.training import run_dir as rd
from tfllm.training.build import build_model_and_optimizer, check_batch, inference_copy
from tfllm.training.checkpoints import Checkpoints
from tfllm.training.logs import plot_in_background
from tfllm.training.loop import Trainer
from tfllm.training.run_dir import check_resumable, load_run
from tfllm.training.strategy import is_chief, resolve_strategy
from tfllm.training.train_loop import logged_train_loop

REPORT = "sft_report.json"


# --- the --init run ----------------------------------------------------------------------


def load_init(path, seed=0):
    """(plain GPT, tokenizer, GPTConfig, new marker ids) of the model an SFT starts from:
    a train.py run directory, or GPT-2 (its directory, or a run that continued it), which
    gets the chat markers as new tokens here (`tfllm.pretrained.add_chat_markers`); the
    ids of markers added here are the last item (empty for a run that has them)."""
    from tfllm.pretrained import add_chat_markers, load_gpt2

    if not os.path.isdir(path):
        raise FileNotFoundError(f"--init '{path}' is not a directory: give a train.py run "
                                "directory (runs/NAME) or a GPT-2 directory")
    if os.path.isfile(os.path.join(path, rd.TOKENIZER, "tokenizer.json")):
        model, tokenizer, config = load_run(path)
    elif os.path.isfile(os.path.join(path, "config.json")):
        model, tokenizer, config = load_gpt2(path)
    else:
        raise FileNotFoundError(f"--init '{path}' is not a train.py run directory (no "
                                f"{rd.TOKENIZER}/tokenizer.json) nor a GPT-2 directory (no "
                                "config.json): point it at runs/NAME")
    added = ()
    if tokenizer.kind == "gpt2":
        before = tokenizer.vocab_size
        model, tokenizer, config = add_chat_markers(model, tokenizer, config, seed)
        added = tuple(range(before, tokenizer.vocab_size))
    try:
        ChatTokens(tokenizer)
    except ValueError:
        raise ValueError(f"the tokenizer of --init '{path}' has no chat markers "
                         "(<|system|>, <|user|>, <|assistant|>, <|end|>): start from a run "
                         "whose tokenizer train.py trained") from None
    return model, tokenizer, config, added


def sft_config(init_config, options):
    """The --init run's config; --dropout may change, the context may not."""
    overrides = dict(options.overrides)
    context = overrides.pop("context_length", None)
    if context is not None and context != init_config.context_length:
        raise ValueError(f"--context-length {context}: a fine-tune keeps the --init model's "
                         f"context of {init_config.context_length}; use --seq-len to train "
                         "on shorter rows")
    config = dataclasses.replace(init_config, **overrides)
    seq_len = options.seq_len or config.context_length
    if seq_len > config.context_length:
        raise ValueError(f"--seq-len {seq_len} is above the model's context of "
                         f"{config.context_length}: lower --seq-len")
    return config, seq_len


def check_resumable_sft(run_dir, tokenizer, config, options):
    """An existing run directory resumes only if it is an SFT run of the same shape,
    tokenizer and LoRA rank."""
    if not os.path.exists(run_dir):
        return
    train_config = os.path.join(run_dir, rd.TRAIN_CONFIG)
    if os.path.exists(train_config):
        with open(train_config, encoding="utf-8") as f:
            saved = json.load(f)
        if saved.get("task", "lm") != "sft":
            raise ValueError(f"'{run_dir}' holds a {saved.get('task', 'lm')} run, not an SFT "
                             "run: pick another --name")
        if int(saved.get("lora_rank") or 0) != options.lora_rank:
            raise ValueError(f"'{run_dir}' holds an SFT run with --lora-rank "
                             f"{saved.get('lora_rank') or 0}: resume it with that rank, or "
                             "pick another --name")
    saved_tokenizer = os.path.join(run_dir, rd.TOKENIZER)
    if os.path.exists(os.path.join(saved_tokenizer, "tokenizer.json")):
        with tempfile.TemporaryDirectory() as fresh:
            tokenizer.save(fresh)
            names = sorted(os.listdir(fresh))
            _, differ, unreadable = filecmp.cmpfiles(saved_tokenizer, fresh, names,
                                                     shallow=False)
            same = sorted(os.listdir(saved_tokenizer)) == names and not differ + unreadable
        if not same:
            raise ValueError(f"'{run_dir}' holds an SFT run whose tokenizer differs from "
                             f"--init '{options.init}': pick another --name or delete "
                             "that directory")
    check_resumable(run_dir, config)


# --- training ----------------------------------------------------------------------------


def read_sft_data(options):
    """(training conversations, validation conversations, where validation came from):
    --val, or a seeded share of --data held out."""
    conversations = load_conversations(options.data)
    if options.val:
        return conversations, load_conversations(options.val, flag="--val"), options.val
    train, val = split_conversations(conversations, options.val_fraction)
    return train, val, f"{options.val_fraction:.0%} of --data held out"


def training_rows(tokenizer, conversations, seq_len, seed, tokens):
    """Packed training rows of the conversations in a seeded order, and the cut stats."""
    examples, stats = encode_conversations(tokenizer, conversations, seq_len + 1, tokens)
    if not examples:
        raise ValueError(f"no training conversation has an assistant token within --seq-len "
                         f"{seq_len} tokens: raise --seq-len or shorten the prompts")
    order = np.random.default_rng(seed).permutation(len(examples))
    inputs, targets = pack_rows([examples[i] for i in order], seq_len, tokenizer.pad_id)
    return inputs, targets, stats


def build_sft_model(config, options, strategy, init_weights, new_rows=()):
    """The GPT (init weights, LoRA adapters if asked) and its optimizer, in the strategy's
    scope and under the precision's dtype policy. With LoRA, the embedding rows `new_rows`
    (markers new to the model) train as well."""

    def build():
        model = build_gpt(config)
        model.set_weights(init_weights)
        if options.lora_rank:
            enable_lora(model, options.lora_rank, train_rows=new_rows)
        return model

    return build_model_and_optimizer(options, strategy, build)


def sft_datasets(tokenizer, train_conversations, val_conversations, seq_len, options, tokens,
                 val_source, log=print):
    """(training dataset of packed rows, validation dataset of one conversation per row,
    the training rows' stats), with what was cut logged."""
    t0 = time.time()
    train_x, train_y, stats = training_rows(
        tokenizer, train_conversations, seq_len, options.seed, tokens)
    val_examples, val_stats = encode_conversations(tokenizer, val_conversations, seq_len + 1,
                                                   tokens)
    if not val_examples:
        raise ValueError(f"no validation conversation has an assistant token within "
                         f"--seq-len {seq_len} tokens: raise --seq-len")
    val_x, val_y = conversation_rows(val_examples, tokenizer.pad_id)
    learned = int((train_y != tokenizer.pad_id).sum())
    log(f"data: {len(train_conversations)} training conversations packed into "
        f"{len(train_x)} rows of {seq_len} tokens "
        f"({np.mean(train_x != tokenizer.pad_id):.0%} filled, {learned:,} learned tokens)"
        f"{_cut_note(stats, seq_len)}; {len(val_conversations)} validation "
        f"conversations ({val_source}){_cut_note(val_stats, seq_len)} "
        f"[{time.time() - t0:.1f}s]")
    rows = {"conversations": len(train_conversations), "rows": len(train_x),
            "learned_tokens": learned, "truncated": stats["truncated"],
            "left_out": stats["left_out"]}
    return (rows_dataset(train_x, train_y, options.batch_size, seed=options.seed),
            rows_dataset(val_x, val_y, options.batch_size, training=False), rows)


def _cut_note(stats, seq_len):
    if not stats["truncated"]:
        return ""
    note = (f"; {stats['truncated']} longer than {seq_len + 1} tokens cut (whole turns "
            "kept from the start)")
    if stats["left_out"]:
        note += f", {stats['left_out']} left out (no reply within the limit)"
    return note


def train_sft(options, log=print):
    """Fine-tune `options.init` on `options.data`; returns a dict of the final numbers
    (`report`: what sft_report.json holds)."""
    strategy = resolve_strategy(options.strategy)
    # Seeding clears TensorFlow's kernel caches, which drops the SentencePiece op's
    # resource: it must come before any tokenizer is loaded.
    keras.utils.set_random_seed(options.seed)
    train_conversations, val_conversations, val_source = read_sft_data(options)
    init_model, tokenizer, init_config, new_rows = load_init(options.init, options.seed)
    if new_rows:
        log(f"chat markers added to the {tokenizer.kind} vocabulary as ids "
            f"{new_rows[0]}-{new_rows[-1]} (padding now {tokenizer.pad_id})")
    config, seq_len = sft_config(init_config, options)
    tokens = ChatTokens(tokenizer)
    run_dir = os.path.join(options.runs_dir, options.name)
    check_batch(options, strategy.num_replicas_in_sync)
    if options.lora_rank and options.lora_rank > min(config.embed_dim, config.intermediate_dim):
        raise ValueError(f"--lora-rank {options.lora_rank} is above the model width "
                         f"{config.embed_dim}: use a smaller rank")
    check_resumable_sft(run_dir, tokenizer, config, options)
    chief = is_chief(strategy)

    train_ds, val_ds, train_rows = sft_datasets(
        tokenizer, train_conversations, val_conversations, seq_len, options, tokens,
        val_source, log)

    base = evaluate_sft(init_model, tokenizer, val_conversations,
                        context_length=config.context_length, seq_len=seq_len,
                        batch_size=options.batch_size)
    log(f"base model ({options.init}): assistant-token val loss {base['val_loss']:.4f}, "
        f"{base['end_rate']:.0%} of replies end with {END_TOKEN} within "
        f"{base['max_new_tokens']} tokens")

    if chief:
        rd.start_run(run_dir, config, options, tokenizer)

    model, optimizer = build_sft_model(config, options, strategy, init_model.get_weights(),
                                       new_rows)
    trainer = Trainer(model, optimizer, strategy, pad_id=tokenizer.pad_id,
                      jit_compile=options.xla, grad_accum=options.grad_accum,
                      gradient_masks=embedding_row_masks(model, new_rows)
                      if options.lora_rank else None,
                      steps_per_call=options.steps_per_call)
    checkpoints = Checkpoints(os.path.join(run_dir, rd.CHECKPOINTS), model, optimizer,
                              keep=options.keep_checkpoints, chief=chief)
    restored = checkpoints.restore()
    if restored:
        log(f"resumed from {restored} at step {int(checkpoints.step)}")
    trained = trainer.trained_parameters()
    lora = f" (LoRA rank {options.lora_rank} adapters" + (
        f" and {len(new_rows)} marker embeddings)" if new_rows else ")")
    log(f"model: {config.num_layers} layers x {config.embed_dim} wide, context "
        f"{config.context_length}; training {trained:,} of {model.count_params():,} "
        "parameters" + (lora if options.lora_rank else ""))

    losses, logs = logged_train_loop(trainer, train_ds, val_ds, options, checkpoints, run_dir,
                                     chief, log)
    # Drawn while the final evaluation runs.
    plot = chief and plot_in_background(
        logs.metrics, run_dir, f"{options.name}: SFT of {os.path.basename(options.init)}")

    final = merged_gpt(model, config) if options.lora_rank else \
        inference_copy(model, lambda: build_gpt(config), options, strategy)
    tuned = evaluate_sft(final, tokenizer, val_conversations,
                         context_length=config.context_length, seq_len=seq_len,
                         batch_size=options.batch_size)
    log(summary(base, tuned))
    report = {"init": options.init, "data": options.data, "validation": val_source,
              "steps": int(checkpoints.step), "lora_rank": options.lora_rank,
              "seq_len": seq_len, "base": base, "sft": tuned,
              "train": train_rows}
    result = {"run_dir": run_dir, "val_loss": tuned["val_loss"], "base_val_loss":
              base["val_loss"], "steps": int(checkpoints.step), "train_losses": losses,
              "report": report}
    if not chief:
        return result

    rd.write_json(os.path.join(run_dir, REPORT), report)
    log(f"report: {os.path.join(run_dir, REPORT)}")
    plot.result()
    write_samples(tuned["samples"], base["samples"], os.path.join(run_dir, rd.SAMPLES))
    if options.export:
        result["saved_model"] = export_final(final, tokenizer, config, options, log)
    return result


def write_samples(tuned, base, path):
    """The first held-out prompts with the reference, the base and the tuned reply."""
    lines = []
    for t, b in zip(tuned, base):
        lines += [f"### prompt: {t['prompt']!r}", f"--- reference: {t['reference']}",
                  f"--- base model{'' if b['ended'] else ' (no end-of-turn)'}: {b['reply']}",
                  f"--- fine-tuned{'' if t['ended'] else ' (no end-of-turn)'}: {t['reply']}",
                  ""]
    write_atomic(path, "\n".join(lines))
