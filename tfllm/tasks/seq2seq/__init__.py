"""Sequence to sequence (translation): an encoder-decoder Transformer
(`tfllm.models.build_seq2seq`) trained on `source<TAB>target` rows; BLEU and chrF of its
greedy translations; a SavedModel that takes source strings and returns target strings.

    options.py    Seq2SeqOptions: the flags of train.py --task seq2seq
    data.py       reading pair files, encoding them for the encoder and the decoder
    model.py      the run's model in this process: load_seq2seq_run, Translator
    metrics.py    BLEU and chrF (sacrebleu)
    train.py      tokenizer, model, the logged train loop, the scores, export
    evaluate.py   evaluate.py's report (run directory or SavedModel)
    export.py     the seq2seq SavedModel
"""

from tfllm.tasks.base import Task
from tfllm.tasks.seq2seq.options import Seq2SeqOptions


def train(options, log=print):
    from tfllm.tasks.seq2seq.train import train_seq2seq

    return train_seq2seq(options, log)


def evaluate(args):
    from tfllm.tasks.seq2seq.evaluate import evaluate

    return evaluate(args)


def export(run_dir, output_dir="saved_models", name=None, version=None):
    from tfllm.tasks.seq2seq.export import export_run

    return export_run(run_dir, output_dir, name, version)


TASK = Task(name="seq2seq", summary="train an encoder-decoder translator (source<TAB>target)",
            model_kind="a translator (encoder-decoder)", options=Seq2SeqOptions, train=train,
            evaluate=evaluate, export=export, generates=False, chats=False)
