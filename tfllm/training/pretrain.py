"""Pretraining a GPT on text: tokenizer, data, train loop, logs, samples, export.

Everything that can fail on bad input (paths, encodings, sizes) is checked before the
first file is written, so a rejected run leaves nothing behind.
"""

import dataclasses
import math
import os
import sys
import time
import zlib

import keras
import numpy as np
import tensorflow as tf

from tfllm.data import (default_corpus, heldout_ids, lm_dataset, read_texts, split_texts,
                        tokenize_corpus)
from tfllm.models import GPTConfig, build_gpt
from tfllm.tokenizers import (CharTokenizer, GPT2Tokenizer, SentencePieceTokenizer,
                              load_tokenizer)
from tfllm.training import run_dir as rd
from tfllm.training.checkpoints import Checkpoints
from tfllm.training.logs import MetricsLog, TensorBoardLog, plot_losses
from tfllm.training.loop import Trainer, strategy_kind
from tfllm.training.optimizer import build_optimizer, current_learning_rate
from tfllm.training.options import TrainOptions  # noqa: F401  (re-exported)
from tfllm.training.strategy import is_chief, resolve_strategy, worker_id

SAMPLE_PROMPTS = ("The", "In Python, a list", "This function returns")
# --precision -> the Keras dtype policy the model is built under (variables stay float32).
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


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


