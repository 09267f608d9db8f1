"""SavedModels load where tfllm is absent: tf.saved_model.load and the session loader."""

import json
import os
import subprocess
import sys

from conftest import ROOT, run_cli

PROMPTS = ["The", "A list is", "你好 🙂"]

# Runs in a fresh interpreter that has TensorFlow and TF Text, and no tfllm.
TF2_LOAD = r"""
import json, sys
import tensorflow as tf, tensorflow_text
assert "tfllm" not in sys.modules
m = tf.saved_model.load(sys.argv[1])
out = m.signatures["serving_default"](prompts=tf.constant(json.loads(sys.argv[2])),
                                      max_new_tokens=tf.constant(12))
tok = m.signatures["tokenize"](texts=tf.constant(["hello world"]))
logits = m.signatures["logits"](token_ids=tok["token_ids"])["logits"]
print(json.dumps({"outputs": [s.decode() for s in out["outputs"].numpy()],
                  "ids": tok["token_ids"].numpy().tolist(),
                  "logits_shape": list(logits.shape),
                  "modules": sorted(sys.modules)}))
"""

SESSION_LOAD = r"""
import json, sys
import tensorflow as tf, tensorflow_text
tf1 = tf.compat.v1
with tf1.Session(graph=tf.Graph()) as sess:
    meta = tf1.saved_model.loader.load(sess, ["serve"], sys.argv[1])
    sig = meta.signature_def["serving_default"]
    feed = {sig.inputs["prompts"].name: json.loads(sys.argv[2]),
            sig.inputs["max_new_tokens"].name: 12}
    out = sess.run(sig.outputs["outputs"].name, feed_dict=feed)
print(json.dumps({"outputs": [s.decode() for s in out],
                  "signatures": sorted(meta.signature_def)}))
"""


def run_fresh(script, *args):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                            text=True, env=env, cwd="/", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def in_process_greedy(run_dir):
    from tfllm.evaluation import RunModel

    return RunModel(str(run_dir)).generate(PROMPTS, 12)


def test_tf2_loader_generates_what_tfllm_generates(trained_run):
    _, run_dir, saved_model, _ = trained_run
    got = run_fresh(TF2_LOAD, str(saved_model), json.dumps(PROMPTS))
    assert not [m for m in got["modules"] if m.startswith("tfllm")]
    assert got["outputs"] == in_process_greedy(run_dir)
    assert any(got["outputs"])
    assert got["logits_shape"][:2] == [1, len(got["ids"][0])]


def test_session_loader_generates_the_same(trained_run):
    _, run_dir, saved_model, _ = trained_run
    got = run_fresh(SESSION_LOAD, str(saved_model), json.dumps(PROMPTS))
    assert got["outputs"] == in_process_greedy(run_dir)
    assert {"serving_default", "tokenize", "logits"} <= set(got["signatures"])


def test_export_cli_adds_versions_and_never_overwrites(trained_run, tmp_path):
    work, run_dir, _, _ = trained_run
    out = tmp_path / "models"
    first = subprocess.run([sys.executable, "-m", "tfllm.export", str(run_dir),
                            "--output-dir", str(out), "--name", "m"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.strip().endswith(os.path.join("m", "1"))
    assert sorted(os.listdir(out / "m")) == ["1"]  # no staging directory left behind
    before = sorted(os.listdir(out / "m" / "1"))
    again = subprocess.run([sys.executable, "-m", "tfllm.export", str(run_dir),
                            "--output-dir", str(out), "--name", "m", "--version", "1"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "already exists" in again.stderr
    assert sorted(os.listdir(out / "m" / "1")) == before


def test_export_of_a_missing_run_is_one_line_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tfllm.export", str(tmp_path / "nope"),
                             "--output-dir", str(tmp_path / "models")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: no run directory")
    assert not (tmp_path / "models").exists()


def test_evaluate_run_and_saved_model_agree(trained_run, tmp_path):
    work, run_dir, saved_model, _ = trained_run
    from_run = run_cli("evaluate.py", run_dir, "--prompt", "The", "--max-new-tokens", "6",
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
