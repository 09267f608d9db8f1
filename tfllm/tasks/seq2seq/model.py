"""A seq2seq run's model in this process, and the one translation graph that the
in-process `Translator`, evaluation and the SavedModel all run: source strings ->
tokens + EOS -> encoder -> greedy decoding with the caches -> target strings."""

import os

import tensorflow as tf

from tfllm.data.rows import encode_texts
from tfllm.graph_function import graph_function
from tfllm.models.seq2seq import Seq2SeqConfig, build_seq2seq, generate
from tfllm.tokenizers import load_tokenizer
from tfllm.training import run_dir as rd
from tfllm.training.checkpoints import restore_latest


def load_seq2seq_run(run_dir):
    """(model with the latest checkpoint's weights, tokenizer, Seq2SeqConfig) of a
    seq2seq run directory."""
    config = Seq2SeqConfig.load(os.path.join(run_dir, rd.CONFIG))
    tokenizer = load_tokenizer(os.path.join(run_dir, rd.TOKENIZER))
    model = build_seq2seq(config)
    restored = restore_latest(tf.train.Checkpoint(model=model),
                              os.path.join(run_dir, rd.CHECKPOINTS), partial=True)
    if restored is None:
        raise FileNotFoundError(
            f"'{run_dir}' has no checkpoint: train it first (train.py --task seq2seq)")
    return model, tokenizer, config


def translate_graph(model, tokenizer, config, sources):
    """tf.string `(batch,)` sources -> tf.string `(batch,)` greedy translations, each
    at most the context long. Graph-safe, no XLA: the SavedModel serves it."""
    ids = encode_texts(tokenizer, sources, config.context_length)
    new = generate(model, ids, config.context_length, start_id=tokenizer.eos_id,
                   stop_id=tokenizer.eos_id)
    return tokenizer.detokenize(new)


class Translator:
    """A trained seq2seq model in this process: texts in, translations out."""

    def __init__(self, model, tokenizer, config):
        self._translate = graph_function(
            lambda sources: translate_graph(model, tokenizer, config, sources),
            input_signature=[tf.TensorSpec([None], tf.string)], jit_compile=False)

    def __call__(self, texts, batch_size=64):
        """The translation of each text (a list of strings)."""
        out = []
        for i in range(0, len(texts), batch_size):
            chunk = self._translate(tf.constant(texts[i:i + batch_size])).numpy()
            out += [s.decode("utf-8", errors="replace") for s in chunk]
        return out


def sources_and_references(pairs, limit=None):
    """The first `limit` pairs (all when None) as (sources, references)."""
    chosen = pairs if limit is None else pairs[:limit]
    return [s for s, _ in chosen], [t for _, t in chosen]

