"""What every tfllm command line shares: a quiet TensorFlow start and one-line errors."""

import contextlib
import gc
import os
import sys

from tfllm.quiet import quiet_stderr

# Packages TensorFlow and Keras import at start-up, each behind a `try: import ...
# except ImportError`, for features tfllm's commands never use: jax (tf.lite's JAX
# converter), scikit-learn (Keras' sklearn wrappers), IPython (Keras' notebook file
# editor), matplotlib (Keras' image gallery). Skipping them shortens every command's start
# (README Results); tfllm imports scikit-learn and matplotlib itself where it uses them.
UNUSED_AT_START = ("jax", "sklearn", "IPython", "matplotlib")

USER_ERRORS = (ValueError, FileNotFoundError)


def import_tensorflow_quietly():
    """Import TensorFlow with its start-up banner held back (TF Text, silent, is imported
    where a tokenizer or a SavedModel needs its ops).

    TF 2.21 writes INFO lines (oneDNN, CUDA probing) to file descriptor 2 before
    absl logging is set up, and no environment variable silences them; a command's
    error must stay one line. Devices are initialised here too, since the CUDA probe
    logs an error line on machines without a GPU. The banner is shown only if this
    fails.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    on_jax = os.environ["KERAS_BACKEND"] == "jax"  # then Keras itself needs jax
    unused = [name for name in UNUSED_AT_START if not (on_jax and name == "jax")]
    with quiet_stderr(), held_back(unused):
        import tensorflow as tf

        tf.config.list_logical_devices()  # the CUDA probe logs here, not at the first op


@contextlib.contextmanager
def held_back(names):
    """Imports of `names` fail inside the block (a None in sys.modules is how Python says
    "not importable"); afterwards they import as usual. Packages already imported are left
    alone."""
    held = [name for name in names if name not in sys.modules]
    for name in held:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in held:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


def exit_code(run):
    """Call `run()`; a user error becomes one line on stderr and exit code 2."""
    try:
        run()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def exit_at_once(code):
    """End the command with `code`, its work done and its files closed.

    The interpreter's exit runs the garbage collector over every object left, and a
    command that traced and compiled TensorFlow functions holds hundreds of thousands
    (graphs, layers, ops): seconds of walking only to free memory the exit frees anyway.
    Frozen, they are skipped; objects still freed one by one are unchanged.
    """
    gc.freeze()
    sys.exit(code)
