"""tfllm.datasets: fetch by name from a local HTTP server (127.0.0.1 only), check, cache.

Nothing here touches the internet: every dataset under test points at a server started by
the `server` fixture on the loopback interface. The last test serves the team's real
originals from ../shared/data and checks that every prepared file is byte for byte the copy
there (skipped, loudly, where that folder is absent).
"""

import dataclasses
import hashlib
import http.server
import json
import re
import socket
import threading
import urllib.parse
from pathlib import Path

import pytest

from tfllm.datasets import DATASETS, Dataset, File, Source, dataset_path, is_cached, resolve_data
from tfllm.datasets import prepare
from tfllm.datasets.__main__ import main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def sha(data):
    return hashlib.sha256(data).hexdigest()


class Server:
    """Serves `files` ({URL path: bytes}) on 127.0.0.1 and counts the requests."""

    def __init__(self):
        files, requests = {}, []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                body = files.get(self.path)
                self.send_response(404 if body is None else 200)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.files, self.requests = files, requests
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def serve(self, path, data):
        """Serve `data` at `path`; returns its URL."""
        self.files[path] = data
        return self.root + path

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder as TFLLM_DATA; loopback requests never go through a proxy."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    path = tmp_path / "cache"
    monkeypatch.setenv("TFLLM_DATA", str(path))
    return path


