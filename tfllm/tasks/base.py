"""What a task is to the entry points: its options, and how to train, evaluate and export
it. Each task package (tfllm/tasks/<name>/) builds one `Task` in its __init__; the
registry (tfllm/tasks/__init__.py) lists them."""

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of train.py (`--task NAME`), evaluate.py and `python -m tfllm.export`.

    Attributes:
        name: the `--task` value, recorded in the run directory (train_config.json) and in
            the SavedModel's metadata.
        summary: one line for --help.
        model_kind: what its runs hold, for refusals ("a classifier").
        options: its `TrainOptions` subclass (train.py's flags come from its fields).
        train: `train(options, log=print) -> dict` of the final numbers.
        evaluate: `evaluate(args)`: evaluate.py's work on a run directory or SavedModel.
        export: `export(run_dir, output_dir, name=None, version=None) -> path` of the
            published SavedModel version.
        generates: whether its models are GPTs that continue text (prompts, completions,
            the terminal chat of any run whose tokenizer has the chat markers).
        chats: whether the task trains its models to hold the chat format: what an API
            server offers chat completions for.
    """

    name: str
    summary: str
    model_kind: str
    options: type
    train: Callable
    evaluate: Callable
    export: Callable
    generates: bool = True
    chats: bool = False
