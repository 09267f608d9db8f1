"""How tfllm makes TensorFlow graph functions: `tf.function` with AutoGraph off.

tfllm's graph code needs no conversion: its loops are `tf.while_loop`, `tf.map_fn` or
`keras.ops.while_loop`, and none of it branches on a tensor in Python. AutoGraph would
convert the source of everything such a function calls, every Keras layer of the model
included, which takes longer than the tracing itself (README Results). Code that did branch
on a tensor would fail to trace, not slow down. (keras-hub's BPE merge step does branch,
and is a `tf.function` of its own that converts itself.)
"""

import tensorflow as tf


def graph_function(fn=None, **options):
    """`tf.function(fn, autograph=False, **options)`; without `fn`, a decorator."""
    if fn is None:
        return lambda f: graph_function(f, **options)
    return tf.function(fn, autograph=False, **options)
