"""Reading training text: files, directories or globs, checked before any work starts."""

import glob
import os

GLOB_CHARS = "*?["


def resolve_paths(spec):
    """Expand `spec` (a path, directory or glob; a list or comma-separated string
    of them) into a sorted list of files. Raise FileNotFoundError on a miss."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    paths = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if any(c in item for c in GLOB_CHARS):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                raise FileNotFoundError(
                    f"no files match '{item}': check the pattern given to --data")
        elif os.path.isdir(item):
            found = []
            for root, dirs, names in os.walk(item):
                dirs[:] = [d for d in dirs if not d.startswith(".")]  # skip .git and the like
                found += [os.path.join(root, n) for n in names if not n.startswith(".")]
            found.sort()
            if not found:
                raise FileNotFoundError(
                    f"directory '{item}' holds no files: put text files in it or point --data elsewhere")
        elif os.path.isfile(item):
            found = [item]
        else:
            raise FileNotFoundError(
                f"no such file or directory: '{item}': give --data an existing text file, "
                "directory or glob")
        paths.extend(found)
    if not paths:
        raise FileNotFoundError("no input files given: pass --data PATH")
    return paths


def read_text_file(path):
    """The UTF-8 text of `path`; ValueError for empty or binary files."""
    with open(path, "rb") as f:
        raw = f.read()
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise ValueError(
            f"'{path}' is binary (a NUL byte at offset {nul}): give UTF-8 text files")
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")  # before the emptiness check
    except UnicodeDecodeError as e:
        raise ValueError(
            f"'{path}' is not UTF-8 text (undecodable byte at offset {e.start}): "
            "convert it to UTF-8 or leave it out") from None
    if not text.strip():
        raise ValueError(f"'{path}' is empty: give a file that holds text")
    return text


def read_texts(spec):
    """Documents (one per file) named by `spec`; see `resolve_paths`."""
    return [read_text_file(path) for path in resolve_paths(spec)]


def default_corpus():
    """The English documentation every CPython ships (`pydoc_data.topics`, ~465k
    characters): a real corpus that needs no download."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def held_out_split(items, val_fraction, seed=0, what="item"):
    """(train, validation): a seeded random `val_fraction` of `items` (at least one each
    way), each kept in file order. Random rather than the file's tail, since such files
    are often grouped by topic; seeded, so every run holds out the same ones."""
    import numpy as np

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    if len(items) < 2:
        raise ValueError(f"--data holds {len(items)} {what}: give at least two "
                         "(one is held out for validation) or pass --val FILE")
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = min(max(1, round(len(items) * val_fraction)), len(items) - 1)
    held_out = set(order[:n_val].tolist())
    return ([x for i, x in enumerate(items) if i not in held_out],
            [x for i, x in enumerate(items) if i in held_out])
