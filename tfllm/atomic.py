"""Writing a file so that a reader (or a crash) sees either the old file or the whole new
one, never half of it: a temporary sibling, flushed to disk, renamed over the path."""

import contextlib
import io
import json
import os
import tempfile


@contextlib.contextmanager
def open_atomic(path):
    """A binary file to write `path` through: it appears, complete and on disk, when the
    block ends, and not at all if the block raises."""
    path = os.fspath(path)
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=directory or ".", prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_atomic(path, data):
    """Write `data` (bytes, or text as UTF-8) to `path`."""
    with open_atomic(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def write_json(path, values):
    """`values` as indented JSON (non-ASCII text kept as it is)."""
    write_atomic(path, json.dumps(values, indent=2, ensure_ascii=False) + "\n")


def fsync_tree(root):
    """Flush every file and directory under `root` to disk, so that renaming `root` into
    place publishes whole files even after a power loss."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(dirpath)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_figure(figure, path, dpi=100):
    """A matplotlib figure as a PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    write_atomic(path, buffer.getvalue())
