"""Labelled text for classification: reading TSV/CSV/JSONL, the label vocabulary, class
weights, seeded splits. (The text -> token ids rule that training, evaluation and the
SavedModel share is tfllm.data.rows.encode_texts.)

Formats, by file extension:

    .tsv .txt     label<TAB>text, no header (text may hold further tabs)
    .csv          a header row naming the text and label columns
    .jsonl .json  one JSON object per line with the text and label fields

Every bad row (no tab, empty text, empty label, a missing column) is an error naming
the file and line: no row is ever skipped. Only lines that are entirely empty are not
rows (a file's final newline, blank separator lines).
"""

import csv
import dataclasses
import io
import json
import os

import numpy as np

from tfllm.data.text import read_text_file

TSV_EXTENSIONS = (".tsv", ".txt")
CSV_EXTENSIONS = (".csv",)
JSONL_EXTENSIONS = (".jsonl", ".json")


@dataclasses.dataclass
class Example:
    label: str
    text: str
    source: str     # "path:line", for error messages and the report's mistakes


def read_examples(path, text_column="text", label_column="label"):
    """The labelled examples of `path`, in file order; ValueError on the first bad row."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: '{path}': give an existing labelled file "
                                "(label<TAB>text .tsv, .csv or .jsonl)")
    text = read_text_file(path)  # UTF-8, not binary, not empty
    extension = os.path.splitext(path)[1].lower()
    if extension in CSV_EXTENSIONS:
        examples = _read_csv(path, text, text_column, label_column)
    elif extension in JSONL_EXTENSIONS:
        examples = _read_jsonl(path, text, text_column, label_column)
    else:
        examples = _read_tsv(path, text)
    if not examples:
        raise ValueError(f"'{path}' holds no examples: give at least one labelled row")
    return examples


def _check(path, line, label, text):
    if not label.strip():
        raise ValueError(f"{path}:{line}: the label is empty: give every row a label")
    if not text.strip():
        raise ValueError(f"{path}:{line}: the text is empty: give every row some text "
                         "or remove the row")
    return Example(label.strip(), text, f"{path}:{line}")


def _read_tsv(path, text):
    examples = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line:
            continue
        label, tab, body = line.partition("\t")
        if not tab:
            raise ValueError(f"{path}:{number}: no tab in this row: write each row as "
                             "label<TAB>text")
        examples.append(_check(path, number, label, body))
    return examples


def _read_csv(path, text, text_column, label_column):
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in (text_column, label_column) if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(
            f"{path}:1: no column {missing[0]!r} in the header {reader.fieldnames}: name the "
            "columns with --text-column/--label-column")
    examples = []
    start = 2  # the first data row follows the header
    for row in reader:
        if None in row or any(row.get(c) is None for c in (text_column, label_column)):
            raise ValueError(f"{path}:{start}: this row's fields do not match the header's "
                             f"{len(reader.fieldnames)}: quote texts that hold commas")
        examples.append(_check(path, start, row[label_column], row[text_column]))
        start = reader.line_num + 1
    return examples


def _read_jsonl(path, text, text_column, label_column):
    examples = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not a JSON object ({e.msg}): write one "
                             "object per line") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: not a JSON object: write one object per line")
        for column in (text_column, label_column):
            if column not in row:
                raise ValueError(f"{path}:{number}: no field {column!r} (fields: "
                                 f"{sorted(row)}): name them with --text-column/--label-column")
        label, body = row[label_column], row[text_column]
        if not isinstance(body, str):
            raise ValueError(f"{path}:{number}: field {text_column!r} is not a string")
        if isinstance(label, (dict, list)) or label is None:
            raise ValueError(f"{path}:{number}: field {label_column!r} must be a string or "
                             "a number")
        examples.append(_check(path, number, str(label), body))
    return examples


# --- labels ------------------------------------------------------------------------------


def label_vocabulary(examples):
    """The sorted distinct labels (numerically when every label is an integer)."""
    labels = {e.label for e in examples}
    if all(_is_int(label) for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _is_int(text):
    try:
        int(text)
    except ValueError:
        return False
    return True


def label_ids(examples, labels):
    """int32 class ids of `examples`; ValueError (file:line) for a label not in `labels`."""
    index = {label: i for i, label in enumerate(labels)}
    ids = []
    for example in examples:
        if example.label not in index:
            shown = ", ".join(labels[:20]) + (", ..." if len(labels) > 20 else "")
            raise ValueError(
                f"{example.source}: label {example.label!r} was never seen in training "
                f"(the model knows: {shown}): use the training file's labels")
        ids.append(index[example.label])
    return np.asarray(ids, np.int32)


def class_weights(ids, num_classes):
    """Inverse-frequency weights, n / (classes * count): 1.0 each when balanced."""
    counts = np.bincount(ids, minlength=num_classes).astype(np.float64)
    if (counts == 0).any():
        missing = int(np.flatnonzero(counts == 0)[0])
        raise ValueError(f"class {missing} has no training example, so it has no inverse "
                         "frequency: drop --class-weights or add examples of it")
    return (len(ids) / (num_classes * counts)).astype(np.float32)


def split_examples(examples, val_fraction, seed=0):
    """(train, validation): a seeded shuffle, the last `val_fraction` held out."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(examples))
    n_val = max(1, int(round(len(examples) * val_fraction)))
    if n_val >= len(examples):
        raise ValueError(f"{len(examples)} examples are too few to hold out a validation "
                         "share: give more data or a --val file")
    return ([examples[i] for i in sorted(order[:-n_val])],
            [examples[i] for i in sorted(order[-n_val:])])


# --- text -> token ids -------------------------------------------------------------------
