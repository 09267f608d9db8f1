"""Public datasets by name: pinned originals downloaded, normalized and cached on first use.

    python -m tfllm.datasets list                 # name, what, splits, size, licence, cached
    python -m tfllm.datasets get sst2 sst2:valid  # fetch; print each file's path

`NAME` means a dataset's training file, `NAME:SPLIT` one split's file; `resolve_data` turns
a `--data` value that names a dataset into that file's path (for train.py and evaluate.py).
A folder that already holds the normalized files in the same layout serves as the cache
(`TFLLM_DATA=DIR`), with no download.
"""

from tfllm.datasets.fetch import (cache_dir, dataset_path, fetch, is_cached, is_dataset_spec,
                                  resolve_data)
from tfllm.datasets.registry import DATASETS, Dataset, File, Source

__all__ = ["DATASETS", "Dataset", "File", "Source", "cache_dir", "dataset_path", "fetch",
           "is_cached", "is_dataset_spec", "resolve_data"]
