"""Text classification: labelled texts (TSV, CSV, JSONL) -> an encoder, or a pretrained
GPT (--init) with a head; the best weights on validation; reports; a SavedModel that
takes raw texts and returns probabilities and labels.

    options.py    ClassifyOptions: the flags of train.py --task classify
    data.py       reading labelled files, label vocabulary, in-graph text encoding
    model.py      classifier.json (ClassifierInfo), the loss, Classifier / load_classifier
    train.py      the run: data, model, its own train loop with early stopping, export
    report.py     metrics and the report files
    evaluate.py   evaluate.py's report for a classifier (run directory or SavedModel)
    export.py     the classifier SavedModel
"""

from tfllm.tasks.base import Task
from tfllm.tasks.classify.options import ClassifyOptions


def train(options, log=print):
    from tfllm.tasks.classify.train import train_classifier

    return train_classifier(options, log)


def evaluate(args):
    from tfllm.tasks.classify.evaluate import evaluate

    return evaluate(args)


def export(run_dir, output_dir="saved_models", name=None, version=None):
    from tfllm.tasks.classify.export import export_run

    return export_run(run_dir, output_dir, name, version)


TASK = Task(name="classify", summary="train a text classifier (label<TAB>text, CSV, JSONL)",
            model_kind="a classifier", options=ClassifyOptions, train=train,
            evaluate=evaluate, export=export, generates=False, chats=False)
