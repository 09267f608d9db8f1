"""SavedModels that TF Serving loads as they are: tokenizer + model + sampler in one graph.

Layout: `saved_models/<name>/<version>/` with integer versions, as TF Serving watches.
A version is written to a hidden sibling and renamed into place only when complete, so a
crash never leaves a half-written version where the server looks; an existing version
is never overwritten. Serving functions are plain graph functions (`jit_compile=False`):
the stock model server cannot run XLA-compiled functions on every build.

    python -m tfllm.export RUN_DIR [--name NAME] [--version N] [--output-dir saved_models]
"""

import argparse
import json
import os
import shutil
import sys

if __name__ == "__main__":  # run as a CLI: pick the backend before Keras loads
    from tfllm.cli import import_tensorflow_quietly

    import_tensorflow_quietly()

import keras
import tensorflow as tf

from tfllm.generation import generate_text

METADATA = "assets.extra/tfllm.json"


def next_version(model_dir):
    """One more than the largest integer version under `model_dir` (1 if none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
    return max(versions, default=0) + 1


def build_archive(model, tokenizer, config):
    """A `keras.export.ExportArchive` with tfllm's serving signatures.

    ExportArchive tracks the Keras variables itself, which the session-based loader
    (TF Serving, `saved_model_cli run`) needs to find them.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tokenizer)
    context = config.context_length

    @tf.function(jit_compile=False)
    def serving_default(prompts, max_new_tokens):
        text = generate_text(model, tokenizer, prompts, max_new_tokens, context_length=context)
        return {"outputs": text}

    @tf.function(jit_compile=False)
    def tokenize(texts):
        ids = tokenizer.tokenize(texts)
        return {"token_ids": ids.to_tensor(default_value=tokenizer.pad_id),
                "lengths": tf.cast(ids.row_lengths(), tf.int32)}

    @tf.function(jit_compile=False)
    def logits(token_ids):
        return {"logits": model(token_ids, training=False)}

    archive.add_endpoint("serving_default", serving_default, input_signature=[
        tf.TensorSpec([None], tf.string, name="prompts"),
        tf.TensorSpec([], tf.int32, name="max_new_tokens")])
    archive.add_endpoint("tokenize", tokenize, input_signature=[
        tf.TensorSpec([None], tf.string, name="texts")])
    archive.add_endpoint("logits", logits, input_signature=[
        tf.TensorSpec([None, None], tf.int32, name="token_ids")])
    return archive


def version_path(model_dir, version=None):
    """Where a new version goes: `model_dir/<version>`, refused if it exists."""
    version = next_version(model_dir) if version is None else int(version)
    if version <= 0:
        raise ValueError(f"version must be a positive integer, got {version}")
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise ValueError(
            f"'{final}' already exists: versions are never overwritten, pick another --version")
    return final, version


def export_model(model, tokenizer, config, model_dir, version=None, train_options=None):
    """Write a new version under `model_dir`; returns its path."""
    final, version = version_path(model_dir, version)
    os.makedirs(model_dir, exist_ok=True)
    # Hidden, non-numeric name: TF Serving ignores it until the rename.
    staging = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        build_archive(model, tokenizer, config).write_out(staging, verbose=False)
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        with open(os.path.join(staging, METADATA), "w", encoding="utf-8") as f:
            json.dump({"format": "tfllm", "config": config.to_dict(),
                       "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                                     "pad_id": tokenizer.pad_id, "eos_id": tokenizer.eos_id},
                       "train_options": train_options or {}}, f, indent=2)
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def export_run(run_dir, output_dir="saved_models", name=None, version=None):
    """Export the latest checkpoint of a train.py run directory."""
    from tfllm.training.run_dir import TRAIN_CONFIG, load_run

    name = name or os.path.basename(os.path.normpath(run_dir))
    version_path(os.path.join(output_dir, name), version)  # refuse before the slow part
    model, tokenizer, config = load_run(run_dir)
    options_path = os.path.join(run_dir, TRAIN_CONFIG)
    options = json.load(open(options_path, encoding="utf-8")) if os.path.exists(options_path) else {}
    return export_model(model, tokenizer, config, os.path.join(output_dir, name), version,
                        train_options=options)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tfllm.export", description="Export a train.py run as a SavedModel.")
    parser.add_argument("run_dir", help="run directory written by train.py (runs/NAME)")
    parser.add_argument("--output-dir", default="saved_models",
                        help="models directory TF Serving watches (default: saved_models)")
    parser.add_argument("--name", help="model name (default: the run directory's name)")
    parser.add_argument("--version", type=int,
                        help="integer version (default: one more than the latest)")
    args = parser.parse_args(argv)
    from tfllm.cli import exit_code

    return exit_code(lambda: print(
        export_run(args.run_dir, args.output_dir, args.name, args.version)))


if __name__ == "__main__":
    sys.exit(main())
