"""The task registry: every entry point (train.py, evaluate.py, python -m tfllm.export,
chat, serve) finds a task here, by name or by what a run directory or SavedModel records,
and never guesses from file names.

Adding a task: a package tfllm/tasks/<name>/ whose __init__ builds a `Task` (see
tfllm/tasks/lm/ for the shape) and one line in TASKS below.
"""

from tfllm.tasks import classify, lm, seq2seq, sft
from tfllm.tasks.base import Task
from tfllm.training.run_dir import recorded_task

TASKS = {task.name: task for task in (lm.TASK, sft.TASK, classify.TASK, seq2seq.TASK)}

__all__ = ["TASKS", "Task", "get_task", "task_of", "require"]


def get_task(name):
    """The task registered as `name`; a one-line error naming the known ones otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return TASKS[name]


def task_of(path):
    """The task of a run directory or exported SavedModel (what it records)."""
    return get_task(recorded_task(path))


def require(path, what, applies):
    """The task of `path`, refused in one line when `applies(task)` is false: `what` names
    the operation (e.g. "chat"), the refusal names the model's task and kind."""
    task = task_of(path)
    if not applies(task):
        fitting = ", ".join(t.name for t in TASKS.values() if applies(t))
        raise ValueError(f"{what} does not apply to '{path}': it is {task.model_kind} "
                         f"(task {task.name}); {what} needs a model of task {fitting}")
    return task
