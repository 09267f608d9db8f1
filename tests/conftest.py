import os

# Entry points choose the backend; the library never forces one on import.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A tiny but real run: SentencePiece on real English text, a 2-layer GPT, a SavedModel.
TINY_FLAGS = ["--vocab-size", "400", "--num-layers", "2", "--embed-dim", "64",
              "--num-heads", "2", "--context-length", "64", "--steps", "90", "--lr", "3e-3",
              "--batch-size", "8", "--warmup-steps", "10", "--eval-every", "30",
              "--checkpoint-every", "30", "--sample-tokens", "8", "--dropout", "0"]


def one_error_line(result):
    """The single `error: ...` line of a CLI run that refused its input with exit code 2
    (asserting that it did)."""
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def refused(main, *argv, capsys):
    """The single `error: ...` line of a CLI's `main(argv)` run in this process that
    refused its input with exit code 2 (asserting that it did): refusals need no
    subprocess, since they happen before any work."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def run_cli(script, *args, cwd, timeout=600):
    """Run a top-level CLI the way a user does; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    """About 40k characters of real English: the first pydoc_data topics."""
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n\n".join(topics[k] for k in sorted(topics)[:12]), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, corpus_file):
    """train.py run once for the whole session: (workdir, run_dir, saved_model_dir, stdout)."""
    work = tmp_path_factory.mktemp("work")
    result = run_cli("train.py", "--data", corpus_file, "--name", "t", *TINY_FLAGS, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, work / "runs" / "t", work / "saved_models" / "t" / "1", result.stdout


@pytest.fixture
def mixed_bfloat16():
    """The mixed_bfloat16 policy for one test, float32 restored after."""
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")
