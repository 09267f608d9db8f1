"""A run directory (`runs/<name>/`): what train.py writes and everything else reads.

    config.json          model config (GPTConfig)
    train_config.json    the training options used
    tokenizer/           tokenizer files (tokenizer.json, tokenizer.model)
    checkpoints/         model + optimizer + step (tf.train.CheckpointManager)
    metrics.csv          step, train/val loss, learning rate, tokens/s
    loss.png             loss curves
    samples.txt          generations from the trained model
"""

import json
import os

import tensorflow as tf

from tfllm.models import GPTConfig, build_gpt
from tfllm.tokenizers import load_tokenizer

CONFIG = "config.json"
TRAIN_CONFIG = "train_config.json"
TOKENIZER = "tokenizer"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.csv"
LOSS_PLOT = "loss.png"
SAMPLES = "samples.txt"


def checkpoint_manager(run_dir, model, optimizer=None, max_to_keep=3):
    items = {"model": model}
    if optimizer is not None:
        items["optimizer"] = optimizer
    checkpoint = tf.train.Checkpoint(**items)
    return tf.train.CheckpointManager(
        checkpoint, os.path.join(run_dir, CHECKPOINTS), max_to_keep=max_to_keep)


def write_json(path, values):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(values, f, indent=2)
    os.replace(tmp, path)


def load_run(run_dir):
    """(model with the latest checkpoint's weights, tokenizer, GPTConfig) of a run."""
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
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, CHECKPOINTS))
    if latest is None:
        raise FileNotFoundError(
            f"'{run_dir}' has no checkpoint: train it first (train.py --name ...)")
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    return model, tokenizer, config
