"""SavedModels of classifiers: raw texts in, class probabilities and label strings out,
tokenizer and label vocabulary inside the graph.

    serving_default  texts [batch] string -> probabilities [batch, classes] float32,
                                             labels [batch] string (the most probable)

The columns of `probabilities` follow the label vocabulary in
`assets.extra/tfllm.json` ("labels"). Versions are written under
`saved_models/<name>/<version>/` by tfllm.savedmodel.publish (hidden staging directory,
atomic rename, never overwritten). Loading needs only `tensorflow` and
`tensorflow_text` (its ops run the tokenizer). `python -m tfllm.export RUN_DIR` exports a
classify run through here.
"""

import json
import os

import keras
import tensorflow as tf

from tfllm.savedmodel.archive import serving_function, write_archive
from tfllm.savedmodel.publish import METADATA, WARMUP, publish_version, version_path
from tfllm.savedmodel.warmup import predict_log, write_warmup
from tfllm.data.rows import encode_texts
from tfllm.tasks.classify.model import load_classifier
from tfllm.training.run_dir import train_options

SIGNATURES = ("serving_default",)


def build_archive(model, tokenizer, labels, seq_len):
    """A `keras.export.ExportArchive` whose `serving_default` classifies raw texts."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tokenizer)
    vocabulary = tf.constant(list(labels), tf.string)

    def serving_default(texts):
        ids = encode_texts(tokenizer, texts, seq_len)  # (batch, longest) right-padded
        probabilities = tf.nn.softmax(tf.cast(model(ids, training=False), tf.float32))
        best = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"probabilities": probabilities, "labels": tf.gather(vocabulary, best)}

    archive.add_endpoint("serving_default", serving_function(serving_default),
                         [tf.TensorSpec([None], tf.string, name="texts")])
    return archive


def export_classifier(model, tokenizer, config, info, model_dir, version=None,
                      train_options=None):
    """Write a new version of the classifier under `model_dir`; returns its path."""

    def write(staging):
        write_archive(build_archive(model, tokenizer, info.labels, info.seq_len), staging)
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        write_warmup(os.path.join(staging, WARMUP), [predict_log(
            os.path.basename(os.path.normpath(model_dir)), "serving_default",
            texts=(["Warm-up text."], tf.string))])
        with open(os.path.join(staging, METADATA), "w", encoding="utf-8") as f:
            json.dump({"format": "tfllm", "task": "classify", "labels": list(info.labels),
                       "pooling": info.pooling, "causal": info.causal,
                       "seq_len": info.seq_len, "config": config.to_dict(),
                       "tokenizer": {"kind": tokenizer.kind,
                                     "vocab_size": tokenizer.vocab_size,
                                     "pad_id": tokenizer.pad_id, "eos_id": tokenizer.eos_id},
                       "signatures": list(SIGNATURES),
                       "train_options": train_options or {}}, f, indent=2, ensure_ascii=False)

    return publish_version(model_dir, version, write)


def export_run(run_dir, output_dir="saved_models", name=None, version=None):
    """Export the best weights of a classify run directory."""
    name = name or os.path.basename(os.path.normpath(run_dir))
    version_path(os.path.join(output_dir, name), version)  # refuse before the slow part
    classifier = load_classifier(run_dir)
    return export_classifier(classifier.model, classifier.tokenizer, classifier.config,
                             classifier.info, os.path.join(output_dir, name), version,
                             train_options=train_options(run_dir))
