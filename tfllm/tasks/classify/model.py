"""A classifier run's model: what classifier.json records (`ClassifierInfo`), the loss it
trains on, and the trained classifier in this process (`Classifier`, `load_classifier`),
texts in, probabilities and labels out, through the same preprocessing as the
SavedModel."""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from tfllm.atomic import write_json
from tfllm.graph_function import graph_function
from tfllm.models import GPTConfig
from tfllm.models.classifier import build_classifier
from tfllm.data.rows import encode_texts
from tfllm.tokenizers import load_tokenizer
from tfllm.training import run_dir as rd
from tfllm.training.checkpoints import restore_latest

CLASSIFIER = "classifier.json"


BEST = "best"


@dataclasses.dataclass
class ClassifierInfo:
    """What turns a GPTConfig-shaped network into a classifier (classifier.json)."""

    labels: list
    pooling: str = "mean"
    causal: bool = False
    seq_len: int = 128
    class_weights: list = None
    token_dropout: float = 0.0
    members: int = 1

    def save(self, path):
        write_json(path, {"task": "classify", **dataclasses.asdict(self)})

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
        values.pop("task", None)
        return cls(**values)

    def build(self, config):
        """The classifier's Keras model; always the same layers for the same info, so
        checkpoints restore into it (token dropout acts in training only)."""
        return build_classifier(config, len(self.labels), self.pooling, self.causal,
                                self.token_dropout, self.members)


class ClassificationLoss:
    """Cross-entropy of class logits, optionally weighted per class; the mean is over
    the batch's total weight (its size when unweighted). A `Trainer` loss."""

    def __init__(self, weights=None):
        self.weights = None if weights is None else tf.constant(weights, tf.float32)

    def _weights(self, labels):
        if self.weights is None:
            return tf.ones(tf.shape(labels), tf.float32)
        return tf.gather(self.weights, labels)

    def count(self, labels):
        return tf.reduce_sum(self._weights(labels))

    def __call__(self, logits, labels):
        """logits: (batch, classes), or a list of them (an ensemble's members, each
        scored on its own: the loss is their mean)."""
        members = logits if isinstance(logits, (list, tuple)) else [logits]
        losses = tf.add_n([tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=tf.cast(m, tf.float32)) for m in members]) / len(members)
        weights = self._weights(labels)
        return tf.reduce_sum(losses * weights), tf.reduce_sum(weights)


class Classifier:
    """A trained classifier in this process: texts -> probabilities and labels, through
    the same preprocessing (`encode_texts`) as the SavedModel."""

    def __init__(self, model, tokenizer, config, info):
        self.model, self.tokenizer, self.config, self.info = model, tokenizer, config, info
        self.labels = list(info.labels)
        self._probabilities = graph_function(
            lambda texts: tf.nn.softmax(tf.cast(self.model(
                encode_texts(self.tokenizer, texts, info.seq_len), training=False),
                tf.float32)),
            input_signature=[tf.TensorSpec([None], tf.string)], jit_compile=False)

    def predict_proba(self, texts, batch_size=64):
        """float32 `(len(texts), num_classes)`."""
        out = [self._probabilities(tf.constant(texts[i:i + batch_size])).numpy()
               for i in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def predict(self, texts, batch_size=64):
        """The predicted label string of each text."""
        return [self.labels[i] for i in self.predict_proba(texts, batch_size).argmax(-1)]


def load_classifier(run_dir):
    """The `Classifier` of a classify run, with its best validation weights."""
    if not os.path.exists(os.path.join(run_dir, CLASSIFIER)):
        raise FileNotFoundError(f"'{run_dir}' has no {CLASSIFIER}: give a run directory "
                                "written by train.py --task classify")
    config = GPTConfig.load(os.path.join(run_dir, rd.CONFIG))
    info = ClassifierInfo.load(os.path.join(run_dir, CLASSIFIER))
    tokenizer = load_tokenizer(os.path.join(run_dir, rd.TOKENIZER))
    model = info.build(config)
    checkpoint = tf.train.Checkpoint(model=model)
    restored = restore_latest(checkpoint, os.path.join(run_dir, BEST), partial=True) or \
        restore_latest(checkpoint, os.path.join(run_dir, rd.CHECKPOINTS), partial=True)
    if restored is None:
        raise FileNotFoundError(
            f"'{run_dir}' has no checkpoint: train it first (train.py --task classify)")
    return Classifier(model, tokenizer, config, info)

