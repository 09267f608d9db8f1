"""SavedModels of seq2seq models: source strings in, target strings out, tokenizer,
encoder and cached greedy decoding in one graph (`translate_graph`), no XLA.

    serving_default  sources [batch] string -> targets [batch] string

Versions are written under `saved_models/<name>/<version>/` by tfllm.savedmodel.publish.
Loading needs only `tensorflow` and `tensorflow_text` (its ops run the tokenizer).
"""

import os

import keras
import tensorflow as tf

from tfllm.atomic import write_json
from tfllm.savedmodel.archive import serving_function, write_archive
from tfllm.savedmodel.publish import METADATA, WARMUP, publish_version, version_path
from tfllm.savedmodel.warmup import predict_log, write_warmup
from tfllm.tasks.seq2seq.model import load_seq2seq_run, translate_graph
from tfllm.training.run_dir import train_options

SIGNATURES = ("serving_default",)


def build_archive(model, tokenizer, config):
    """A `keras.export.ExportArchive` whose `serving_default` translates raw texts."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tokenizer)

    def serving_default(sources):
        return {"targets": translate_graph(model, tokenizer, config, sources)}

    archive.add_endpoint("serving_default", serving_function(serving_default),
                         [tf.TensorSpec([None], tf.string, name="sources")])
    return archive


def export_seq2seq(model, tokenizer, config, model_dir, version=None, train_options=None):
    """Write a new version of the seq2seq model under `model_dir`; returns its path."""

    def write(staging):
        write_archive(build_archive(model, tokenizer, config), staging)
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        write_warmup(os.path.join(staging, WARMUP), [predict_log(
            os.path.basename(os.path.normpath(model_dir)), "serving_default",
            sources=(["Warm-up text."], tf.string))])
        write_json(os.path.join(staging, METADATA), {
            "format": "tfllm", "task": "seq2seq", "config": config.to_dict(),
            "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                          "pad_id": tokenizer.pad_id, "eos_id": tokenizer.eos_id},
            "signatures": list(SIGNATURES), "train_options": train_options or {}})

    return publish_version(model_dir, version, write)


def export_run(run_dir, output_dir="saved_models", name=None, version=None):
    """Export the latest checkpoint of a seq2seq run directory."""
    name = name or os.path.basename(os.path.normpath(run_dir))
    version_path(os.path.join(output_dir, name), version)  # refuse before the slow part
    model, tokenizer, config = load_seq2seq_run(run_dir)
    return export_seq2seq(model, tokenizer, config, os.path.join(output_dir, name), version,
                          train_options=train_options(run_dir))
