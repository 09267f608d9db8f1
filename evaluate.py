#!/usr/bin/env python3
"""Evaluate a train.py run or an exported SavedModel, as its task does.

    python evaluate.py runs/tiny
    python evaluate.py saved_models/tiny/1 --data held_out.txt --prompt "The" --prompt "A list"
    python evaluate.py runs/tiny-sft                    # a chat model: held-out conversations
    python evaluate.py runs/sst2 --data test.tsv        # a classifier: label<TAB>text

Prints a table and writes report.json (next to the run, or in --out). A language model:
loss, perplexity, bits per byte and generations; a chat model: assistant-token loss and
end-of-turn rate; a classifier: also report.md and confusion.png.
"""

import argparse
import sys

from tfllm.cli import exit_code, import_tensorflow_quietly
from tfllm.datasets import resolve_data
from tfllm.tasks import task_of


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Evaluate a run directory or a SavedModel as its task does: a language "
                    "model's loss, perplexity, bits per byte and generations; a chat model's "
                    "assistant-token loss and end-of-turn rate; a classifier's accuracy, F1 "
                    "and confusion matrix.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="runs/NAME (train.py run) or saved_models/NAME/VERSION")
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
    p.add_argument("--out", default="", help="directory for the reports (default: a run's "
                   "own directory; for a SavedModel, the current directory)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    def run():
        task = task_of(args.model)
        args.data = resolve_data(args.data, log=print)
        import_tensorflow_quietly()
        task.evaluate(args)

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
