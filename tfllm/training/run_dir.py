"""A run directory (`runs/<name>/`): what train.py writes and everything else reads.

    config.json          model config (GPTConfig)
    train_config.json    the training options used
    tokenizer/           tokenizer files (tokenizer.json, tokenizer.model)
    checkpoints/         model + optimizer + step + data position (the last N; checkpoints.py)
    metrics.csv          step, train/val loss, learning rate, gradient norm, tokens/s
    tensorboard/         the same scalars for TensorBoard
    loss.png             loss curves
    samples.txt          generations from the trained model
    sft_report.json      SFT runs: assistant-token loss and end-of-turn rate, base vs tuned
"""

import json
import os

import tensorflow as tf

from tfllm.models import GPTConfig, build_gpt
from tfllm.tokenizers import load_tokenizer
from tfllm.training.checkpoints import restore_latest

CONFIG = "config.json"
TRAIN_CONFIG = "train_config.json"
TOKENIZER = "tokenizer"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.csv"
TENSORBOARD = "tensorboard"
LOSS_PLOT = "loss.png"
SAMPLES = "samples.txt"


def write_json(path, values):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(values, f, indent=2)
    os.replace(tmp, path)


def load_run(run_dir):
    """(model with the latest checkpoint's weights, tokenizer, GPTConfig) of a run; a plain
    GPT even for a LoRA fine-tune (its adapters merged into the kernels)."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(
            f"no run directory '{run_dir}': give a directory written by train.py (runs/NAME)")
    config_path = os.path.join(run_dir, CONFIG)
    if not os.path.exists(config_path):
        raise FileNotFoundError(
            f"'{run_dir}' has no {CONFIG}: it is not a complete train.py run directory")
    config = GPTConfig.load(config_path)
    tokenizer = load_tokenizer(os.path.join(run_dir, TOKENIZER))
    model = build_gpt(config)
    rank = lora_rank(run_dir)
    if rank:  # the checkpoint holds the frozen base weights and the adapters beside them
        from tfllm.lora import enable_lora

        enable_lora(model, rank)
    restored = restore_latest(tf.train.Checkpoint(model=model),
                              os.path.join(run_dir, CHECKPOINTS), partial=True)
    if restored is None:
        raise FileNotFoundError(
            f"'{run_dir}' has no checkpoint: train it first (train.py --name ...)")
    if rank:
        from tfllm.lora import merged_gpt

        model = merged_gpt(model, config)
    return model, tokenizer, config


def train_options(run_dir):
    """The training options a run recorded (train_config.json), or {} if none."""
    path = os.path.join(run_dir, TRAIN_CONFIG)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def lora_rank(run_dir):
    """The LoRA rank a run trained with (train_config.json's lora_rank; 0: none)."""
    return int(train_options(run_dir).get("lora_rank") or 0)
