"""Serving functions and the one write of a `keras.export.ExportArchive`, so that each
signature is traced once per export.

Tracing the serving graphs (tokenizer, sampler, decoding loop) is most of an export's
time. Two rules keep it to one trace of each:

- Serving functions are plain graph functions (`jit_compile=False`: the stock model
  server cannot run XLA-compiled functions on every build), without AutoGraph as every
  tfllm graph function (`tfllm.graph_function`).
- `tf.saved_model.save` looks a signature function up in its trace cache under the save
  context, which is part of the cache key; the archive's first trace (to find the
  variables the endpoints use) ran outside it, so every signature was traced twice.
  `write_archive` runs that first trace under the same save context.
"""

import tensorflow as tf
from tensorflow.python.saved_model import save_context

from tfllm.graph_function import graph_function


def serving_function(fn, input_signature=None):
    """`fn` as a serving graph (an archive endpoint, or a graph endpoints share): a graph
    function, not XLA, not AutoGraph-converted."""
    return graph_function(fn, input_signature=input_signature, jit_compile=False)


def write_archive(archive, path):
    """`archive.write_out(path)`, tracing each endpoint once."""
    options = tf.saved_model.SaveOptions()
    find_resources = archive._filter_and_track_resources

    def in_save_context():
        with save_context.save_context(options):
            find_resources()

    archive._filter_and_track_resources = in_save_context
    archive.write_out(path, options=options, verbose=False)
