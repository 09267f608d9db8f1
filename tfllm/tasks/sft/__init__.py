"""Chat fine-tuning (SFT): a GPT taught to answer in the chat format, on JSONL
conversations; loss on the assistant's tokens only; optional LoRA.

    options.py    SFTOptions: the flags of train.py --task sft
    data.py       conversations JSONL -> packed rows with the loss mask in the targets
    train.py      the --init model, rows, the logged train loop, sft_report.json, export
    evaluate.py   assistant-token loss and end-of-turn rate of any GPT on conversations
"""

from tfllm.tasks.base import Task
from tfllm.tasks.sft.options import SFTOptions


def train(options, log=print):
    from tfllm.tasks.sft.train import train_sft

    return train_sft(options, log)


def evaluate(args):
    from tfllm.tasks.sft.evaluate import evaluate_chat_model

    return evaluate_chat_model(args)


def export(run_dir, output_dir="saved_models", name=None, version=None):
    from tfllm.savedmodel.gpt import export_run

    return export_run(run_dir, output_dir, name, version)


TASK = Task(name="sft", summary="fine-tune a GPT (--init) on chat conversations (JSONL)",
            model_kind="a chat model", options=SFTOptions, train=train, evaluate=evaluate,
            export=export, generates=True, chats=True)
