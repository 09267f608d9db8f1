"""Writing a file so that a reader (or a crash) sees either the old file or the whole new
one, never half of it: a temporary sibling, flushed to disk, renamed over the path."""

import io
import json
import os
import tempfile


def write_atomic(path, data):
    """Write `data` (bytes, or text as UTF-8) to `path`."""
    path = os.fspath(path)
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=directory or ".", prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json(path, values):
    """`values` as indented JSON (non-ASCII text kept as it is)."""
    write_atomic(path, json.dumps(values, indent=2, ensure_ascii=False) + "\n")


def save_figure(figure, path, dpi=100):
    """A matplotlib figure as a PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    write_atomic(path, buffer.getvalue())
