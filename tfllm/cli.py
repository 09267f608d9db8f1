"""What every tfllm command line shares: a quiet TensorFlow start and one-line errors."""

import os
import sys

from tfllm.quiet import quiet_stderr

USER_ERRORS = (ValueError, FileNotFoundError)


def import_tensorflow_quietly():
    """Import TensorFlow (and its text ops) with its start-up banner held back.

    TF 2.21 writes INFO lines (oneDNN, CUDA probing) to file descriptor 2 before
    absl logging is set up, and no environment variable silences them; a command's
    error must stay one line. Devices are initialised here too, since the CUDA probe
    logs an error line on machines without a GPU. The banner is shown only if this
    fails.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_stderr():
        import tensorflow as tf
        import tensorflow_text  # noqa: F401

        tf.config.list_logical_devices()  # the CUDA probe logs here, not at the first op


def exit_code(run):
    """Call `run()`; a user error becomes one line on stderr and exit code 2."""
    try:
        run()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
