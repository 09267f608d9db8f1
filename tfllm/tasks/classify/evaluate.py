"""evaluate.py for a classifier (run directory or SavedModel): accuracy, per-class
precision/recall/F1, macro/weighted F1, the confusion matrix and the most confident
mistakes on a labelled file (report.json, report.md, confusion.png)."""

import json
import os

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops a SavedModel runs)

from tfllm.quiet import quiet_stderr
from tfllm.tasks.classify.data import label_ids, read_examples, split_examples
from tfllm.tasks.classify.model import load_classifier
from tfllm.tasks.classify.report import build_report, format_table, write_reports
from tfllm.training.run_dir import train_options


class SavedClassifier:
    """A classifier SavedModel, through its `serving_default` signature."""

    def __init__(self, path):
        with quiet_stderr():  # TF Text's SentencePiece logs a line as the model loads
            self._serve = tf.saved_model.load(path).signatures["serving_default"]
        with open(os.path.join(path, "assets.extra", "tfllm.json"), encoding="utf-8") as f:
            metadata = json.load(f)
        self.labels = metadata["labels"]
        self.train_options = metadata.get("train_options", {})

    def predict_proba(self, texts, batch_size=64):
        out = [self._serve(texts=tf.constant(texts[i:i + batch_size]))[
            "probabilities"].numpy() for i in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)


def evaluate_classifier(model_path, data="", out="", batch_size=64, mistakes=10):
    """Score the classifier at `model_path` (run directory or SavedModel) on the labelled
    file `data` (default: the run's validation data); write the reports to `out`
    (default: a run's own directory, else the current one). Returns (report, paths).
    Everything is read and checked before anything is written."""
    saved = os.path.exists(os.path.join(model_path, "saved_model.pb"))
    if saved:
        model = SavedClassifier(model_path)
        options = model.train_options
    else:
        model = load_classifier(model_path)
        options = train_options(model_path)
    columns = dict(text_column=options.get("text_column", "text"),
                   label_column=options.get("label_column", "label"))
    if data:
        examples = read_examples(data, **columns)
    elif options.get("val"):
        data = options["val"]
        examples = read_examples(data, **columns)
    elif options.get("data"):
        examples = split_examples(read_examples(options["data"], **columns),
                                  options.get("val_fraction", 0.1), options.get("seed", 0))[1]
        data = f"validation share of {options['data']}"
    else:
        raise ValueError("no labelled data to evaluate on: pass --data FILE")
    labels = list(model.labels)
    y_true = label_ids(examples, labels)  # a label the model never saw: file:line error
    probabilities = model.predict_proba([e.text for e in examples], batch_size)
    report = build_report(model_path, data, examples, probabilities, labels, y_true, mistakes)
    paths = write_reports(report, out or ("." if saved else model_path))
    return report, paths


def evaluate(args):
    """evaluate.py's work on a classifier: score it, print the table, write the reports."""
    if args.prompt:
        raise ValueError(f"'{args.model}' is a classifier (task classify): --prompt applies "
                         "to language models only, drop it")
    report, paths = evaluate_classifier(args.model, args.data, args.out, args.batch_size)
    print(format_table(report))
    print(f"report: {paths['json']} ({paths['md']}, {paths['png']})")
