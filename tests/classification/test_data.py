"""Reading labelled files (TSV, CSV, JSONL), the label vocabulary, class weights, and the
text -> ids rule shared by training, evaluation and the SavedModel."""

import json

import numpy as np
import pytest

from tfllm.data.rows import encode_texts
from tfllm.tasks.classify.data import (class_weights, label_ids, label_vocabulary, read_examples,
                                       split_examples)

ROWS = [("pos", "a fine film, really"), ("neg", "dull\tand long"), ("pos", "电影很好看")]


def test_tsv_csv_and_jsonl_read_the_same_examples(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_text("".join(f"{label}\t{text}\n" for label, text in ROWS) + "\n",
                   encoding="utf-8")
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('id,sentence,y\n1,"a fine film, really",pos\n2,"dull\tand long",neg\n'
                        '3,电影很好看,pos\n', encoding="utf-8")
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps({"sentence": t, "y": label}, ensure_ascii=False) + "\n"
                             for label, t in ROWS), encoding="utf-8")
    for path, columns in ((tsv, {}), (csv_path, dict(text_column="sentence", label_column="y")),
                          (jsonl, dict(text_column="sentence", label_column="y"))):
        examples = read_examples(str(path), **columns)
        assert [(e.label, e.text) for e in examples] == ROWS, path
    # A text keeps the tabs after the first one; sources are file:line (CSV: the row's line).
    assert [e.source for e in read_examples(str(csv_path), "sentence", "y")] == [
        f"{csv_path}:2", f"{csv_path}:3", f"{csv_path}:4"]


@pytest.mark.parametrize("name, content, columns, expected", [
    ("a.tsv", "pos\tgood\nno tab here\n", {}, "a.tsv:2: no tab in this row"),
    ("a.tsv", "pos\tgood\n\nneg\t   \n", {}, "a.tsv:3: the text is empty"),
    ("a.tsv", "\tgood\n", {}, "a.tsv:1: the label is empty"),
    ("a.csv", "text,label\nhi,pos\n", {"label_column": "y"}, "a.csv:1: no column 'y'"),
    ("a.csv", "text,label\nhi,pos\n\"x\",neg,extra\n", {}, "a.csv:3:"),
    ("a.jsonl", '{"text": "hi", "label": 1}\n{"text": "oops"\n', {}, "a.jsonl:2: not a JSON"),
    ("a.jsonl", '{"text": "hi", "label": 1}\n{"text": "yo"}\n', {}, "a.jsonl:2: no field 'label'"),
    ("a.tsv", "", {}, "is empty"),
])
def test_a_bad_row_is_an_error_naming_file_and_line(tmp_path, name, content, columns,
                                                    expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as error:
        read_examples(str(path), **columns)
    message = str(error.value)
    assert expected in message and "\n" not in message


def test_labels_unknown_to_the_model_are_refused_with_their_line(tmp_path):
    path = tmp_path / "eval.tsv"
    path.write_text("b\tx\na\ty\nc\tz\n", encoding="utf-8")
    examples = read_examples(str(path))
    with pytest.raises(ValueError, match=r"eval.tsv:3: label 'c' was never seen in training"):
        label_ids(examples, ["a", "b"])
    assert label_ids(examples[:2], ["a", "b"]).tolist() == [1, 0]


def test_label_vocabulary_sorts_numbers_as_numbers():
    examples = read_examples_from([("10", "x"), ("2", "y"), ("1", "z")])
    assert label_vocabulary(examples) == ["1", "2", "10"]
    assert label_vocabulary(read_examples_from([("b", "x"), ("a", "y")])) == ["a", "b"]


def read_examples_from(rows):
    from tfllm.tasks.classify.data import Example

    return [Example(label, text, f"mem:{i + 1}") for i, (label, text) in enumerate(rows)]


def test_class_weights_are_inverse_frequency():
    weights = class_weights(np.array([0, 0, 0, 1]), 2)
    np.testing.assert_allclose(weights, [4 / (2 * 3), 4 / (2 * 1)])
    # Each class then carries the same total weight.
    assert weights[0] * 3 == pytest.approx(weights[1] * 1)
    with pytest.raises(ValueError, match="class 2 has no training example"):
        class_weights(np.array([0, 1]), 3)


def test_split_is_seeded_and_keeps_every_example():
    examples = read_examples_from([(str(i % 2), f"text {i}") for i in range(50)])
    train, val = split_examples(examples, 0.2, seed=3)
    assert len(val) == 10 and len(train) == 40
    assert sorted(e.text for e in train + val) == sorted(e.text for e in examples)
    assert [e.text for e in split_examples(examples, 0.2, seed=3)[1]] == [e.text for e in val]


def test_encode_texts_cuts_then_ends_with_eos_and_pads():
    import tensorflow as tf

    from tfllm.tokenizers import CharTokenizer

    tokenizer = CharTokenizer.from_texts(["abcdef 中文"])
    ids = encode_texts(tokenizer, tf.constant(["abcdef", "中", ""]), max_length=4).numpy()
    a, b, c = (tokenizer.encode(ch)[0] for ch in "abc")
    eos, pad = tokenizer.eos_id, tokenizer.pad_id
    assert ids.tolist() == [[a, b, c, eos], [tokenizer.encode("中")[0], eos, pad, pad],
                            [eos, pad, pad, pad]]
