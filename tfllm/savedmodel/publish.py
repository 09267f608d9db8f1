"""Versioned, atomic publishing of SavedModels: `saved_models/<name>/<version>/`.

Integer versions, as TF Serving watches. A version is written to a hidden sibling and
renamed into place only when complete, so a crash never leaves a half-written version
where the server looks; an existing version is never overwritten.
"""

import os
import shutil

from tfllm.atomic import fsync_dir, fsync_tree

METADATA = "assets.extra/tfllm.json"
WARMUP = "assets.extra/tf_serving_warmup_requests"


def next_version(model_dir):
    """One more than the largest integer version under `model_dir` (1 if none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
    return max(versions, default=0) + 1


def version_path(model_dir, version=None):
    """Where a new version goes: `model_dir/<version>`, refused if it exists."""
    version = next_version(model_dir) if version is None else int(version)
    if version <= 0:
        raise ValueError(f"version must be a positive integer, got {version}")
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise ValueError(
            f"'{final}' already exists: versions are never overwritten, pick another --version")
    return final, version


def _staging_dirs(model_dir):
    """(path, pid) of the hidden `.tmp-<version>-<pid>` directories under `model_dir`."""
    found = []
    for entry in os.listdir(model_dir):
        parts = entry.split("-")
        if entry.startswith(".tmp-") and len(parts) == 3 and parts[2].isdigit():
            found.append((os.path.join(model_dir, entry), int(parts[2])))
    return found


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish_version(model_dir, version, write):
    """Publish a new version under `model_dir` (the next free one if `version` is None):
    `write(staging)` fills a hidden sibling directory, which is then renamed into place.
    Returns the version's path."""
    chosen = version
    final, version = version_path(model_dir, version)
    os.makedirs(model_dir, exist_ok=True)
    for path, pid in _staging_dirs(model_dir):  # left by an export that was killed
        if not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)
    # Hidden, non-numeric name: TF Serving ignores it until the rename.
    staging = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write(staging)
        fsync_tree(staging)
        while True:
            try:
                os.rename(staging, final)  # atomic; fails if `final` exists (non-empty)
                break
            except OSError:  # another export published this version meanwhile
                if chosen is not None or not os.path.exists(final):
                    raise ValueError(f"'{final}' already exists: versions are never "
                                     "overwritten, pick another --version") from None
                final, version = version_path(model_dir)
        fsync_dir(model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final

