"""Language modelling: pretrain a GPT on text (or continue GPT-2's weights), evaluate its
loss, perplexity and bits per byte on held-out text, export it for TF Serving.

    options.py    LMOptions: the flags of train.py --task lm
    train.py      tokenizer, windows, the logged train loop, samples, export
    evaluate.py   evaluate.py's report for a language model (run directory or SavedModel)

Heavy modules (TensorFlow) are imported only when a task function runs, so train.py
parses and checks its flags without them.
"""

from tfllm.tasks.base import Task
from tfllm.tasks.lm.options import LMOptions


def train(options, log=print):
    from tfllm.tasks.lm.train import pretrain

    return pretrain(options, log)


def evaluate(args):
    from tfllm.tasks.lm.evaluate import evaluate_lm

    return evaluate_lm(args)


def export(run_dir, output_dir="saved_models", name=None, version=None):
    from tfllm.savedmodel.gpt import export_run

    return export_run(run_dir, output_dir, name, version)


TASK = Task(name="lm", summary="pretrain a GPT on text", model_kind="a language model",
            options=LMOptions, train=train, evaluate=evaluate, export=export,
            generates=True, chats=False)
