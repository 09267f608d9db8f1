"""Reading training text: path resolution, strict UTF-8 reading, the built-in corpus."""

import os
import re

import pytest

from tfllm.data.text import default_corpus, read_text_file, read_texts, resolve_paths


def write(path, data):
    """Create `path` (and its parents) holding `data` (str as UTF-8, or bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


# ---------------------------------------------------------------- resolve_paths


def test_resolve_single_file(tmp_path):
    path = write(tmp_path / "a.txt", "hello\n")
    assert resolve_paths(path) == [path]


def test_resolve_directory_is_recursive_sorted_and_skips_hidden(tmp_path):
    root = tmp_path / "corpus"
    # Created out of order; os.walk order is not sorted order, so sorting is checked.
    z = write(root / "z.txt", "z")
    c = write(root / "sub" / "c.txt", "c")
    a = write(root / "a.txt", "a")
    d = write(root / "sub" / "deeper" / "d.txt", "d")
    write(root / ".hidden.txt", "hidden")
    write(root / "sub" / ".DS_Store", b"\x00\x01")
    write(root / ".git" / "objects" / "ab" / "cdef", b"x\x9c\x00binary")  # hidden directory
    assert resolve_paths(str(root)) == [a, c, d, z]
    assert resolve_paths(str(root)) == sorted([a, c, d, z])


def test_resolve_glob(tmp_path):
    b = write(tmp_path / "b.txt", "b")
    a = write(tmp_path / "a.txt", "a")
    write(tmp_path / "notes.md", "m")
    nested = write(tmp_path / "sub" / "c.txt", "c")
    assert resolve_paths(str(tmp_path / "*.txt")) == [a, b]
    assert resolve_paths(str(tmp_path / "**" / "*.txt")) == sorted([a, b, nested])
    assert resolve_paths(str(tmp_path / "[ab].txt")) == [a, b]


def test_resolve_glob_skips_directories(tmp_path):
    a = write(tmp_path / "a.txt", "a")
    (tmp_path / "dir.txt").mkdir()
    assert resolve_paths(str(tmp_path / "*.txt")) == [a]


def test_resolve_comma_separated_list_keeps_given_order(tmp_path):
    one = write(tmp_path / "z_one.txt", "1")
    two = write(tmp_path / "dir" / "a_two.txt", "2")
    three = write(tmp_path / "dir" / "b_three.txt", "3")
    spec = f" {one} , {tmp_path / 'dir'} ,"  # spaces and an empty item are ignored
    assert resolve_paths(spec) == [one, two, three]
    # A Python list works the same way.
    assert resolve_paths([one, str(tmp_path / "dir")]) == [one, two, three]


def test_resolve_missing_path_names_it(tmp_path):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        resolve_paths(missing)


def test_resolve_missing_item_in_list_names_it(tmp_path):
    good = write(tmp_path / "a.txt", "a")
    missing = str(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        resolve_paths(f"{good},{missing}")


def test_resolve_glob_without_matches_names_it(tmp_path):
    write(tmp_path / "a.txt", "a")
    pattern = str(tmp_path / "*.csv")
    with pytest.raises(FileNotFoundError, match=re.escape(pattern)) as info:
        resolve_paths(pattern)
    assert "match" in str(info.value)


@pytest.mark.parametrize("hidden_only", [False, True])
def test_resolve_empty_directory_names_it(tmp_path, hidden_only):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "sub").mkdir()
    if hidden_only:  # only hidden files: nothing to read either
        write(empty / ".hidden", "x")
    with pytest.raises(FileNotFoundError, match=re.escape(str(empty))) as info:
        resolve_paths(str(empty))
    assert "no files" in str(info.value)


@pytest.mark.parametrize("spec", ["", " , ", []])
def test_resolve_nothing_given(spec):
    with pytest.raises(FileNotFoundError, match="--data"):
        resolve_paths(spec)


# ---------------------------------------------------------------- read_text_file


def test_read_utf8_exactly(tmp_path):
    text = "Hello, world.\r\n你好，世界 🙂👍🏽\n\ttabs  and  spaces \n"
    path = write(tmp_path / "u.txt", text)
    assert read_text_file(path) == text  # no newline translation, no stripping


def test_read_strips_bom(tmp_path):
    path = write(tmp_path / "bom.txt", b"\xef\xbb\xbf" + "caf\u00e9 \u4e2d\n".encode("utf-8"))
    assert read_text_file(path) == "caf\u00e9 \u4e2d\n"


def test_read_keeps_inner_bom_like_characters(tmp_path):
    text = "a\ufeffb\n"  # only a leading BOM is a byte order mark
    path = write(tmp_path / "inner.txt", text)
    assert read_text_file(path) == text


@pytest.mark.parametrize(
    "name, data, what",
    [
        ("empty.txt", b"", "empty"),
        ("blank.txt", b" \n\t\r\n  ", "empty"),
        ("bom_only.txt", b"\xef\xbb\xbf", "empty"),
        ("bom_blank.txt", b"\xef\xbb\xbf \n\n", "empty"),
        ("binary.bin", b"PK\x03\x04\x00\x00text", "binary"),
        ("utf16.txt", "hello".encode("utf-16"), "binary"),  # NUL bytes
        ("latin1.txt", b"\xff\xfe abc", "not UTF-8"),
        ("cp1252.txt", "caf\u00e9\n".encode("cp1252"), "not UTF-8"),
    ],
)
def test_read_rejects_bad_files(tmp_path, name, data, what):
    path = write(tmp_path / name, data)
    with pytest.raises(ValueError) as info:
        read_text_file(path)
    message = str(info.value)
    assert path in message
    assert what in message


def test_read_binary_and_undecodable_report_offsets(tmp_path):
    nul = write(tmp_path / "nul.bin", b"abc\x00def")
    with pytest.raises(ValueError, match="NUL byte at offset 3"):
        read_text_file(nul)
    bad = write(tmp_path / "bad.txt", b"ok \xff\xfe abc")
    with pytest.raises(ValueError, match="offset 3"):
        read_text_file(bad)


def test_read_texts_one_document_per_file(tmp_path):
    write(tmp_path / "b.txt", "second\n")
    write(tmp_path / "a.txt", "first\n")
    assert read_texts(str(tmp_path)) == ["first\n", "second\n"]


def test_read_texts_fails_on_the_bad_file(tmp_path):
    write(tmp_path / "a.txt", "fine\n")
    bad = write(tmp_path / "b.txt", b"\x00\x00")
    with pytest.raises(ValueError, match=re.escape(bad)):
        read_texts(str(tmp_path))


# ---------------------------------------------------------------- default_corpus


def test_default_corpus_is_english_and_deterministic():
    docs = default_corpus()
    assert isinstance(docs, list) and len(docs) > 10
    assert all(isinstance(d, str) and d.strip() for d in docs)
    text = "".join(docs)
    assert len(text) > 300_000
    # English prose: mostly ASCII, and "the" is a common word.
    assert sum(c.isascii() for c in text) / len(text) > 0.99
    words = re.findall(r"[a-z]+", text.lower())
    assert words.count("the") / len(words) > 0.02
    assert default_corpus() == docs  # same order every call


def test_default_corpus_survives_strict_reading(tmp_path):
    """The built-in corpus passes the same checks as a user's file would."""
    path = write(tmp_path / "corpus.txt", "".join(default_corpus()))
    assert read_text_file(path) == "".join(default_corpus())
    assert os.path.getsize(path) > 300_000
