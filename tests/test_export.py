"""Exporting: versioned and atomic, refused on bad input, servable ops only, models.config.

How the exported model answers (loaders, saved_model_cli, warm-up) is in
test_serving_protocol.py.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, refused, run_cli, run_main


def export_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tfllm.export", *map(str, args)], cwd=ROOT,
                          check=False, capture_output=True, text=True, timeout=timeout)


def snapshot(directory):
    """Every file under `directory` (hidden ones too) with a hash of its bytes."""
    found = {}
    for dirpath, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return found


# Exports in a child whose publishing rename never returns, so the parent can SIGKILL
# it mid-write, deterministically, as soon as the staging directory has content.
KILLED_EXPORT = r"""
import os, sys, time
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import tfllm.export as export
os.rename = lambda src, dst: time.sleep(600)
sys.exit(export.main(sys.argv[1:]))
"""


def test_killed_export_leaves_no_partial_version_and_the_next_one_recovers(
        trained_run, tmp_path, capsys):
    from tfllm import export

    _, run_dir, saved_model, _ = trained_run
    models = tmp_path / "models"
    shutil.copytree(saved_model, models / "m" / "1")
    before = snapshot(models)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "child.log", "wb") as log:  # a file, not a pipe nobody reads
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_EXPORT, str(run_dir), "--output-dir", str(models),
             "--name", "m"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while not [d for d in os.listdir(models / "m") if d.startswith(".tmp-")
                   and os.listdir(models / "m" / d)]:
            assert child.poll() is None, (tmp_path / "child.log").read_text()[-2000:]
            assert time.time() < deadline, "the staging directory never appeared"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # Where TF Serving looks (integer directories) nothing changed; the leftover is hidden.
    assert sorted(d for d in os.listdir(models / "m") if not d.startswith(".")) == ["1"]
    assert {k: v for k, v in snapshot(models).items() if "/.tmp-" not in "/" + k} == before

    # The next export removes the dead staging directory and publishes version 2.
    assert export.main([str(run_dir), "--output-dir", str(models), "--name", "m"]) == 0
    assert capsys.readouterr().out.strip().endswith(os.path.join("m", "2"))
    assert sorted(os.listdir(models / "m")) == ["1", "2"]
    assert (models / "m" / "2" / "saved_model.pb").exists()
    assert json.loads((models / "m" / "2" / "assets.extra" / "tfllm.json").read_text())[
        "signatures"] == ["serving_default", "greedy", "chat", "score", "tokenize", "logits"]

    # An existing version is never overwritten: one line, exit 2, nothing changed.
    before = snapshot(models)
    message = refused(export.main, run_dir, "--output-dir", models, "--name", "m", "--version",
                      "2", capsys=capsys)
    assert "already exists" in message
    assert snapshot(models) == before


def incomplete_run(kind, run_dir, tmp_path):
    if kind == "missing":
        return tmp_path / "nope"
    broken = tmp_path / "runs" / kind
    shutil.copytree(run_dir, broken)
    if kind == "no-checkpoint":
        shutil.rmtree(broken / "checkpoints")
    elif kind == "no-tokenizer":
        shutil.rmtree(broken / "tokenizer")
    return broken


@pytest.mark.parametrize("kind,phrase", [
    ("missing", "no run directory"), ("no-checkpoint", "no checkpoint"),
    ("no-tokenizer", "no tokenizer")])
def test_exporting_a_missing_or_incomplete_run_is_one_line_exit_2(
        trained_run, tmp_path, capsys, kind, phrase):
    from tfllm import export

    run = incomplete_run(kind, trained_run[1], tmp_path)
    before = snapshot(tmp_path)
    message = refused(export.main, run, "--output-dir", tmp_path / "models", "--models-config",
                      capsys=capsys)
    assert phrase in message
    assert not (tmp_path / "models").exists()
    assert snapshot(tmp_path) == before


def test_models_config_lists_every_exported_model(trained_run, tmp_path, capsys):
    from google.protobuf import text_format

    from tfllm import export
    from tensorflow_serving.config import model_server_config_pb2

    models = tmp_path / "models"
    for name, version in [("a", "1"), ("a", "3"), ("b", "2")]:
        shutil.copytree(trained_run[2], models / name / version)
    (models / "a" / ".tmp-4-99999").mkdir()  # staging: not a version
    (models / "empty").mkdir()  # no version: not served

    message = refused(export.main, "--models-config", "--output-dir", models,
                      "--version-policy", "newest", capsys=capsys)
    assert "version policy 'newest' is not valid" in message
    assert not (models / "models.config").exists()

    result = export_cli("--models-config", "--output-dir", models, "--serving-root",
                        "/models", "--version-policy", "latest:2")
    assert result.returncode == 0, result.stderr[-2000:]
    path = models / "models.config"
    assert result.stdout.strip() == str(path)
    config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    entries = config.model_config_list.config
    assert [(c.name, c.base_path, c.model_platform) for c in entries] == [
        ("a", "/models/a", "tensorflow"), ("b", "/models/b", "tensorflow")]
    assert all(c.model_version_policy.latest.num_versions == 2 for c in entries)
    assert sorted(os.listdir(models)) == ["a", "b", "empty", "models.config"]  # no temp file

    from tfllm.savedmodel.tf_serving import models_config_text

    specific = text_format.Parse(models_config_text(str(models), version_policy="specific:1,3"),
                                 model_server_config_pb2.ModelServerConfig())
    assert list(specific.model_config_list.config[0].model_version_policy.specific.versions) == [
        1, 3]
    everything = text_format.Parse(models_config_text(str(models), version_policy="all"),
                                   model_server_config_pb2.ModelServerConfig())
    assert everything.model_config_list.config[1].model_version_policy.HasField("all")
    assert everything.model_config_list.config[0].base_path == str(models / "a")


# Op types of every function in the SavedModel, checked in an interpreter where only
# TensorFlow core is loaded first: anything else must come from TensorFlow Text.
OP_WALK = r"""
import json, sys
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry
proto = saved_model_pb2.SavedModel.FromString(open(sys.argv[1] + "/saved_model.pb", "rb").read())
ops, xla, functions = set(), [], 0
for graph in proto.meta_graphs:
    library = {f.signature.name for f in graph.graph_def.library.function}
    nodes = [("graph", n) for n in graph.graph_def.node]
    for f in graph.graph_def.library.function:
        functions += 1
        for key in ("_XlaMustCompile", "_XlaCompile"):
            if key in f.attr and f.attr[key].b:
                xla.append(f.signature.name)
        nodes += [(f.signature.name, n) for n in f.node_def]
    for owner, node in nodes:
        for key in ("_XlaMustCompile", "_XlaCompile"):
            if key in node.attr and node.attr[key].b:
                xla.append(owner + "/" + node.name)
        if node.op not in library:
            ops.add(node.op)
