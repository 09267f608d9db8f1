"""A run directory (`runs/<name>/`): what train.py writes and everything else reads.

    config.json          model config (GPTConfig)
    train_config.json    the training options used
    tokenizer/           tokenizer files (tokenizer.json, tokenizer.model)
    checkpoints/         model + optimizer + step + data position (the last N; checkpoints.py)
    metrics.csv          step, train/val loss, learning rate, gradient norm, tokens/s
    tensorboard/         the same scalars for TensorBoard
    loss.png             loss curves
    samples.txt          generations from the trained model

A task adds its own files beside these (an SFT run's sft_report.json, a classifier's
classifier.json and best/): see its package under tfllm/tasks/.
"""

import dataclasses
import json
import os

from tfllm.atomic import write_json

CONFIG = "config.json"
TRAIN_CONFIG = "train_config.json"
TOKENIZER = "tokenizer"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.csv"
TENSORBOARD = "tensorboard"
LOSS_PLOT = "loss.png"
SAMPLES = "samples.txt"


def start_run(run_dir, config, options, tokenizer):
    """Write what every run directory holds before its first step: the model config, the
    options (with the task) and the tokenizer."""
    os.makedirs(run_dir, exist_ok=True)
    config.save(os.path.join(run_dir, CONFIG))
    write_json(os.path.join(run_dir, TRAIN_CONFIG), dataclasses.asdict(options))
    tokenizer.save(os.path.join(run_dir, TOKENIZER))


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
    # Imported here: the entry points read a run's files (its task, its options) without
    # starting TensorFlow.
    import tensorflow as tf

    from tfllm.models import GPTConfig, build_gpt
    from tfllm.tokenizers import load_tokenizer
    from tfllm.training.checkpoints import restore_latest

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


def recorded_options(path):
    """The training options of a run directory, or those an exported SavedModel keeps in
    its metadata ({} if none)."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        with open(os.path.join(path, "assets.extra", "tfllm.json"), encoding="utf-8") as f:
            return json.load(f).get("train_options", {})
    return train_options(path)


def lora_rank(run_dir):
    """The LoRA rank a run trained with (train_config.json's lora_rank; 0: none)."""
    return int(train_options(run_dir).get("lora_rank") or 0)


def check_resumable(run_dir, config, options=None):
    """Rerunning a name resumes it: the model and the precision (fp16's loss-scaled
    optimizer keeps other variables in its checkpoints) must be the run's own."""
    from tfllm.models import GPTConfig

    path = os.path.join(run_dir, CONFIG)
    if os.path.exists(path) and GPTConfig.load(path) != config:
        raise ValueError(
            f"'{run_dir}' holds a run with a different model config: pick another --name "
            "or delete that directory")
    if options is not None and os.path.exists(os.path.join(run_dir, TRAIN_CONFIG)):
        before = train_options(run_dir).get("precision", "fp32")
        if before != options.precision:
            raise ValueError(
                f"'{run_dir}' was trained with --precision {before}: resume it with the "
                "same precision, or pick another --name")



def recorded_task(path):
    """The task a run directory or an exported SavedModel was trained for: the `task` its
    train_config.json (or the SavedModel's tfllm.json) records. Runs from before tasks were
    recorded: a classifier has classifier.json, anything else is a language model."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        metadata = os.path.join(path, "assets.extra", "tfllm.json")
        if not os.path.exists(metadata):
            raise FileNotFoundError(
                f"'{path}' has no assets.extra/tfllm.json: it was not exported by tfllm")
        with open(metadata, encoding="utf-8") as f:
            values = json.load(f)
        return values.get("task") or values.get("train_options", {}).get("task") or "lm"
    if not os.path.exists(os.path.join(path, CONFIG)):
        raise FileNotFoundError(
            f"'{path}' is neither a run directory ({CONFIG}) nor a SavedModel "
            "(saved_model.pb): give runs/NAME or saved_models/NAME/VERSION")
    task = train_options(path).get("task")
    if task:
        return task
    return "classify" if os.path.exists(os.path.join(path, "classifier.json")) else "lm"
