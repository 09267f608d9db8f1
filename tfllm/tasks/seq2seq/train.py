"""Training an encoder-decoder on `source<TAB>target` pairs: a tokenizer over both sides
(one shared vocabulary), the shared logged train loop on the target tokens, the BLEU and
chrF of greedy translations of held-out pairs, export.

    runs/<name>/
      config.json           Seq2SeqConfig
      train_config.json, tokenizer/, checkpoints/, metrics.csv, tensorboard/, loss.png
      seq2seq_report.json   validation loss, BLEU, chrF, samples
      samples.txt           held-out sources with the reference and the translation

Everything that can fail on bad input (files, rows, sizes) is checked before the first
file is written.
"""

import dataclasses
import os
import time

import keras

from tfllm.atomic import write_atomic, write_json
from tfllm.data.rows import rows_dataset, token_counts
from tfllm.models.seq2seq import Seq2SeqConfig, build_seq2seq
from tfllm.tasks.seq2seq.data import encode_pairs, read_pairs, split_pairs
from tfllm.tasks.seq2seq.evaluate import score_translator
from tfllm.tasks.seq2seq.export import export_seq2seq
from tfllm.tasks.seq2seq.model import Translator
from tfllm.tokenizers import CharTokenizer, SentencePieceTokenizer, load_tokenizer
from tfllm.training import run_dir as rd
from tfllm.training.build import build_model_and_optimizer, check_batch, inference_copy
from tfllm.training.checkpoints import Checkpoints
from tfllm.training.logs import plot_in_background
from tfllm.training.loop import Trainer
from tfllm.training.strategy import is_chief, resolve_strategy
from tfllm.training.train_loop import logged_train_loop

REPORT = "seq2seq_report.json"


def seq2seq_config(options):
    """The preset's Seq2SeqConfig with the flags' overrides (--num-layers sets both the
    encoder's and the decoder's depth)."""
    overrides = dict(options.overrides)
    layers = overrides.pop("num_layers", None)
    if layers is not None:
        overrides.update(num_encoder_layers=layers, num_decoder_layers=layers)
    return Seq2SeqConfig.from_preset(options.preset, **overrides)


def read_data(options):
    """(training pairs, validation pairs, where validation came from)."""
    pairs = read_pairs(options.data, options.reverse)
    if options.val:
        return pairs, read_pairs(options.val, options.reverse), options.val
    train, val = split_pairs(pairs, options.val_fraction, options.seed)
    return train, val, f"{options.val_fraction:.0%} of --data held out"


def make_tokenizer(options, pairs, config, run_dir):
    """The run's own tokenizer when resuming, else one trained on both sides."""
    existing = os.path.join(run_dir, rd.TOKENIZER)
    if os.path.exists(os.path.join(existing, "tokenizer.json")):
        return load_tokenizer(existing)
    texts = [s for s, _ in pairs] + [t for _, t in pairs]
    if options.tokenizer == "char":
        return CharTokenizer.from_texts(texts)
    return SentencePieceTokenizer.train(texts, vocab_size=config.vocab_size, seed=options.seed)


def check_resumable(run_dir, config):
    path = os.path.join(run_dir, rd.CONFIG)
    if not os.path.exists(path):
        return
    if rd.recorded_task(run_dir) != "seq2seq" or Seq2SeqConfig.load(path) != config:
        raise ValueError(f"'{run_dir}' holds a different run (task or model): pick another "
                         "--name or delete that directory")