def cached_files(cache):
    """Every file under the cache folder (temporary ones included)."""
    return sorted(p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


ORIGINALS = {"stsa.toy.train": b"1 a fine , warm film\n0 dull\tand long\n",
             "stsa.toy.dev": b"1 warm\n", "stsa.toy.test": b"0 long\n"}
PREPARED = {"train.tsv": b"1\ta fine , warm film\n0\tdull and long\n", "valid.tsv": b"1\twarm\n",
            "test.tsv": b"0\tlong\n"}


def toy(server, monkeypatch, source_sha=None, prepared_sha=None, urls=None):
    """Register a three-split SST-format dataset `toy` served by `server`."""
    sources = {}
    for name, data in ORIGINALS.items():
        url = (urls or {}).get(name) or server.serve(f"/owner/repo/abc/{name}", data)
        sources[name] = Source(url, (source_sha or {}).get(name, sha(data)))
    splits = {s: File(f"{s}.tsv", (prepared_sha or {}).get(s, sha(PREPARED[f"{s}.tsv"])),
                      len(PREPARED[f"{s}.tsv"])) for s in ("train", "valid", "test")}
    dataset = Dataset("toy", "a toy SST", "CC0", "sentiment/toy", sources, splits,
                      prepare.space_labelled("stsa.toy"))
    monkeypatch.setitem(DATASETS, "toy", dataset)
    return dataset


def error_line(capsys):
    """The single `error: ...` line a refused command wrote to stderr."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_get_downloads_checks_caches_and_reuses(server, cache, monkeypatch):
    toy(server, monkeypatch)
    path = dataset_path("toy")
    assert path == cache / "sentiment" / "toy" / "train.tsv"
    assert path.read_bytes() == PREPARED["train.tsv"]
    assert len(server.requests) == 3
    assert dataset_path("toy:valid").read_bytes() == PREPARED["valid.tsv"]
    assert len(server.requests) == 3, "a cached dataset is not downloaded again"
    assert [p.name for p in cached_files(cache)] == ["test.tsv", "train.tsv", "valid.tsv"]


@pytest.mark.parametrize("wrong", ["source", "prepared"])
def test_checksum_mismatch_is_refused_and_nothing_is_cached(server, cache, monkeypatch, capsys,
                                                            wrong):
    if wrong == "source":
        toy(server, monkeypatch, source_sha={"stsa.toy.dev": "0" * 64})
    else:  # the original's own checksum unknown: the prepared file's still guards it
        toy(server, monkeypatch, source_sha=dict.fromkeys(ORIGINALS),
            prepared_sha={"test": "f" * 64})
    assert main(["get", "toy"]) == 2
    line = error_line(capsys)
    assert "SHA-256" in line and ("0" * 64 if wrong == "source" else "f" * 64) in line
    assert "nothing was written" in line
    assert cached_files(cache) == []
    assert not is_cached(DATASETS["toy"])


def closed_port_url():
    """A loopback URL that refuses connections (a port bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/owner/repo/abc/stsa.toy.test"


@pytest.mark.parametrize("failure", ["404", "refused"])
def test_network_failure_is_one_line_and_nothing_is_cached(server, cache, monkeypatch, capsys,
                                                           failure):
    url = server.root + "/missing" if failure == "404" else closed_port_url()
    toy(server, monkeypatch, urls={"stsa.toy.test": url})
    assert main(["get", "toy"]) == 2
    line = error_line(capsys)
    assert f"could not download {url}" in line
    assert ("HTTP 404" in line) if failure == "404" else ("refused" in line.lower())
    assert cached_files(cache) == []


def test_cli_list_and_get(server, cache, monkeypatch, capsys):
    toy(server, monkeypatch)
    assert main(["list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(DATASETS) <= set(rows)
    assert "train*,valid,test" in rows["toy"] and rows["toy"].endswith("no")

    assert main(["get", "toy:test", "toy"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [str(cache / "sentiment/toy/test.tsv"), str(cache / "sentiment/toy/train.tsv")]
    assert main(["list"]) == 0
    assert [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("toy ")][0].endswith("yes")


def test_an_unwritable_cache_is_one_line(server, cache, monkeypatch, capsys):
    toy(server, monkeypatch)
    cache.write_text("a file where the cache folder should be")
    assert main(["get", "toy"]) == 2
    assert f"could not write toy into {cache / 'sentiment/toy'}" in error_line(capsys)


@pytest.mark.parametrize("spec, words", [("nope", "unknown dataset 'nope'"),
                                         ("toy:dev", "has no split 'dev'")])
def test_cli_refuses_a_bad_name_before_any_download(server, cache, monkeypatch, capsys,
                                                    spec, words):
    toy(server, monkeypatch)
    assert main(["get", "toy", spec]) == 2
    assert words in error_line(capsys)
    assert server.requests == [] and cached_files(cache) == []


def test_resolve_data(server, cache, monkeypatch, tmp_path):
    toy(server, monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert resolve_data("") == ""
    assert resolve_data("notes.txt") == "notes.txt"  # neither a file nor a dataset: kept
    assert resolve_data("toy:valid") == str(cache / "sentiment/toy/valid.tsv")
    assert resolve_data("toy,notes.txt") == f"{cache / 'sentiment/toy/train.tsv'},notes.txt"
    (tmp_path / "toy").mkdir()
    assert resolve_data("toy") == "toy"  # an existing path wins over a dataset name


def test_chatterbot_yaml_becomes_alternating_messages():
    pytest.importorskip("yaml", reason="PyYAML is not installed (chatterbot's originals are YAML)")
    yml = ("categories:\n- AI\nconversations:\n- - What is AI?\n  - A branch of science.\n"
           "- - Year?\n  - 1963\n  - Sure?\n  - |\n    Yes.\n    Quite.\n").encode()
    out = prepare.chatterbot("english", ["ai"])({"english/ai.yml": yml})
    rows = [json.loads(line) for line in out["chatterbot_en.jsonl"].decode().splitlines()]
    assert rows == [
        {"messages": [{"role": "user", "content": "What is AI?"},
                      {"role": "assistant", "content": "A branch of science."}],
         "category": "ai"},
        {"messages": [{"role": "user", "content": "Year?"},
                      {"role": "assistant", "content": "1963"},
                      {"role": "user", "content": "Sure?"},
                      {"role": "assistant", "content": "Yes.\nQuite."}],
         "category": "ai"}]


def test_registry_pins_every_source_to_a_commit():
    for d in DATASETS.values():
        assert d.default in d.splits, d.name
        for source in d.sources.values():
            parts = urllib.parse.urlsplit(source.url)
            assert parts.scheme == "https" and parts.netloc == "raw.githubusercontent.com"
            commit = parts.path.split("/")[3]
            assert len(commit) == 40 and int(commit, 16) >= 0, source.url
            assert source.sha256 is None or len(bytes.fromhex(source.sha256)) == 32
        for f in d.splits.values():
            assert len(bytes.fromhex(f.sha256)) == 32 and f.size > 0


# --- the real originals (../shared/data) ------------------------------------------------

# Datasets whose originals shared/data does not keep: none can be served here.
NOT_IN_SHARED = {"chatterbot": "its YAML originals are not in shared/data"}


def shared_originals(dataset):
    """The public bytes of `dataset`'s sources, rebuilt from ../shared/data."""
    folder = SHARED / dataset.folder
    if dataset.name == "warpeace":  # shared/data dropped the BOM and CRLF
        return {"input.txt": b"\xef\xbb\xbf" + (folder / "input.txt").read_bytes()
                .replace(b"\n", b"\r\n")}
    if dataset.name == "gsm8k":  # only key renames; train + valid re-split alike in any order
        def original(*names):
            rows = [json.loads(line) for n in names
                    for line in (folder / n).read_text(encoding="utf-8").split("\n")[:-1]]
            return "".join(json.dumps({"question": r["prompt"], "answer": r["response"]}) + "\n"
                           for r in rows).encode()
        return {"train.jsonl": original("valid.jsonl", "train.jsonl"),
                "test.jsonl": original("test.jsonl")}
    if dataset.name == "tang_poetry":  # the kept verse, regrouped as chinese-poetry's JSON
        return tang_originals(folder, list(dataset.sources))
    out = {}
    for key in dataset.sources:
        path = folder / "original" / key
        out[key] = (path if path.exists() else folder / key).read_bytes()
    if dataset.name == "trec":  # the byte shared/data patched, as upstream serves it
        out["TREC.train"] = out["TREC.train"].replace(b"sister city", b"sister\xf0city")
    return out


def tang_originals(folder, names):
    """全唐诗's files are not in shared/data, only the verse kept from them: every kept poem
    (train first, then valid: each split keeps its order) as paragraphs of two segments,
    spread over the 58 file names in order, with a poem of each rejected kind beside them."""
    poems = [line for split in ("train", "valid")
             for line in (folder / f"tang_5_7_{split}.txt").read_text(encoding="utf-8")
             .split("\n")[:-1]]
    rejected = ["白日依山盡，黃河入海流。",
                "一二三四五六，一二三四五六。一二三四五六，一二三四五六。",
                "白日依山盡，黃河入海流。欲窮千里目，更上一層樓",
                "白日依山盡，黃河入海流。欲窮千里目，更上一層樓高。"]
    per_file = -(-len(poems) // len(names))
    out = {}
    for i, name in enumerate(names):
        chunk = poems[i * per_file:(i + 1) * per_file] + rejected
        records = [{"author": "", "title": "",
                    "paragraphs": re.findall(r"[^。？！；]*[。？！；]", text)} for text in chunk]
        out[name] = json.dumps(records, ensure_ascii=False, indent=4).encode()
    return out


def test_tang_verse_keeps_quatrains_and_regulated_verse_only():
    keep = ["白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
            "空山新雨後，天氣晚來秋。明月松間照，清泉石上流。"
            "竹喧歸浣女，蓮動下漁舟。隨意春芳歇，王孫自可留。",
            "朝辭白帝彩雲間，千里江陵一日還。兩岸猿聲啼不住，輕舟已過萬重山。"]
    drop = ["白日依山盡，黃河入海流。",  # two segments
            "白日依山盡，黃河入海流。欲窮千里目，更上一層樓",  # an unclosed last segment
            "朝辭白帝彩雲間，千里江陵一日還。兩岸猿聲啼，輕舟已過萬重山。",  # 7 and 5 mixed
            "白日依山盡、黃河入海流。欲窮千里目，更上一層樓。"]  # 、 is not a segment end
    poems = [{"paragraphs": [text]} for text in keep + drop]
    out = prepare.tang_verse({"poet.tang.1000.json": json.dumps(poems).encode(),
                              "poet.tang.0.json": json.dumps(poems[:1]).encode()})
    lines = [line for data in out.values() for line in data.decode().split("\n")[:-1]]
    assert sorted(lines) == sorted([keep[0]] + keep)
    assert set(out) == {"tang_5_7_train.txt", "tang_5_7_valid.txt"}


def test_get_reproduces_shared_data_byte_for_byte(server, cache, monkeypatch, capsys):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the real-originals check needs the team's "
                    "shared/data copy")
    sums = {path: digest for digest, path in (
        line.split(maxsplit=1) for line in (SHARED / "SHA256SUMS").read_text().splitlines())}
    names = [name for name in DATASETS if name not in NOT_IN_SHARED]
    for name in names:
        dataset = DATASETS[name]
        originals = shared_originals(dataset)
        sources = {}
        for key, source in dataset.sources.items():
            local = server.serve(urllib.parse.urlsplit(source.url).path, originals[key])
            sources[key] = dataclasses.replace(source, url=local)
        monkeypatch.setitem(DATASETS, name, dataclasses.replace(dataset, sources=sources))
    assert main(["get", *names]) == 0, capsys.readouterr().err
    for name in names:
        dataset = DATASETS[name]
        for f in dataset.splits.values():
            cached = (cache / dataset.folder / f.name).read_bytes()
            rel = f"{dataset.folder}/{f.name}"
            assert cached == (SHARED / rel).read_bytes(), rel
            assert sha(cached) == sums[rel] == f.sha256, rel
    assert set(DATASETS) - set(names) == set(NOT_IN_SHARED)
