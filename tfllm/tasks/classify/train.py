"""Training a text classifier: labelled files, tokenizer, encoder (or a pretrained GPT
with a head), the shared train loop, the best checkpoint on validation, export.

    runs/<name>/
      config.json, train_config.json, tokenizer/     as for a language model
      classifier.json      labels (the label vocabulary, in class-id order), pooling,
                           causal, seq_len, class weights
      checkpoints/         the latest steps (resume)
      best/                the weights with the best validation accuracy: what
                           evaluate.py and the export use
      metrics.csv, tensorboard/, loss.png

Every input is read and checked (files, labels, sizes, tokenizer) before the first file
is written, so a rejected run leaves nothing behind.
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tfllm.atomic import write_json
from tfllm.data.rows import encode_array, token_counts
from tfllm.graph_function import graph_function
from tfllm.models import GPTConfig
from tfllm.models.classifier import copy_backbone_weights, member_view
from tfllm.tasks.classify.data import (class_weights, label_ids, label_vocabulary,
                                       read_examples, split_examples)
from tfllm.tasks.classify.model import BEST, CLASSIFIER, ClassificationLoss, ClassifierInfo
from tfllm.tasks.classify.export import export_classifier
from tfllm.tasks.classify.report import classification_metrics
from tfllm.tokenizers import CharTokenizer, SentencePieceTokenizer, load_tokenizer
from tfllm.training import run_dir as rd
from tfllm.training.build import build_model_and_optimizer, check_batch, inference_copy
from tfllm.training.checkpoints import Checkpoints, restore_latest
from tfllm.training.logs import MetricsLog, TensorBoardLog, plot_in_background
from tfllm.training.loop import Trainer
from tfllm.training.optimizer import current_learning_rate
from tfllm.training.run_dir import load_run
from tfllm.training.strategy import is_chief, resolve_strategy

METRIC_FIELDS = ("step", "train_loss", "val_loss", "val_accuracy", "val_macro_f1",
                 "learning_rate", "grad_norm", "examples_per_sec", "elapsed_s")


# --- before anything is written ------------------------------------------------------


@dataclasses.dataclass
class Prepared:
    """Everything a run needs, read and checked; nothing written yet."""

    config: GPTConfig
    info: ClassifierInfo
    tokenizer: object
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    val_source: str
    truncated: int
    backbone: object = None     # the pretrained GPT (--init)


def prepare(options, run_dir, token_dropout=0.0):
    """Read the data, labels, tokenizer and model shape; raise on anything wrong."""
    if options.init and options.pooling == "cls":
        raise ValueError("--pooling cls needs an encoder (a class token before the text "
                         "sees nothing in a causal GPT): use --pooling last or mean with --init")
    if options.val_fraction and not 0.0 < options.val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in (0, 1), got {options.val_fraction}")
    columns = dict(text_column=options.text_column, label_column=options.label_column)
    train = read_examples(options.data, **columns)
    if options.val:
        val, val_source = read_examples(options.val, **columns), options.val
    else:
        train, val = split_examples(train, options.val_fraction, options.seed)
        val_source = f"{options.val_fraction:.0%} of {options.data}"
    labels = label_vocabulary(train)
    if len(labels) < 2:
        raise ValueError(f"'{options.data}' has only the label {labels[0]!r}: a classifier "
                         "needs examples of at least two labels")
    y_train, y_val = label_ids(train, labels), label_ids(val, labels)
    weights = class_weights(y_train, len(labels)).tolist() if options.class_weights else None
    if len(train) < options.batch_size:
        raise ValueError(f"the training data has {len(train)} examples, fewer than one "
                         f"batch of {options.batch_size}: lower --batch-size")

    backbone = None
    existing = os.path.join(run_dir, rd.TOKENIZER)
    if options.init:
        config, tokenizer, backbone = _pretrained(options)
    else:
        config = GPTConfig.from_preset(options.preset, **options.overrides)
    if os.path.exists(os.path.join(existing, "tokenizer.json")):  # resuming: the run's own
        tokenizer = load_tokenizer(existing)
    elif not options.init:
        texts = [e.text for e in train]
        tokenizer = (CharTokenizer.from_texts(texts) if options.tokenizer == "char" else
                     SentencePieceTokenizer.train(texts, vocab_size=config.vocab_size,
                                                  seed=options.seed))
    if not options.init:
        config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size,
                                     pad_id=tokenizer.pad_id)

    context = config.context_length
    if options.init and "context_length" in options.overrides:
        # A shorter --context-length for a pretrained GPT only shortens the texts.
        context = min(context, options.overrides["context_length"])
    counts = token_counts(tokenizer, [e.text for e in train])
    seq_len = options.seq_len or min(int(counts.max()) + 1, context)
    if seq_len > context:
        raise ValueError(f"--seq-len {seq_len} is above the model's context of "
                         f"{context}: lower --seq-len or raise --context-length")
    if seq_len < 2:
        raise ValueError(f"--seq-len {seq_len} leaves no room for text: use 2 or more")
    info = ClassifierInfo(labels=labels, pooling=options.pooling, causal=bool(options.init),
                          seq_len=seq_len, class_weights=weights,
                          token_dropout=float(token_dropout), members=options.members)
    _check_resumable(run_dir, config, info)
    return Prepared(
        config, info, tokenizer,
        encode_array(tokenizer, [e.text for e in train], seq_len), y_train,
        encode_array(tokenizer, [e.text for e in val], seq_len), y_val, val_source,
        truncated=int((counts > seq_len - 1).sum()), backbone=backbone)


def _pretrained(options):
    """(config, tokenizer, GPT) of the language-model run `--init` names."""
    if not os.path.exists(os.path.join(options.init, rd.CONFIG)):
        raise FileNotFoundError(
            f"--init '{options.init}' is not a train.py run directory (no {rd.CONFIG}): "
            "pretrain one first (train.py --data TEXT --name NAME) and pass runs/NAME")
    if rd.recorded_task(options.init) == "classify":
        raise ValueError(f"--init '{options.init}' is a classifier (task classify): pass a "
                         "language-model run (train.py --task lm)")
    gpt, tokenizer, config = load_run(options.init)
    if "dropout" in options.overrides:
        config = dataclasses.replace(config, dropout=options.overrides["dropout"])
    return config, tokenizer, gpt


def _check_resumable(run_dir, config, info):
    config_path, info_path = os.path.join(run_dir, rd.CONFIG), os.path.join(run_dir, CLASSIFIER)
    if os.path.exists(config_path) and (
            GPTConfig.load(config_path) != config or not os.path.exists(info_path)
            or ClassifierInfo.load(info_path) != info):
        raise ValueError(
            f"'{run_dir}' holds a different run (model, labels or sequence length): pick "
            "another --name or delete that directory")


# --- the run -------------------------------------------------------------------------


def train_classifier(options, log=print):
    """Train, keep the best weights on validation, export; returns a dict of the final
    numbers (validation accuracy/macro-F1 of the best step, steps, seconds, paths).

    `options.patience`: stop after this many evaluations without a better validation
    accuracy (0: run every step). `options.token_dropout`: word dropout while training
    (see `build_classifier`).
    """
    patience, token_dropout = options.patience or None, options.token_dropout
    run_dir = os.path.join(options.runs_dir, options.name)
    strategy = resolve_strategy(options.strategy)
    check_batch(options, strategy.num_replicas_in_sync)
    chief = is_chief(strategy)
    keras.utils.set_random_seed(options.seed)
    t0 = time.time()
    prepared = prepare(options, run_dir, token_dropout)
    info, config, tokenizer = prepared.info, prepared.config, prepared.tokenizer
    counts = np.bincount(prepared.y_train, minlength=len(info.labels))
    log(f"data: {len(prepared.y_train):,} training examples, {len(prepared.y_val):,} "
        f"validation ({prepared.val_source}); {len(info.labels)} labels "
        f"({', '.join(f'{label}: {n}' for label, n in zip(info.labels[:10], counts))}"
        f"{', ...' if len(info.labels) > 10 else ''}); {tokenizer.kind} tokenizer, vocab "
        f"{tokenizer.vocab_size}; {info.seq_len} tokens per text ({prepared.truncated} "
        f"cut) [{time.time() - t0:.1f}s]")

    if chief:
        rd.start_run(run_dir, config, options, tokenizer)
        info.save(os.path.join(run_dir, CLASSIFIER))

    model, optimizer = build_model_and_optimizer(
        options, strategy, lambda: prepared.info.build(prepared.config))
    trainer = Trainer(member_view(model), optimizer, strategy, pad_id=tokenizer.pad_id,
                      jit_compile=options.xla, grad_accum=options.grad_accum,
                      loss=ClassificationLoss(info.class_weights))
    checkpoints = Checkpoints(os.path.join(run_dir, rd.CHECKPOINTS), model, optimizer,
                              keep=options.keep_checkpoints, chief=chief)
    best = BestWeights(os.path.join(run_dir, BEST), model, chief)
    restored = checkpoints.restore()
    if restored:
        log(f"resumed from {restored} at step {int(checkpoints.step)}")
    elif prepared.backbone is not None:
        copy_backbone_weights(model, prepared.backbone)
        log(f"initialized the encoder from the language model in '{options.init}'")
    majority = float(np.mean(prepared.y_val == np.bincount(prepared.y_train).argmax()))
    log(f"model: {'GPT from ' + options.init if options.init else options.preset + ' encoder'}"
        f", {model.count_params():,} parameters, {config.num_layers} layers x "
        f"{config.embed_dim} wide, {info.pooling} pooling"
        + (f", an ensemble of {info.members}" if info.members > 1 else "")
        + f"; {strategy.num_replicas_in_sync} "
        f"replica(s), {options.precision}, XLA {'on' if options.xla else 'off'}; "
        f"majority-class validation accuracy {majority:.4f}")

    train_ds = training_dataset(prepared.x_train, prepared.y_train, options.batch_size,
                                options.seed, tokenizer.pad_id)
    logs = RunLogs(run_dir, int(checkpoints.step)) if chief else None
    started = time.time()
    try:
        stopped = train_loop(trainer, train_ds, prepared, options, checkpoints, best, logs,
                             log, patience)
    finally:
        if logs:
            logs.close()
    seconds = time.time() - started
    # Drawn while the final evaluation runs.
    plot = chief and plot_in_background(
        logs.metrics, run_dir, f"{options.name}: classifier on {options.data}")

    best.restore()
    scores = validation_scores(model, prepared.x_val, prepared.y_val, len(info.labels),
                               tokenizer.pad_id)
    log(f"best step {best.step}: validation accuracy {scores['accuracy']:.4f}, macro-F1 "
        f"{scores['macro_f1']:.4f}, loss {scores['loss']:.4f}"
        + (f" (stopped early at step {stopped})" if stopped else ""))
    result = {"run_dir": run_dir, "best_step": best.step, "steps": int(checkpoints.step),
              "stopped_early": bool(stopped), "train_seconds": seconds,
              "val_accuracy": scores["accuracy"], "val_macro_f1": scores["macro_f1"],
              "val_loss": scores["loss"], "labels": list(info.labels), "seq_len": info.seq_len}
    if not chief:
        return result
    plot.result()
    if options.export:
        final = inference_copy(model, lambda: info.build(config), options, strategy)
        result["saved_model"] = export_classifier(
            final, tokenizer, config, info, os.path.join(options.export_dir, options.name),
            train_options=dataclasses.asdict(options))
        log(f"exported SavedModel: {result['saved_model']}")
    return result


# Batches are cut to their longest text, rounded up to a multiple of this: short texts
# cost short steps, and XLA compiles only seq_len / LENGTH_STEP shapes.
LENGTH_STEP = 16


def text_lengths(x, pad_id):
    """Real tokens per right-padded row of `x`."""
    real = x != pad_id
    return np.where(real.any(axis=1), x.shape[1] - np.argmax(real[:, ::-1], axis=1), 0)


def training_dataset(x, y, batch_size, seed, pad_id):
    """Shuffled, repeated batches of texts of similar length (buckets LENGTH_STEP wide),
    each cut to the bucket's width. Seeded, so skipping the batches already drawn
    resumes the stream."""
    lengths = text_lengths(x, pad_id).astype(np.int32)
    boundaries = list(range(LENGTH_STEP + 1, x.shape[1] + 1, LENGTH_STEP))
    ds = tf.data.Dataset.from_tensor_slices((x, y, lengths))
    ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.bucket_by_sequence_length(
        lambda ids, label, length: length, boundaries, [batch_size] * (len(boundaries) + 1),
        drop_remainder=True)

    def cut(ids, labels, lengths):
        width = tf.minimum((tf.reduce_max(lengths) + LENGTH_STEP - 1) // LENGTH_STEP
                           * LENGTH_STEP, tf.shape(ids)[1])
        return ids[:, :width], labels

    return ds.map(cut).prefetch(2)


class BestWeights:
    """The weights of the best validation accuracy so far (ties: lower loss), in their
    own checkpoint directory with the step and scores beside them (best.json)."""

    def __init__(self, directory, model, chief=True):
        self.directory, self.chief, self.model = directory, chief, model
        self.checkpoint = tf.train.Checkpoint(model=model)
        self.step, self.key = 0, None
        self._weights = None  # a worker keeps them in memory instead
        state = os.path.join(directory, "best.json")
        if os.path.exists(state):  # resuming
            with open(state, encoding="utf-8") as f:
                saved = json.load(f)
            self.step, self.key = saved["step"], tuple(saved["key"])
        if chief:
            os.makedirs(directory, exist_ok=True)
            self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=1)

    def offer(self, step, scores):
        """Keep the current weights if they beat the best; returns whether they did."""
        key = (scores["accuracy"], -scores["loss"])
        if self.key is not None and key <= self.key:
            return False
        self.step, self.key = step, key
        if self.chief:
            self.manager.save(checkpoint_number=step)
            write_json(os.path.join(self.directory, "best.json"),
                          {"step": step, "key": list(key), **scores})
        else:
            self._weights = self.model.get_weights()
        return True

    def restore(self):
        if not self.chief and self._weights is not None:
            self.model.set_weights(self._weights)
        elif self.chief and self.key is not None:
            restore_latest(self.checkpoint, self.directory, partial=True)


def validation_scores(model, x, y, num_classes, pad_id=0, batch_size=128):
    """Accuracy, macro-F1 and mean cross-entropy of `model` on encoded `(x, y)`."""
    logits = predict_logits(model, x, batch_size, pad_id)
    log_probs = logits - _logsumexp(logits)
    metrics = classification_metrics(y, logits.argmax(-1), num_classes)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "loss": float(-log_probs[np.arange(len(y)), y].mean())}


def predict_logits(model, x, batch_size=128, pad_id=0):
    """float64 logits for right-padded int32 `x (n, seq)`: texts sorted by length, in
    full batches cut to a multiple of LENGTH_STEP (few traces, little padding)."""
    step = _predict_fn(model)
    lengths = text_lengths(x, pad_id)
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(x), int(model.output.shape[-1])), np.float64)
    for i in range(0, len(x), batch_size):
        rows = order[i:i + batch_size]
        rows = np.concatenate([rows, np.repeat(rows[-1:], batch_size - len(rows))])
        width = min(-(-int(lengths[rows].max()) // LENGTH_STEP) * LENGTH_STEP, x.shape[1])
        logits = step(tf.constant(x[rows, :max(width, 1)])).numpy()
        out[rows] = logits
    return out


def _predict_fn(model):
    if not hasattr(model, "_tfllm_predict"):
        # One trace for every batch width (batches are cut to their longest text).
        model._tfllm_predict = graph_function(
            lambda ids: model(ids, training=False), jit_compile=False,
            input_signature=[tf.TensorSpec([None, None], tf.int32)])
    return model._tfllm_predict


def _logsumexp(x):
    top = x.max(axis=-1, keepdims=True)
    return top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True))


class RunLogs:
    """metrics.csv (with validation accuracy and macro-F1 columns) and TensorBoard."""

    def __init__(self, run_dir, resumed_step):
        path = os.path.join(run_dir, rd.METRICS)
        if not os.path.exists(path):  # MetricsLog keeps the columns of an existing header
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(",".join(METRIC_FIELDS) + "\n")
        self.metrics = MetricsLog(path)
        self.metrics.truncate(resumed_step)
        self.tensorboard = TensorBoardLog(os.path.join(run_dir, rd.TENSORBOARD))

    def write(self, step, **values):
        self.metrics.write(step=step, **{k: "" if v is None else f"{v:.6g}"
                                         for k, v in values.items()})
        self.tensorboard.write(step, **values)

    def close(self):
        self.tensorboard.close()


def train_loop(trainer, train_ds, prepared, options, checkpoints, best, logs, log,
               patience=None):
    """Run the steps left, evaluating every `eval_every`; returns the step it stopped
    early at (0: it ran them all)."""
    step, position = int(checkpoints.step), int(checkpoints.data_position)
    batches = iter(trainer.distribute(train_ds.skip(position)))
    num_classes = len(prepared.info.labels)
    start = window = time.time()
    pending, stale, stopped = [], 0, 0
    while step < options.steps:
        pending.append(trainer.train_step(next(batches)))
        step += 1
        position += 1
        last = step == options.steps
        evaluate = step % options.eval_every == 0 or last
        if step % options.log_every == 0 or evaluate:
            loss = float(np.mean([float(p[0]) for p in pending]))
            grad_norm = float(pending[-1][2])
            rate = len(pending) * options.batch_size / max(time.time() - window, 1e-9)
            scores = {}
            if evaluate:
                scores = validation_scores(best.model, prepared.x_val, prepared.y_val,
                                           num_classes, prepared.tokenizer.pad_id)
                if best.offer(step, scores):
                    stale = 0
                else:
                    stale += 1
            if logs:
                logs.write(step, train_loss=loss, val_loss=scores.get("loss"),
                           val_accuracy=scores.get("accuracy"),
                           val_macro_f1=scores.get("macro_f1"),
                           learning_rate=current_learning_rate(trainer.optimizer),
                           grad_norm=grad_norm, examples_per_sec=rate,
                           elapsed_s=time.time() - start)
            log(f"step {step}/{options.steps}: loss {loss:.4f}, grad norm {grad_norm:.3f}, "
                f"{rate:,.0f} examples/s" + (
                    f", val loss {scores['loss']:.4f}, accuracy {scores['accuracy']:.4f}, "
                    f"macro-F1 {scores['macro_f1']:.4f}" if scores else ""))
            pending, window = [], time.time()
            if patience and stale >= patience and not last:
                stopped = step
        if step % options.checkpoint_every == 0 or last or stopped:
            checkpoints.save(step, position)
        if stopped:
            break
    return stopped
