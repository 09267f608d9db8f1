"""tf.data pipelines and text loading (TensorFlow-specific)."""

from tfllm.data.lm import (heldout_ids, lm_dataset, scored_bytes, split_texts,
                           tokenize_corpus, window_arrays)
from tfllm.data.text import default_corpus, read_text_file, read_texts, resolve_paths

__all__ = ["default_corpus", "heldout_ids", "lm_dataset", "read_text_file", "read_texts",
           "resolve_paths", "scored_bytes", "split_texts", "tokenize_corpus", "window_arrays"]
