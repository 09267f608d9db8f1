#!/usr/bin/env python3
"""Train a GPT. With no arguments: the `tiny` preset on CPython's own documentation.

    python train.py                                  # built-in corpus, tiny preset
    python train.py --data corpus.txt --preset small --steps 5000 --name mymodel
    python train.py --task sft --init runs/tiny --data chat.jsonl
    python train.py --task classify --data sst2 --val sst2:valid   # a dataset by name

Writes runs/<name>/ and exports saved_models/<name>/<version>/. Run with --help for every
flag: they are generated from the options dataclasses of each task (tfllm/tasks/).
"""

import argparse
import dataclasses

from tfllm.cli import exit_at_once, exit_code, import_tensorflow_quietly
from tfllm.datasets import resolve_data
from tfllm.tasks import TASKS, get_task
from tfllm.training.options import TrainOptions, add_flags, flag
from tfllm.training.strategy import start_strategy


def own_fields(task):
    """The fields a task's options add to the shared ones."""
    shared = {f.name for f in dataclasses.fields(TrainOptions)}
    return [f for f in dataclasses.fields(task.options) if f.name not in shared]


def build_parser():
    tasks = "\n".join(f"  {t.name:<9} {t.summary}" for t in TASKS.values())
    parser = argparse.ArgumentParser(
        description="Train a GPT-style model for a task; writes runs/NAME/ and a SavedModel.",
        epilog=f"tasks:\n{tasks}", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default=argparse.SUPPRESS,
                        help=f"what to train: {', '.join(TASKS)} (default: 'lm')")
    add_flags(parser, [f for f in dataclasses.fields(TrainOptions) if f.name != "task"])
    for task in TASKS.values():
        add_flags(parser, own_fields(task), title=f"--task {task.name}")
    return parser


def parse_options(argv=None):
    """(task, its options) from the command line; a flag of another task is refused."""
    given = vars(build_parser().parse_args(argv))
    task = get_task(given.pop("task", "lm"))
    accepted = {f.name for f in dataclasses.fields(task.options)}
    for name in given:
        if name not in accepted:
            owners = [t.name for t in TASKS.values() if name in {f.name for f in own_fields(t)}]
            raise ValueError(f"{flag(name)} applies to --task {' or '.join(owners)} only: "
                             "drop it")
    return task, task.options(task=task.name, **given)


def main(argv=None):
    def run():
        task, options = parse_options(argv)
        # A dataset name (python -m tfllm.datasets list) becomes its cached file.
        options.data = resolve_data(options.data, log=print)
        options.val = resolve_data(options.val, log=print)
        # Checks the strategy and TF_CONFIG; MultiWorker must start before TF's devices do.
        start_strategy(options.strategy, options.batch_size)
        import_tensorflow_quietly()
        task.train(options)

    return exit_code(run)


if __name__ == "__main__":
    exit_at_once(main())
