"""train.py --task classify and evaluate.py end to end on made-up Chinese headlines: the run
directory, the reports, the SavedModel in a fresh process, a GPT backbone (--init), and
bad input refused in one line with nothing written."""

import csv
import json
import subprocess
import sys

import pytest

from classify_helpers import CLASSIFY_FLAGS, TOPICS, write_dataset
from conftest import run_cli, run_main

LABELS = sorted(TOPICS)


@pytest.fixture(scope="module")
def zh_data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("zh_data"))


@pytest.fixture(scope="module")
def zh_run(tmp_path_factory, zh_data):
    """train.py on the headlines, an ensemble of two: (workdir, run_dir, saved_model,
    stdout)."""
    work = tmp_path_factory.mktemp("zh_work")
    result = run_main("train.py", "--task", "classify", "--data", zh_data["train"], "--val",
                      zh_data["valid"], "--name", "zh", "--members", "2", *CLASSIFY_FLAGS,
                      cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, work / "runs" / "zh", work / "saved_models" / "zh" / "1", result.stdout


def test_training_writes_the_run_and_learns_the_topics(zh_run):
    work, run_dir, saved_model, stdout = zh_run
    for name in ("config.json", "train_config.json", "classifier.json",
                 "tokenizer/tokenizer.json", "tokenizer/tokenizer.model", "checkpoints/checkpoint",
                 "best/checkpoint", "best/best.json", "metrics.csv", "loss.png"):
        assert (run_dir / name).exists(), name
    assert (saved_model / "saved_model.pb").exists()
    info = json.loads((run_dir / "classifier.json").read_text(encoding="utf-8"))
    assert info["labels"] == LABELS and info["pooling"] == "mean" and not info["causal"]
    assert info["members"] == 2 and "an ensemble of 2" in stdout
    assert json.loads((run_dir / "tokenizer" / "tokenizer.json").read_text())["kind"] == \
        "sentencepiece"
    with open(run_dir / "metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    evaluated = [r for r in rows if r["val_accuracy"]]
    assert [int(r["step"]) for r in evaluated] == [20, 40]
    best = json.loads((run_dir / "best" / "best.json").read_text())
    assert best["accuracy"] == max(float(r["val_accuracy"]) for r in evaluated)
    assert best["accuracy"] >= 0.8, stdout  # keywords decide the topic: far above 1/3
    assert f"validation accuracy {best['accuracy']:.4f}" in stdout


def test_evaluate_scores_run_and_saved_model_alike(zh_run, zh_data):
    work, run_dir, saved_model, _ = zh_run
    reports = {}
    for name, target, out in (("run", run_dir, []), ("saved", saved_model, ["--out", "sm"])):
        result = run_main("evaluate.py", target, "--data", zh_data["test"], *out, cwd=work)
        assert result.returncode == 0, result.stderr[-2000:]
        where = run_dir if name == "run" else work / "sm"
        reports[name] = json.loads((where / "report.json").read_text(encoding="utf-8"))
        assert (where / "report.md").read_text(encoding="utf-8").startswith(
            "# Classification report")
        assert (where / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "accuracy" in result.stdout
    run, saved = reports["run"], reports["saved"]
    assert run["metrics"] == pytest.approx(saved["metrics"], abs=1e-9)
    assert run["confusion_matrix"] == saved["confusion_matrix"]
    m = run["metrics"]
    matrix = run["confusion_matrix"]
    assert sum(map(sum, matrix)) == run["examples"] == 45
    assert m["accuracy"] == pytest.approx(sum(matrix[i][i] for i in range(3)) / 45)
    assert [c["label"] for c in run["per_class"]] == LABELS
    assert [c["support"] for c in run["per_class"]] == [15, 15, 15]
    f1 = [c["f1"] for c in run["per_class"]]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    mistakes = run["mistakes"]
    assert len(mistakes) == min(10, 45 - sum(matrix[i][i] for i in range(3)))
    assert [e["confidence"] for e in mistakes] == sorted(
        (e["confidence"] for e in mistakes), reverse=True)
    assert all(e["label"] != e["predicted"] and ".tsv:" in e["source"] for e in mistakes)


FRESH_PROCESS = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the tokenizer's ops)
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
texts = json.loads(sys.stdin.read())
out = serve(texts=tf.constant(texts))
print(json.dumps({"labels": [s.decode("utf-8") for s in out["labels"].numpy()],
                  "probabilities": out["probabilities"].numpy().tolist(),
                  "tfllm_loaded": any(m.split(".")[0] == "tfllm" for m in sys.modules)}))
"""


def test_saved_model_in_a_fresh_process_labels_raw_text_like_the_run(zh_run, zh_data):
    """Only tensorflow + tensorflow_text in the serving process; raw strings of any kind
    get the labels (and probabilities) the in-process model gives them."""
    import numpy as np

    from tfllm.tasks.classify.model import load_classifier

    work, run_dir, saved_model, _ = zh_run
    headlines = [line.split("\t", 1)[1] for line in
                 zh_data["test"].read_text(encoding="utf-8").splitlines()[:12]]
    texts = headlines + ["", "   ", "Stock markets rallied 🎉", "体育\t比赛 with a tab",
                         "芯片" * 300, "\u00e9\u0301 🙂 ∑"]
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(saved_model)],
                            input=json.dumps(texts), capture_output=True, text=True,
                            timeout=300, cwd=work, env={"PATH": "/usr/bin:/bin",
                                                        "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert not served["tfllm_loaded"]

    classifier = load_classifier(str(run_dir))
    assert served["labels"] == classifier.predict(texts)
    np.testing.assert_allclose(served["probabilities"], classifier.predict_proba(texts),
                               atol=1e-5)
    probabilities = np.array(served["probabilities"])
    assert probabilities.shape == (len(texts), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert [LABELS[i] for i in probabilities.argmax(axis=1)] == served["labels"]
    assert set(served["labels"][:12]) <= set(LABELS)
    # Padding invariance end to end: a headline alone, and beside a text that pads it
    # to the full sequence length, gets the same probabilities.
    alone = classifier.predict_proba(headlines[:1])
    padded = classifier.predict_proba(headlines[:1] + ["芯片" * 300])[:1]
    np.testing.assert_allclose(padded, alone, atol=1e-5, rtol=0)


def test_a_gpt_language_model_becomes_a_classifier(tmp_path, zh_data, monkeypatch):
    """--init RUN_DIR: a train.py LM run gets a head; its shape and tokenizer carry over."""
    import train

    monkeypatch.chdir(tmp_path)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(line.split("\t", 1)[1] for line in
                               zh_data["train"].read_text(encoding="utf-8").splitlines()),
                     encoding="utf-8")
    lm_flags = ["--vocab-size", "400", "--num-layers", "2", "--embed-dim", "64",
                "--num-heads", "2", "--context-length", "64", "--steps", "10",
                "--batch-size", "4", "--eval-every", "10", "--checkpoint-every", "10",
                "--sample-tokens", "4", "--no-export", "--no-xla"]
    assert train.main(["--data", str(texts), "--name", "lm", *lm_flags]) == 0
    flags = [f for f in CLASSIFY_FLAGS]
    for fixed in ("--vocab-size", "--num-layers", "--embed-dim", "--num-heads", "--steps"):
        del flags[flags.index(fixed):flags.index(fixed) + 2]
    assert train.main(["--task", "classify", "--init", "runs/lm", "--pooling", "last",
                       "--data", str(zh_data["train"]), "--val", str(zh_data["valid"]),
                       "--name", "gpt", "--no-export", "--steps", "20", *flags]) == 0
    info = json.loads((tmp_path / "runs" / "gpt" / "classifier.json").read_text())
    assert info["causal"] and info["pooling"] == "last"
    lm_config = json.loads((tmp_path / "runs" / "lm" / "config.json").read_text())
    config = json.loads((tmp_path / "runs" / "gpt" / "config.json").read_text())
    assert config == {**lm_config, "dropout": 0.0}  # --dropout is the one override allowed
    assert (tmp_path / "runs" / "gpt" / "tokenizer" / "tokenizer.model").read_bytes() == \
        (tmp_path / "runs" / "lm" / "tokenizer" / "tokenizer.model").read_bytes()
    assert json.loads((tmp_path / "runs" / "gpt" / "best" / "best.json").read_text())[
        "accuracy"] > 0.5  # 3 balanced topics: chance is 1/3


def bad_file(tmp_path, zh_data, case):
    """(flags for train.py, text the error must hold) for one kind of bad input."""
    train_rows = zh_data["train"].read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "bad.tsv"
    if case == "no_tab":
        rows = train_rows[:6] + ["体育 没有制表符的一行"] + train_rows[6:]
        bad.write_text("\n".join(rows) + "\n", encoding="utf-8")
        return ["--data", bad, "--val", zh_data["valid"]], "bad.tsv:7: no tab in this row"
    if case == "empty_text":
        rows = train_rows[:3] + ["科技\t "] + train_rows[3:]
        bad.write_text("\n".join(rows) + "\n", encoding="utf-8")
        return ["--data", bad, "--val", zh_data["valid"]], "bad.tsv:4: the text is empty"
    if case == "unseen_val_label":
        rows = zh_data["valid"].read_text(encoding="utf-8").splitlines()
        rows.insert(9, "娱乐\t明星电影首映")
        bad.write_text("\n".join(rows) + "\n", encoding="utf-8")
        return (["--data", zh_data["train"], "--val", bad],
                "bad.tsv:10: label '娱乐' was never seen in training")
    bad = tmp_path / "bad.csv"
    bad.write_text("title,topic\n比赛冠军,体育\n", encoding="utf-8")
    return ["--data", bad, "--text-column", "headline"], "bad.csv:1: no column 'headline'"


@pytest.mark.parametrize("case", ["no_tab", "empty_text", "unseen_val_label", "csv_column"])
def test_bad_training_input_is_one_line_exit_2_and_writes_nothing(tmp_path, zh_data,
                                                                 monkeypatch, capsys, case):
    import train

    monkeypatch.chdir(tmp_path)
    flags, expected = bad_file(tmp_path, zh_data, case)
    code = train.main(["--task", "classify", *map(str, flags), "--name", "bad",
                       *CLASSIFY_FLAGS])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not (tmp_path / "runs").exists() and not (tmp_path / "saved_models").exists()


def test_bad_input_through_the_real_command_lines(tmp_path, zh_run, zh_data):
    """As a user sees it: separate processes, stderr one line, exit code 2."""
    work, run_dir, saved_model, _ = zh_run
    flags, expected = bad_file(tmp_path, zh_data, "no_tab")
    result = run_cli("train.py", "--task", "classify", *flags, "--name", "bad",
                     *CLASSIFY_FLAGS, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'bad.tsv'}:7: no tab in "
                                                  "this row: write each row as label<TAB>text"]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "saved_models").exists()

    # A label the model never saw, at evaluation: refused before any report is written.
    unseen = tmp_path / "unseen.tsv"
    rows = zh_data["test"].read_text(encoding="utf-8").splitlines()
    unseen.write_text("\n".join(rows[:4] + ["军事\t航母编队演习"] + rows[4:]) + "\n",
                      encoding="utf-8")
    for target in (saved_model, run_dir):
        out = tmp_path / f"out-{target.name}"
        result = run_cli("evaluate.py", target, "--data", unseen, "--out", out, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "unseen.tsv:5: label '军事' was never seen in training" \
            in lines[0], lines
        assert not out.exists()


def test_class_token_pooling_on_a_gpt_is_refused(tmp_path, monkeypatch, capsys, zh_run, zh_data):
    import train

    work, run_dir, _, _ = zh_run
    monkeypatch.chdir(tmp_path)
    code = train.main(["--task", "classify", "--init", str(run_dir), "--data",
                       str(zh_data["train"]), "--pooling", "last", "--name", "x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is a classifier (task classify)" in err[0]
    code = train.main(["--task", "classify", "--init", str(run_dir), "--data",
                       str(zh_data["train"]), "--pooling", "cls", "--name", "x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--pooling cls needs an encoder" in err[0]
    for flags, expected in ((["--task", "classify", "--members", "0"], "--members must be 1"),
                            (["--members", "3"], "--members applies to --task classify")):
        code = train.main([*flags, "--data", str(zh_data["train"]), "--name", "x"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "runs").exists()


def test_tasks_that_do_not_apply_to_a_classifier_are_refused_by_the_registry(
        zh_run, capsys):
    from conftest import refused

    from tfllm import chat
    from tfllm.tasks import task_of

    work, run_dir, saved_model, _ = zh_run
    assert task_of(str(run_dir)).name == task_of(str(saved_model)).name == "classify"
    for target in (run_dir, saved_model):
        assert refused(chat.main, target, "--prompt", "hi", capsys=capsys) == (
            f"error: chat does not apply to '{target}': it is a classifier (task classify); "
            "chat needs a model of task lm, sft")


def test_python_m_tfllm_export_exports_a_classifier_run(zh_run):
    """The export CLI recognises a classifier run and writes a classifier SavedModel."""
    work, run_dir, _, _ = zh_run
    result = run_main("tfllm.export", run_dir, "--name", "zh_again", "--output-dir",
                      work / "exported", cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    metadata = json.loads((work / "exported" / "zh_again" / "1" / "assets.extra" /
                           "tfllm.json").read_text(encoding="utf-8"))
    assert metadata["task"] == "classify" and metadata["labels"] == LABELS
