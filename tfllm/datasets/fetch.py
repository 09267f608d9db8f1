"""Fetch a dataset into the cache: download its pinned originals, prepare, check, write.

The cache is `$TFLLM_DATA` (default `~/.cache/tfllm/data`), one folder per dataset.
Everything is checked in memory first, the originals against their SHA-256 and
the prepared files against theirs, and only then written, each file atomically (temporary
sibling, fsync, rename). A refused download therefore leaves nothing behind, and a file in the
cache is always a complete, checked one: a dataset is cached when all its files are there.
"""

import csv
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from tfllm.atomic import write_atomic
from tfllm.datasets.registry import DATASETS

TIMEOUT_S = 60


def cache_dir():
    """The cache folder, absolute: `$TFLLM_DATA`, else `~/.cache/tfllm/data`."""
    path = Path(os.environ.get("TFLLM_DATA") or "~/.cache/tfllm/data").expanduser()
    return path.absolute()


def lookup(name):
    """The registered dataset called `name`; ValueError naming the choices if none is."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)} "
                         "(python -m tfllm.datasets list)")
    return DATASETS[name]


def parse(spec):
    """`NAME` or `NAME:SPLIT` -> (Dataset, split); `NAME` alone means its default split."""
    name, _, split = spec.partition(":")
    dataset = lookup(name)
    split = split or dataset.default
    if split not in dataset.splits:
        raise ValueError(f"dataset {name} has no split '{split}': choose one of "
                         f"{', '.join(dataset.splits)}")
    return dataset, split


def folder(dataset):
    """Where `dataset`'s files live in the cache."""
    return cache_dir() / dataset.folder


def is_cached(dataset):
    """True when every file of `dataset` is in the cache."""
    return all((folder(dataset) / f.name).is_file() for f in dataset.splits.values())


def sha256(data):
    """The SHA-256 hex digest of bytes."""
    return hashlib.sha256(data).hexdigest()


def download(url, timeout=TIMEOUT_S):
    """The bytes at `url`; ValueError in one line on an HTTP error or a network failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        reason = f"HTTP {e.code} {e.reason}"
    except urllib.error.URLError as e:
        reason = str(e.reason)
    except (OSError, http.client.HTTPException) as e:  # timeouts, resets, short reads
        reason = f"{type(e).__name__}: {e}"
    raise ValueError(f"could not download {url} ({reason}): check the network, or copy the "
                     f"dataset's files into {cache_dir()} (TFLLM_DATA)")


def fetch(name, log=None):
    """Make sure dataset `name` is in the cache, downloading and preparing it if not.

    Args:
        name: a registered dataset name (see `DATASETS`).
        log: an optional callable given one line of progress per download.

    Returns:
        The dataset's folder in the cache.

    Raises:
        ValueError: an unknown name, a failed download, or a file whose SHA-256 is not the
            pinned one (nothing is written to the cache in these cases); or a cache folder
            that cannot be written.
    """
    dataset = lookup(name)
    target = folder(dataset)
    if is_cached(dataset):
        return target
    sources = {}
    for key, source in dataset.sources.items():
        if log:
            log(f"downloading {source.url}")
        data = download(source.url)
        if source.sha256 and sha256(data) != source.sha256:
            raise ValueError(f"{source.url} has SHA-256 {sha256(data)}, not the pinned "
                             f"{source.sha256}: the download is corrupt or the file changed "
                             f"upstream; nothing was written to {cache_dir()}")
        sources[key] = data
    try:
        files = dataset.prepare(sources)
    except (ValueError, KeyError, IndexError, csv.Error) as e:  # malformed originals
        raise ValueError(f"could not prepare {name} from its downloaded originals "
                         f"({type(e).__name__}: {e}); nothing was written to {cache_dir()}") from e
    for f in dataset.splits.values():
        got = sha256(files[f.name]) if f.name in files else "nothing"
        if got != f.sha256:
            raise ValueError(f"{name}: the prepared {f.name} has SHA-256 {got}, not the pinned "
                             f"{f.sha256}: an original changed upstream or no longer prepares "
                             f"into the pinned file; nothing was written to {cache_dir()}")
    try:
        target.mkdir(parents=True, exist_ok=True)
        for f in dataset.splits.values():
            write_atomic(target / f.name, files[f.name])
    except OSError as e:
        raise ValueError(f"could not write {name} into {target} ({e}): set TFLLM_DATA to a "
                         "writable folder") from e
    return target


def dataset_path(spec, log=None):
    """The cached file of `NAME` (its default split) or `NAME:SPLIT`, fetched on first use.

    Args:
        spec: e.g. "sst2", "sst2:valid", "personality_chat:valid", "tinyshakespeare".
        log: passed to `fetch`.

    Returns:
        A Path to the split's file.
    """
    dataset, split = parse(spec)
    return fetch(dataset.name, log) / dataset.splits[split].name


def is_dataset_spec(spec):
    """True when `spec` names a registered dataset (`NAME` or `NAME:SPLIT`)."""
    return isinstance(spec, str) and spec.partition(":")[0] in DATASETS


def resolve_data(spec, log=None):
    """What `--data` means: a dataset name becomes its cached file, anything else is kept.

    An existing path always wins over a dataset name, so a local folder called `sst2` is
    still read as a folder. A comma-separated list is resolved item by item.

    Args:
        spec: the `--data` value (a path, glob, `NAME`, `NAME:SPLIT`, or a comma list).
        log: passed to `fetch`, e.g. `print`, to tell the user about a download.

    Returns:
        `spec` unchanged when nothing in it names a dataset, else the same string with each
        dataset item replaced by its cached file's path.
    """
    if not isinstance(spec, str) or not spec or os.path.exists(spec):
        return spec
    items = spec.split(",")
    if not any(is_dataset_spec(item.strip()) for item in items):
        return spec
    return ",".join(str(dataset_path(item.strip(), log))
                    if is_dataset_spec(item.strip()) and not os.path.exists(item.strip())
                    else item for item in items)
