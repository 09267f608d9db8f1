#!/usr/bin/env python3
"""Evaluate a train.py run or an exported SavedModel, as its task does.

    python evaluate.py runs/tiny
    python evaluate.py saved_models/tiny/1 --data held_out.txt --prompt "The" --prompt "A list"
    python evaluate.py runs/tiny-sft                    # a chat model: held-out conversations
    python evaluate.py runs/sst2 --data test.tsv        # a classifier: label<TAB>text
    python evaluate.py runs/en-zh --data cmn-eng:test   # a translator: BLEU and chrF
    python evaluate.py runs/tiny --attention "A list is"   # attention.png of every head
    python evaluate.py runs/tiny runs/small --losses       # losses.png of several runs

Prints a table and writes report.json (next to the run, or in --out). A language model:
loss, perplexity, bits per byte and generations; a chat model: assistant-token loss and
end-of-turn rate; a classifier: also report.md and confusion.png.
"""

import argparse
import os

from tfllm.cli import exit_at_once, exit_code, import_tensorflow_quietly
from tfllm.datasets import resolve_data
from tfllm.tasks import require, task_of


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Evaluate a run directory or a SavedModel as its task does: a language "
                    "model's loss, perplexity, bits per byte and generations; a chat model's "
                    "assistant-token loss and end-of-turn rate; a classifier's accuracy, F1 "
                    "and confusion matrix.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("models", nargs="+", metavar="model",
                   help="runs/NAME (train.py run) or saved_models/NAME/VERSION; several run "
                   "directories with --losses")
    p.add_argument("--data", default="", help="what to score: text file(s), directory or "
                   "glob (language model); a JSONL conversations file (chat model); one "
                   "labelled file (classifier: label<TAB>text, CSV, JSONL); default: the "
                   "run's own validation data")
    p.add_argument("--prompt", action="append", default=[],
                   help="language model: prompt to continue (repeat the flag for several)")
    p.add_argument("--max-new-tokens", type=int, default=64,
                   help="tokens generated per prompt (chat model: per reply)")
    p.add_argument("--seq-len", type=int, default=0,
                   help="scoring window; 0: the model's context length")
    p.add_argument("--batch-size", type=int, default=16, help="rows per scoring batch")
    p.add_argument("--attention", default=None, metavar="TEXT",
                   help="a GPT run directory: write attention.png instead, every layer's and "
                   "head's attention over TEXT and the probability of each next token")
    p.add_argument("--suite", action="store_true",
                   help="write the report card instead (report.json, report.md, suite.png): "
                   "text, translation, math, sentiment, chat and continuation rows, a column "
                   "per model")
    p.add_argument("--suite-data", action="append", default=[], metavar="ROW=SPEC",
                   help="a row's data, a file or a dataset name (defaults: "
                   "translate=cmn-eng:test, math=gsm8k:test, sentiment=sst2:test, "
                   "chat=personality_chat:valid, continue=tang_poetry:valid; text: the first "
                   "model's held-out text)")
    p.add_argument("--suite-rows", default="",
                   help="the rows to score, comma-separated (default: every row that applies "
                   "to a model): text, translate, math, sentiment, chat, continue")
    p.add_argument("--suite-size", type=int, default=100,
                   help="examples scored per row and model")
    p.add_argument("--suite-language", default="en",
                   help="the language of the sentiment and continue rows' instructions, en or "
                   "zh (and the sentiment words; zh: waimai_10k:test by default)")
    p.add_argument("--losses", action="store_true",
                   help="write losses.png instead: the train and validation loss curves of "
                   "every run directory given, together")
    p.add_argument("--out", default="", help="directory for the reports (default: a run's "
                   "own directory; for a SavedModel, the current directory)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.model = args.models[0]

    def run():
        if args.suite:
            return suite(args)
        if args.losses:
            return losses(args)
        if len(args.models) > 1:
            raise ValueError(f"{len(args.models)} models given: evaluate one at a time, or "
                             "add --losses to plot their loss curves together")
        if args.attention is not None:
            return attention(args)
        task = task_of(args.model)
        args.data = resolve_data(args.data, log=print)
        import_tensorflow_quietly()
        task.evaluate(args)

    return exit_code(run)


def suite(args):
    """evaluate.py --suite: the report card of every model given."""
    for path in args.models:
        task_of(path)  # refuse a path that is no model before TensorFlow starts
    import_tensorflow_quietly()
    from tfllm.suite import format_markdown, run_suite

    report = run_suite(args.models, args.suite_data, args.suite_size, args.out or ".",
                       args.suite_language, rows=args.suite_rows)
    print(format_markdown(report).split("\n## Samples")[0])
    print(f"report card: {os.path.join(args.out or '.', 'report.md')}")


def losses(args):
    """evaluate.py --losses: the loss curves of several runs in one plot."""
    from tfllm.training.logs import MetricsLog, plot_runs
    from tfllm.training.run_dir import METRICS

    runs = {}
    for run in args.models:
        path = os.path.join(run, METRICS)
        if not os.path.exists(path):
            raise FileNotFoundError(f"'{run}' has no {METRICS}: give run directories written "
                                    "by train.py (runs/NAME)")
        runs[os.path.basename(os.path.normpath(run))] = MetricsLog(path).read()
    out = args.out or "."
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "losses.png")
    plot_runs(runs, path, title=", ".join(runs))
    print(f"loss curves: {path}")


def attention(args):
    """evaluate.py --attention: the attention maps of a GPT run directory."""
    require(args.model, "--attention", lambda task: task.generates)
    if os.path.exists(os.path.join(args.model, "saved_model.pb")):
        raise ValueError("--attention needs the run directory (runs/NAME): a SavedModel "
                         "keeps no attention probabilities")
    import_tensorflow_quietly()
    from tfllm.attention_maps import attention_report
    from tfllm.training.run_dir import load_run

    model, tokenizer, _ = load_run(args.model)
    out = args.out or args.model
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "attention.png")
    _, next_probs, pieces = attention_report(model, tokenizer, args.attention, path)
    for piece, p in zip(pieces[1:], next_probs):
        print(f"{p:7.3f}  {piece!r}")
    print(f"attention maps: {path}")


if __name__ == "__main__":
    exit_at_once(main())
