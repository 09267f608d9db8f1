"""Evaluating a language model: loss, perplexity and bits per byte on held-out text,
generations, and the report files (report.json, printed table).

Works from a run directory (Keras model + tokenizer) or from an exported SavedModel
alone (its `tokenize`, `logits` and `serving_default` signatures), so what is served is
what is measured.
"""

import json
import math
import os

import numpy as np
import tensorflow as tf

from tfllm.atomic import write_json
from tfllm.data import default_corpus, read_texts, scored_bytes, split_texts, window_arrays
from tfllm.graph_function import graph_function
from tfllm.quiet import quiet_stderr
from tfllm.tokenizers import EOS_ID, PAD_ID  # defaults for exports without tokenizer ids


class RunModel:
    """A train.py run directory, seen through the same calls as a SavedModel."""

    def __init__(self, run_dir):
        from tfllm.generation import Generator
        from tfllm.training.run_dir import load_run

        self.model, self.tokenizer, config = load_run(run_dir)
        self.context_length = config.context_length
        self.eos_id, self.pad_id = self.tokenizer.eos_id, self.tokenizer.pad_id
        self.train_options = _read_json(os.path.join(run_dir, "train_config.json"))
        # evaluate.py generates once, for its --prompt list: XLA's compile would cost more
        # than it saves.
        self._generator = Generator(self.model, self.tokenizer, self.context_length,
                                    jit_compile=False)
        self._logits = graph_function(lambda ids: self.model(ids, training=False),
                                      jit_compile=False)

    def tokenize(self, texts):
        return self.tokenizer.tokenize(tf.constant(texts))

    def logits(self, token_ids):
        return self._logits(tf.constant(token_ids, tf.int32))

    def generate(self, prompts, max_new_tokens):
        return self._generator(prompts, max_new_tokens=max_new_tokens)


class SavedModelModel:
    """An exported SavedModel (`saved_models/NAME/VERSION`), through its signatures."""

    def __init__(self, path):
        import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

        with quiet_stderr():  # TF Text's SentencePiece logs a line as the model loads
            self.loaded = tf.saved_model.load(path)
        metadata = _read_json(os.path.join(path, "assets.extra", "tfllm.json"))
        if "config" not in metadata:
            raise FileNotFoundError(
                f"'{path}' has no assets.extra/tfllm.json: it was not exported by tfllm")
        self.context_length = metadata["config"]["context_length"]
        ids = metadata.get("tokenizer", {})
        self.eos_id, self.pad_id = ids.get("eos_id", EOS_ID), ids.get("pad_id", PAD_ID)
        self.train_options = metadata.get("train_options", {})

    def tokenize(self, texts):
        out = self.loaded.signatures["tokenize"](texts=tf.constant(texts))
        return tf.RaggedTensor.from_tensor(out["token_ids"], lengths=out["lengths"])

    def logits(self, token_ids):
        return self.loaded.signatures["logits"](token_ids=tf.constant(token_ids, tf.int32))["logits"]

    def generate(self, prompts, max_new_tokens):
        try:
            out = self.loaded.signatures["greedy"](
                prompts=tf.constant(prompts), max_new_tokens=tf.constant(max_new_tokens))
        except tf.errors.InvalidArgumentError as e:
            # The served model refused the request (e.g. prompt + max_new_tokens > context).
            reason = e.message.split("assertion failed: ")[-1].splitlines()[0]
            raise ValueError(f"the SavedModel refused the request: {reason}") from None
        return [s.decode("utf-8", errors="replace") for s in out["outputs"].numpy()]


def load_for_evaluation(path):
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return SavedModelModel(path)
    if os.path.exists(os.path.join(path, "config.json")):
        return RunModel(path)
    raise FileNotFoundError(
        f"'{path}' is neither a run directory (config.json) nor a SavedModel "
        "(saved_model.pb): give runs/NAME or saved_models/NAME/VERSION")


def heldout_texts(train_options, data=None):
    """The text to score: `data` whole if given, else the run's own validation text (its
    --val, or the share of its --data held out)."""
    if data:
        return read_texts(data)
    if train_options.get("val"):
        return read_texts(train_options["val"])
    source = train_options.get("data")
    texts = read_texts(source) if source else default_corpus()
    return split_texts(texts, train_options.get("val_fraction", 0.1))[1]


def score_texts(model, texts, seq_len, batch_size=16):
    """Loss (nats/token), perplexity and bits/byte over every token of `texts`, each
    document followed by the tokenizer's EOS (padding: its pad id, never scored)."""
    pieces = [[model.eos_id]]
    for text in texts:
        pieces += [model.tokenize([text]).flat_values.numpy(), [model.eos_id]]
    ids = np.concatenate(pieces).astype(np.int32)
    x, y = window_arrays(ids, seq_len, pad_tail=True, pad_id=model.pad_id)
    total, count = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = np.asarray(model.logits(x[i:i + batch_size]), np.float64)
        targets = y[i:i + batch_size]
        log_probs = logits - _logsumexp(logits)
        nll = -np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
        real = targets != model.pad_id
        total += float(nll[real].sum())
        count += int(real.sum())
    n_bytes = scored_bytes(texts)
    loss = total / max(count, 1)
    return {"tokens": count, "bytes": n_bytes, "loss": loss, "perplexity": math.exp(loss),
            "bits_per_token": loss / math.log(2),
            "bits_per_byte": total / math.log(2) / max(n_bytes, 1)}


def _logsumexp(x):
    top = x.max(axis=-1, keepdims=True)
    return top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True))


def _read_json(path):
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_report(report, out_dir):
    """report.json, written atomically; returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "report.json")
    write_json(path, report)
    return path


def format_table(report):
    m = report["metrics"]
    rows = [("model", report["model"]), ("text", report["data"]),
            ("tokens scored", f"{m['tokens']:,}"), ("bytes", f"{m['bytes']:,}"),
            ("loss (nats/token)", f"{m['loss']:.4f}"), ("perplexity", f"{m['perplexity']:.2f}"),
            ("bits per byte", f"{m['bits_per_byte']:.4f}")]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    for g in report.get("generations", []):
        lines.append(f"--- {g['prompt']!r} -> {g['output']!r}")
    return "\n".join(lines)
