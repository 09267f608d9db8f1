"""Checkpoints that survive a crash: model + optimizer + step + data position.

Saving is atomic: TensorFlow writes a checkpoint's files under temporary names and
renames them, and only then is the `checkpoint` index file (which names the latest)
replaced, itself atomically. A process killed mid-save leaves the previous checkpoint
as the latest. Restoring checks every tensor's checksum before touching the model; a
checkpoint that fails (truncated, corrupted) is skipped with a warning for the one
before it. The last `keep` checkpoints are kept.

Under MultiWorker every worker saves (the documented tf.distribute pattern), but only
the chief into the run directory; the others write to a temporary directory that is
deleted at once. Every worker restores from the run directory, so it must be on a
filesystem all of them see (NFS, GCS, ...).
"""

import glob
import os
import re
import shutil
import sys
import tempfile

import tensorflow as tf

CHECKPOINT_NAME = "ckpt"


def checkpoint_paths(directory):
    """Checkpoint prefixes in `directory`, newest first: the ones the index file names,
    then any other complete-looking `ckpt-N` (the index file itself may be damaged)."""
    found = set()
    try:
        state = tf.train.get_checkpoint_state(directory)
    except (tf.errors.OpError, ValueError):
        state = None  # a damaged index file: fall back to the files themselves
    if state is not None:
        found.update(os.path.join(directory, os.path.basename(p))
                     for p in state.all_model_checkpoint_paths)
    found.update(p[:-len(".index")] for p in
                 glob.glob(os.path.join(directory, f"{CHECKPOINT_NAME}-*.index")))

    def number(path):
        match = re.search(r"-(\d+)$", path)
        return int(match.group(1)) if match else -1

    return sorted((p for p in found if os.path.exists(p + ".index")), key=number,
                  reverse=True)


def verify(path):
    """Read every tensor of the checkpoint at `path` (checksums included); raises
    (tf.errors.OpError, IndexError for a short read, ...) when it is truncated or
    corrupted."""
    reader = tf.train.load_checkpoint(path)
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)


def restore_latest(checkpoint, directory, warn=None, partial=False):
    """Restore the newest readable checkpoint of `directory` into `checkpoint`.

    Returns its path, or None when there is none. Unreadable ones are reported through
    `warn` and skipped; when checkpoints exist but none reads, ValueError. `partial`:
    `checkpoint` holds only some of what was saved (the model alone, to evaluate).
    """
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr, flush=True))
    paths = checkpoint_paths(directory)
    for i, path in enumerate(paths):
        try:
            verify(path)
            status = checkpoint.restore(path).assert_existing_objects_matched()
            if partial:
                status.expect_partial()
            return path
        except Exception as e:  # whatever a damaged file makes the reader raise
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            fallback = f"using {os.path.basename(paths[i + 1])}" if i + 1 < len(paths) \
                else "no older checkpoint is left"
            warn(f"checkpoint {path} is unreadable ({reason}): {fallback}")
    if paths:
        raise ValueError(f"no checkpoint in '{directory}' can be read: delete that directory "
                         "to start the run over")
    return None


class Checkpoints:
    """The run's checkpoint: model, optimizer, the step reached and the data position
    (training batches drawn from the seeded stream)."""

    def __init__(self, directory, model, optimizer, keep=3, chief=True):
        self.directory = directory
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.data_position = tf.Variable(0, dtype=tf.int64, trainable=False,
                                         name="data_position")
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, step=self.step, data_position=self.data_position)
        self.chief = chief
        if chief:
            os.makedirs(directory, exist_ok=True)
            # Leftovers of a save that was killed half-way.
            for leftover in glob.glob(os.path.join(directory, "*_temp*")):
                shutil.rmtree(leftover, ignore_errors=True)
            self.manager = tf.train.CheckpointManager(
                self.checkpoint, directory, max_to_keep=keep, checkpoint_name=CHECKPOINT_NAME)

    def restore(self, warn=None):
        """Restore the newest readable checkpoint; returns its path or None."""
        return restore_latest(self.checkpoint, self.directory, warn)

    def save(self, step, data_position):
        """Save at `step`; returns the path (a worker's is already deleted)."""
        self.step.assign(step)
        self.data_position.assign(data_position)
        if self.chief:
            return self.manager.save(checkpoint_number=step)
        scratch = tempfile.mkdtemp(prefix="tfllm-worker-")
        try:
            return self.checkpoint.write(os.path.join(scratch, CHECKPOINT_NAME))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