def check_batch(options, replicas):
    """The global batch must split evenly over the replicas, then into micro-batches."""
    if options.batch_size % replicas:
        raise ValueError(
            f"--batch-size {options.batch_size} is not divisible by the {replicas} replicas "
            f"of this strategy: use a multiple of {replicas}")
    if (options.batch_size // replicas) % options.grad_accum:
        raise ValueError(
            f"each replica's batch of {options.batch_size // replicas} is not divisible by "
            f"--grad-accum {options.grad_accum}: use a --batch-size that is a multiple of "
            f"{replicas * options.grad_accum}")


def make_tokenizer(options, texts, config, run_dir, chief=True):
    # Resuming: the run's own. A MultiWorker worker trains its own instead (the same
    # text and seed give the same tokenizer, checked below) rather than race the chief.
    if chief and os.path.exists(os.path.join(run_dir, rd.TOKENIZER, "tokenizer.json")):
        return load_tokenizer(os.path.join(run_dir, rd.TOKENIZER))
    if options.init:
        return GPT2Tokenizer.from_directory(options.init)
    if options.tokenizer == "char":
        return CharTokenizer.from_texts(texts)
    return SentencePieceTokenizer.train(texts, vocab_size=config.vocab_size, seed=options.seed)


def unigram_cross_entropy(train_ids, val_ids, vocab_size):
    """Nats/token of the best context-free model (train unigram, add-one smoothed) on
    the validation tokens: the bar a language model must clearly beat."""
    counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
    log_probs = np.log(counts / counts.sum())
    return float(-log_probs[val_ids].mean())


def build_model_and_optimizer(options, strategy, build):
    """`build()`'s model and its optimizer in `strategy.scope()`, under the precision's
    policy (set only while building: layers keep the policy they were built with)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[options.precision])
    try:
        with strategy.scope():
            model = build()
            optimizer = build_optimizer(
                model, options.lr, options.steps, options.warmup_steps, options.weight_decay,
                clip_norm=options.clip_norm, precision=options.precision, beta_2=options.beta2)
    finally:
        keras.config.set_dtype_policy(previous)
    return model, optimizer


def inference_copy(model, config, options, strategy):
    """The model itself, or, when it was trained in mixed precision or across devices, a
    float32 single-device copy of its weights: what samples and the SavedModel use."""
    if options.precision == "fp32" and strategy_kind(strategy) == "default":
        return model
    copy = build_gpt(config)
    copy.set_weights(model.get_weights())
    return copy


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
        log = _tagged(log, f"[worker {worker_id(strategy)}] ")
    keras.utils.set_random_seed(options.seed)

    t0 = time.time()
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
        os.makedirs(run_dir, exist_ok=True)
        config.save(os.path.join(run_dir, rd.CONFIG))
        rd.write_json(os.path.join(run_dir, rd.TRAIN_CONFIG), dataclasses.asdict(options))
        tokenizer.save(os.path.join(run_dir, rd.TOKENIZER))

    model, optimizer = build_model_and_optimizer(options, strategy, lambda: build_gpt(config))
    trainer = Trainer(model, optimizer, strategy, pad_id=tokenizer.pad_id,
                      jit_compile=options.xla, grad_accum=options.grad_accum)
    checkpoints = Checkpoints(os.path.join(run_dir, rd.CHECKPOINTS), model, optimizer,
                              keep=options.keep_checkpoints, chief=chief)
    restored = checkpoints.restore(warn=_warn)
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

    val_loss, val_tokens = trainer.evaluate(val_ds)
    unigram = unigram_cross_entropy(train_ids, val_ids, tokenizer.vocab_size)
    log(f"validation loss {val_loss:.4f} nats/token (perplexity {math.exp(val_loss):.1f}) "
        f"vs unigram entropy {unigram:.4f} nats/token")
    result = {"run_dir": run_dir, "val_loss": val_loss, "val_tokens": val_tokens,
              "unigram_entropy": unigram, "steps": int(checkpoints.step),
              "train_losses": losses}
    if not chief:
        return result

    plot_losses(logs.metrics.read(), os.path.join(run_dir, rd.LOSS_PLOT),
                title=f"{options.name}: {options.preset} on {options.data or 'pydoc_data'}")
    final = inference_copy(model, config, options, strategy)
    if options.sample_tokens:
        write_samples(final, tokenizer, config, os.path.join(run_dir, rd.SAMPLES), options)
    if options.export:
        result["saved_model"] = export_final(final, tokenizer, config, options, log)
    return result


def logged_train_loop(trainer, train_ds, val_ds, options, checkpoints, run_dir, chief, log):
    """`train_loop` with the chief's metrics.csv and TensorBoard open around it; returns
    (losses, the closed RunLogs or None on other workers)."""
    logs = RunLogs(run_dir, int(checkpoints.step)) if chief else None
    try:
        return train_loop(trainer, train_ds, val_ds, options, checkpoints, logs, log), logs
    finally:
        if logs:
            logs.close()


def export_final(model, tokenizer, config, options, log):
    """Export the trained GPT to export_dir/name (the next version); returns its path."""
    from tfllm.export import export_model

    path = export_model(model, tokenizer, config, os.path.join(options.export_dir, options.name),
                        train_options=dataclasses.asdict(options))
    log(f"exported SavedModel: {path}")
    return path


def _tagged(log, prefix):
    return lambda message: log(prefix + message)


def _warn(message):
    print(f"warning: {message}", file=sys.stderr, flush=True)


def check_resumable(run_dir, config, options=None):
    """Rerunning a name resumes it: the model and the precision (fp16's loss-scaled
    optimizer keeps other variables in its checkpoints) must be the run's own."""
    path = os.path.join(run_dir, rd.CONFIG)
    if os.path.exists(path) and GPTConfig.load(path) != config:
        raise ValueError(
            f"'{run_dir}' holds a run with a different model config: pick another --name "
            "or delete that directory")
    if options is not None and os.path.exists(os.path.join(run_dir, rd.TRAIN_CONFIG)):
        before = rd.train_options(run_dir).get("precision", "fp32")
        if before != options.precision:
            raise ValueError(
                f"'{run_dir}' was trained with --precision {before}: resume it with the "
                "same precision, or pick another --name")


def check_workers_agree(strategy, step, data_fingerprint):
    """Under MultiWorker every worker must resume from the same step (they do when the
    run directory is on a filesystem they all see) and tokenize the same text the same
    way (a fingerprint of the training tokens)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return

    @tf.function
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


class RunLogs:
    """metrics.csv and TensorBoard, written by the chief."""

    def __init__(self, run_dir, resumed_step):
        self.metrics = MetricsLog(os.path.join(run_dir, rd.METRICS))
        self.metrics.truncate(resumed_step)  # steps after the checkpoint are logged again
        self.tensorboard = TensorBoardLog(os.path.join(run_dir, rd.TENSORBOARD))

    def write(self, step, loss, lr, grad_norm, rate, elapsed, val_loss=None):
        self.metrics.write(
            step=step, train_loss=f"{loss:.6f}", learning_rate=f"{lr:.4e}",
            grad_norm=f"{grad_norm:.5f}", tokens_per_sec=f"{rate:.0f}",
            elapsed_s=f"{elapsed:.1f}", val_loss="" if val_loss is None else f"{val_loss:.6f}")
        self.tensorboard.write(step, loss=loss, learning_rate=lr, grad_norm=grad_norm,
                               tokens_per_sec=rate, val_loss=val_loss)

    def close(self):
        self.tensorboard.close()


def train_loop(trainer, train_ds, val_ds, options, checkpoints, logs, log=print):
    """Run the steps left, `options.steps_per_call` at a time (a call ends at every
    logging, evaluation and checkpoint step); returns {step: train loss} for each step
    run here."""
    step = int(checkpoints.step)
    position = int(checkpoints.data_position)
    losses = {}
    if step >= options.steps:
        return losses
    # The shuffled stream is seeded, so skipping the batches already drawn resumes the data.
    batches = iter(trainer.distribute(train_ds.skip(position)))
    interactive = sys.stdout.isatty()
    progress = None
    if interactive:
        progress = keras.utils.Progbar(
            options.steps, stateful_metrics=["loss", "tok/s", "lr", "grad norm"])
        progress.update(step)
    start, window_start, pending, timed = time.time(), time.time(), [], []
    while step < options.steps:
        # The first call compiles: one step, kept off the clock.
        count = 1 if not losses and not pending else min(
            options.steps_per_call, _steps_to_boundary(step, options))
        result = trainer.train_steps(batches, count)
        first = step + 1
        step += count
        position += count
        pending.append((first, result))
        if len(pending) == 1 and not losses:
            float(result[0][0])
            window_start = time.time()
        else:
            timed.append(result[1])
        last = step == options.steps
        evaluate = step % options.eval_every == 0 or last
        if step % options.log_every == 0 or evaluate:
            # Reading the numbers waits for the steps: only here, not after every call.
            for first, (call_losses, _, _) in pending:
                losses.update(zip(range(first, first + len(call_losses)),
                                  map(float, call_losses.numpy())))
            rate = sum(float(tf.reduce_sum(t)) for t in timed) / max(
                time.time() - window_start, 1e-9)
            loss, grad_norm = losses[step], float(pending[-1][1][2][-1])
            lr = current_learning_rate(trainer.optimizer)
            val_loss = trainer.evaluate(val_ds, options.eval_batches)[0] if evaluate else None
            if logs:
                logs.write(step, loss, lr, grad_norm, rate, time.time() - start, val_loss)
            if progress:
                progress.update(step, [("loss", loss), ("tok/s", rate), ("lr", lr),
                                       ("grad norm", grad_norm)])
            else:
                log(f"step {step}/{options.steps}: loss {loss:.5f}, lr {lr:.3e}, grad norm "
                    f"{grad_norm:.4f}, {rate:,.0f} tokens/s"
                    + ("" if val_loss is None else f", val loss {val_loss:.5f}"))
            pending, timed, window_start = [], [], time.time()
        if step % options.checkpoint_every == 0 or last:
            checkpoints.save(step, position)
    return losses


def _steps_to_boundary(step, options):
    """Steps from `step` to the next step that logs, evaluates, checkpoints or ends."""
    cadences = (options.log_every, options.eval_every, options.checkpoint_every)
    return min([every - step % every for every in cadences] + [options.steps - step])


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
