#!/usr/bin/env python3
"""Evaluate a train.py run or an exported SavedModel.

    python evaluate.py runs/tiny
    python evaluate.py saved_models/tiny/1 --data held_out.txt --prompt "The" --prompt "A list"
    python evaluate.py runs/sst2 --data test.tsv        # a classifier: label<TAB>text

Prints a table and writes report.json (next to the run, or in --out); for a classifier
also report.md and confusion.png.
"""

import argparse
import os
import sys

from tfllm.cli import exit_code, import_tensorflow_quietly


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Validation loss, perplexity, bits per byte and generations for a run "
                    "directory or a SavedModel.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="runs/NAME (train.py run) or saved_models/NAME/VERSION")
    p.add_argument("--data", default="", help="text file(s), directory or glob to score whole; "
                   "a classifier: one labelled file (label<TAB>text, CSV, JSONL); default: "
                   "the run's own validation split")
    p.add_argument("--prompt", action="append", default=[],
                   help="prompt to continue (repeat the flag for several)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per prompt")
    p.add_argument("--seq-len", type=int, default=0,
                   help="scoring window; 0: the model's context length")
    p.add_argument("--batch-size", type=int, default=16, help="windows per scoring batch")
    p.add_argument("--out", default="", help="directory for report.json (default: a run's "
                   "own directory; for a SavedModel, the current directory)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return exit_code(lambda: evaluate(args))


def evaluate(args):
    import_tensorflow_quietly()
    from tfllm.classification_report import is_classifier

    if is_classifier(args.model):
        return evaluate_classifier(args)
    from tfllm.evaluation import (format_table, heldout_texts, load_for_evaluation,
                                  score_texts, write_report)
    from tfllm.generation import check_generation_args

    if args.prompt:
        check_generation_args(args.max_new_tokens, 0.0, 0, 1.0)
    model = load_for_evaluation(args.model)
    context = model.context_length
    seq_len = args.seq_len or context
    if seq_len > context:
        raise ValueError(f"--seq-len {seq_len} is above the model's context of {context}: "
                         "lower it")
    texts = heldout_texts(model.train_options, args.data)
    if not texts:
        raise ValueError("no held-out text to score: pass --data FILE")
    metrics = score_texts(model, texts, seq_len, args.batch_size)
    outputs = model.generate(args.prompt, args.max_new_tokens) if args.prompt else []
    report = {"model": args.model, "data": args.data or "validation split of the run's data",
              "seq_len": seq_len, "metrics": metrics,
              "generations": [{"prompt": p, "output": o} for p, o in zip(args.prompt, outputs)]}
    is_saved_model = os.path.exists(os.path.join(args.model, "saved_model.pb"))
    path = write_report(report, args.out or ("." if is_saved_model else args.model))
    print(format_table(report))
    print(f"report: {path}")


def evaluate_classifier(args):
    """A classifier: accuracy, per-class precision/recall/F1, macro/weighted F1, the
    confusion matrix and the most confident mistakes on a labelled file."""
    from tfllm.classification_report import evaluate_classifier as run, format_table

    if args.prompt:
        raise ValueError(f"'{args.model}' is a classifier: --prompt applies to language "
                         "models only, drop it")
    report, paths = run(args.model, args.data, args.out, args.batch_size)
    print(format_table(report))
    print(f"report: {paths['json']} ({paths['md']}, {paths['png']})")


if __name__ == "__main__":
    sys.exit(main())