def train_seq2seq(options, log=print):
    """Train, score the translations, export; returns a dict of the final numbers."""
    strategy = resolve_strategy(options.strategy)
    check_batch(options, strategy.num_replicas_in_sync)
    chief = is_chief(strategy)
    # Seeding clears TensorFlow's kernel caches (and the SentencePiece op's resource):
    # before any tokenizer is loaded.
    keras.utils.set_random_seed(options.seed)
    run_dir = os.path.join(options.runs_dir, options.name)
    t0 = time.time()
    train_pairs, val_pairs, val_source = read_data(options)
    config = seq2seq_config(options)
    tokenizer = make_tokenizer(options, train_pairs, config, run_dir)
    config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size,
                                 pad_id=tokenizer.pad_id)
    # Rows as long as the longest side of a training pair (+ EOS), not the context: short
    # sentence pairs padded to a 128-token context would spend most of every step on
    # padding.
    longest = max(token_counts(tokenizer, [text for pair in train_pairs for text in pair]))
    seq_len = options.seq_len or min(int(longest) + 1, config.context_length)
    if seq_len > config.context_length:
        raise ValueError(f"--seq-len {seq_len} is above the model's context of "
                         f"{config.context_length}: lower --seq-len or raise --context-length")
    if len(train_pairs) < options.batch_size:
        raise ValueError(f"the training data has {len(train_pairs)} pairs, fewer than one "
                         f"batch of {options.batch_size}: lower --batch-size")
    train_x, train_y = encode_pairs(tokenizer, train_pairs, seq_len)
    val_x, val_y = encode_pairs(tokenizer, val_pairs, seq_len)
    log(f"data: {len(train_pairs):,} training pairs, {len(val_pairs):,} validation "
        f"({val_source}); {tokenizer.kind} tokenizer over both sides, vocab "
        f"{tokenizer.vocab_size}; rows of {seq_len} tokens [{time.time() - t0:.1f}s]")
    check_resumable(run_dir, config)
    if chief:
        rd.start_run(run_dir, config, options, tokenizer)

    model, optimizer = build_model_and_optimizer(options, strategy,
                                                 lambda: build_seq2seq(config))
    trainer = Trainer(model, optimizer, strategy, pad_id=tokenizer.pad_id,
                      jit_compile=options.xla, grad_accum=options.grad_accum,
                      steps_per_call=options.steps_per_call)
    checkpoints = Checkpoints(os.path.join(run_dir, rd.CHECKPOINTS), model, optimizer,
                              keep=options.keep_checkpoints, chief=chief)
    restored = checkpoints.restore()
    if restored:
        log(f"resumed from {restored} at step {int(checkpoints.step)}")
    log(f"model: {options.preset} encoder-decoder, {model.count_params():,} parameters, "
        f"{config.num_encoder_layers}+{config.num_decoder_layers} layers x "
        f"{config.embed_dim} wide, context {config.context_length}; "
        f"{strategy.num_replicas_in_sync} replica(s), {options.precision}, "
        f"XLA {'on' if options.xla else 'off'}")

    train_ds = rows_dataset(train_x, train_y, options.batch_size, seed=options.seed)
    val_ds = rows_dataset(val_x, val_y, options.batch_size, training=False)
    losses, logs = logged_train_loop(trainer, train_ds, val_ds, options, checkpoints, run_dir,
                                     chief, log)
    # Drawn while the final evaluation runs.
    plot = chief and plot_in_background(
        logs.metrics, run_dir, f"{options.name}: seq2seq on {os.path.basename(options.data)}")
    val_loss, val_tokens = trainer.evaluate(val_ds)
    final = inference_copy(model, lambda: build_seq2seq(config), options, strategy)
    report = {"data": options.data, "validation": val_source, "steps": int(checkpoints.step),
              "val_loss": val_loss, "val_tokens": val_tokens}
    if options.eval_pairs:
        scores, samples = score_translator(Translator(final, tokenizer, config), val_pairs,
                                           options.eval_pairs)
        report.update(scores=scores, samples=samples)
        log(f"validation loss {val_loss:.4f} nats/token; greedy translations of "
            f"{scores['pairs']} held-out pairs: BLEU {scores['bleu']:.2f} "
            f"(tokenize {scores['bleu_tokenize']}), chrF {scores['chrf']:.2f}")
    else:
        log(f"validation loss {val_loss:.4f} nats/token")
    result = {"run_dir": run_dir, "val_loss": val_loss, "steps": int(checkpoints.step),
              "train_losses": losses, "report": report}
    if not chief:
        return result

    write_json(os.path.join(run_dir, REPORT), report)
    write_samples(report.get("samples", []), os.path.join(run_dir, rd.SAMPLES))
    plot.result()
    if options.export:
        result["saved_model"] = export_seq2seq(
            final, tokenizer, config, os.path.join(options.export_dir, options.name),
            train_options=dataclasses.asdict(options))
        log(f"exported SavedModel: {result['saved_model']}")
    return result


def write_samples(samples, path):
    lines = []
    for s in samples:
        lines += [f"### source: {s['source']}", f"--- reference: {s['reference']}",
                  f"--- translation: {s['translation']}", ""]
    write_atomic(path, "\n".join(lines))