not_core = sorted(op for op in ops if op_def_registry.get(op) is None)
import tensorflow_text
still_unknown = sorted(op for op in not_core if op_def_registry.get(op) is None)
print(json.dumps({"ops": sorted(ops), "not_core": not_core, "unknown": still_unknown,
                  "xla": xla, "functions": functions}))
"""

# Registered by TensorFlow core, but not something the stock model server can run.
FORBIDDEN = ("Xla", "_Xla", "PyFunc", "EagerPyFunc", "PyFuncStateless", "_TPU", "TPU")


def test_saved_model_has_only_tensorflow_and_tf_text_ops_and_no_xla(trained_run):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", OP_WALK, str(trained_run[2])],
                            check=False, capture_output=True, text=True, env=env, cwd="/",
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["functions"] > 5 and "While" in found["ops"]
    assert found["unknown"] == []  # every op is TensorFlow core or TensorFlow Text
    # TF Text's ops: the tokenizer's, and the regex split that parses chat JSON.
    assert found["not_core"] and set(found["not_core"]) <= {
        op for op in found["not_core"] if op.startswith("Sentencepiece")} | {
        "RegexSplitWithOffsets"}
    assert [op for op in found["ops"] if op.startswith(FORBIDDEN)] == []
    assert found["xla"] == []  # no function is XLA-compiled


def test_evaluate_run_and_saved_model_agree(trained_run, tmp_path):
    work, run_dir, saved_model, _ = trained_run
    from_run = run_main("evaluate.py", run_dir, "--prompt", "The", "--max-new-tokens", "6",
                        cwd=work)
    assert from_run.returncode == 0, from_run.stderr[-2000:]
    from_saved = run_cli("evaluate.py", saved_model, "--out", tmp_path, "--prompt", "The",
                         "--max-new-tokens", "6", cwd=work)
    assert from_saved.returncode == 0, from_saved.stderr[-2000:]
    a = json.loads((run_dir / "report.json").read_text())
    b = json.loads((tmp_path / "report.json").read_text())
    assert a["metrics"]["tokens"] == b["metrics"]["tokens"] > 0
    assert abs(a["metrics"]["loss"] - b["metrics"]["loss"]) < 1e-4
    assert a["generations"] == b["generations"]
    assert 0 < a["metrics"]["bits_per_byte"] < 8
    assert "bits per byte" in from_run.stdout
