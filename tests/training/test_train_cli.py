"""train.py end to end, as a user runs it: outputs, reproducibility, bad input."""

import csv
import re

import pytest

from conftest import TINY_FLAGS, refused, run_cli


def test_run_directory_holds_every_output(trained_run):
    work, run_dir, saved_model, stdout = trained_run
    for name in ("config.json", "train_config.json", "tokenizer/tokenizer.json",
                 "tokenizer/tokenizer.model", "checkpoints/checkpoint", "metrics.csv",
                 "loss.png", "samples.txt"):
        assert (run_dir / name).exists(), name
    assert (saved_model / "saved_model.pb").exists()
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r["val_loss"]] == [30, 60, 90]
    samples = (run_dir / "samples.txt").read_text(encoding="utf-8")
    assert samples.count("### prompt:") == 3


def test_training_beats_the_unigram_baseline(trained_run):
    stdout = trained_run[3]
    match = re.search(r"validation loss ([\d.]+) nats/token .* unigram entropy ([\d.]+)", stdout)
    assert match, stdout[-2000:]
    val_loss, unigram = map(float, match.groups())
    assert val_loss < unigram


def test_same_seed_gives_the_same_loss_curve(tmp_path, corpus_file):
    import train

    losses = []
    for name, samples in (("a", "4"), ("b", "0")):  # 0: no samples.txt, same training
        argv = ["--data", str(corpus_file), "--name", name, "--runs-dir", str(tmp_path / "runs"),
                "--no-export", *TINY_FLAGS]
        argv[argv.index("--steps") + 1] = "20"
        argv[argv.index("--sample-tokens") + 1] = samples
        assert train.main(argv) == 0
        with open(tmp_path / "runs" / name / "metrics.csv") as f:
            losses.append([(r["train_loss"], r["val_loss"]) for r in csv.DictReader(f)])
    assert losses[0] == losses[1]
    assert (tmp_path / "runs" / "a" / "samples.txt").exists()
    assert not (tmp_path / "runs" / "b" / "samples.txt").exists()


@pytest.mark.parametrize("case", ["missing", "empty", "binary", "latin1", "seq_len",
                                  "sample_tokens"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, case):
    import train

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data.txt"
    extra = []
    if case == "missing":
        data = tmp_path / "nope.txt"
    elif case == "empty":
        data.write_text("   \n")
    elif case == "binary":
        data.write_bytes(b"\x7fELF\x00\x01\x02" * 50)
    elif case == "latin1":
        data.write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    else:
        data.write_text("plenty of text\n" * 100)
        extra = ["--seq-len", "4096"] if case == "seq_len" else ["--sample-tokens", "-1"]
    message = refused(train.main, "--data", data, *extra, capsys=capsys)
    expected = {"missing": "nope.txt", "empty": "is empty", "binary": "binary",
                "latin1": "not UTF-8", "seq_len": "--seq-len 4096",
                "sample_tokens": "--sample-tokens must be 0"}[case]
    assert expected in message
    assert not (tmp_path / "saved_models").exists()
    assert not (tmp_path / "runs").exists()


def test_help_documents_every_option_of_every_task(tmp_path):
    import dataclasses

    from tfllm.tasks import TASKS

    result = run_cli("train.py", "--help", cwd=tmp_path, timeout=120)
    assert result.returncode == 0
    for task in TASKS.values():
        assert re.search(rf"^  {task.name} +{re.escape(task.summary)}$", result.stdout, re.M)
        for field in dataclasses.fields(task.options):
            flag = "--" + field.name.replace("_", "-")
            # The flag, then its help text (argparse may wrap it onto the next lines).
            words = field.metadata["help"].split()[:3]
            assert re.search(re.escape(flag) + r"\b.*?" + r"\s+".join(map(re.escape, words)),
                             result.stdout, re.S), flag
    assert "TensorFlow" not in result.stderr and "cuda" not in result.stderr  # parsed without it


@pytest.mark.parametrize("argv, message", [
    (["--pooling", "max"], "--pooling applies to --task classify only: drop it"),
    (["--task", "classify", "--data", "x.tsv", "--lora-rank", "2"],
     "--lora-rank applies to --task sft only: drop it"),
    (["--task", "sft", "--data", "x.jsonl", "--sample-tokens", "4"],
     "--sample-tokens applies to --task lm only: drop it"),
    (["--task", "translate"], "unknown task 'translate': choose one of lm, sft, classify, seq2seq"),
])
def test_a_flag_of_another_task_is_refused(tmp_path, monkeypatch, capsys, argv, message):
    import train

    monkeypatch.chdir(tmp_path)
    assert refused(train.main, *argv, capsys=capsys) == f"error: {message}"
    assert list(tmp_path.iterdir()) == []


TWO_WORKERS = ('{"cluster": {"worker": ["127.0.0.1:%d", "127.0.0.1:%d"]}, '
               '"task": {"type": "worker", "index": %d}}')


@pytest.mark.parametrize("case", ["unknown_strategy", "tpu_without_tpu", "tf_config_json",
                                  "tf_config_task", "batch_over_workers", "precision",
                                  "grad_accum"])
def test_bad_distribution_input_is_one_line_exit_2_and_writes_nothing(
        tmp_path, corpus_file, monkeypatch, capsys, case):
    import train
    from distributed import free_ports

    ports = free_ports(2)
    args, env = [], {}
    if case == "unknown_strategy":
        args = ["--strategy", "nccl"]
    elif case == "tpu_without_tpu":
        args = ["--strategy", "tpu"]
    elif case == "tf_config_json":
        env = {"TF_CONFIG": "{'cluster': "}
    elif case == "tf_config_task":
        env = {"TF_CONFIG": TWO_WORKERS % (*ports, 2)}
    elif case == "batch_over_workers":
        args = ["--strategy", "multiworker", "--batch-size", "7"]
        env = {"TF_CONFIG": TWO_WORKERS % (*ports, 0)}
    elif case == "precision":
        args = ["--precision", "fp8"]
    else:
        args = ["--batch-size", "8", "--grad-accum", "3"]
    for name in ("TF_CONFIG", "TPU_NAME", "COLAB_TPU_ADDR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    message = refused(train.main, "--data", corpus_file, *args, capsys=capsys)
    expected = {"unknown_strategy": "unknown strategy 'nccl'",
                "tpu_without_tpu": "--strategy tpu found no TPU",
                "tf_config_json": "TF_CONFIG is not valid JSON",
                "tf_config_task": "task index 2 is out of range",
                "batch_over_workers": "--batch-size 7 is not divisible by the 2 workers",
                "precision": "unknown precision 'fp8'",
                "grad_accum": "--batch-size 8 is not divisible by --grad-accum 3"}[case]
    assert expected in message
    assert list(tmp_path.iterdir()) == []


def test_resuming_in_another_precision_is_refused_and_changes_nothing(
        trained_run, corpus_file, monkeypatch, capsys):
    import train

    work, run_dir, _, _ = trained_run
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    monkeypatch.chdir(work)
    message = refused(train.main, "--data", corpus_file, "--name", "t", *TINY_FLAGS,
                      "--precision", "bf16", capsys=capsys)
    assert message == ("error: 'runs/t' was trained with --precision fp32: resume it with "
                       "the same precision, or pick another --name")
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before
