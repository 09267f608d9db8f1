import os

# Entry points choose the backend; the library never forces one on import.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Under pytest-xdist the cores are split among the workers: each worker, and every process
# it starts, runs TensorFlow on its share. On CI's 2 cores with `-n 2` that is one thread
# each: two workers' thread pools contending for two cores cost more than they gain.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = {}
if _workers > 1:
    _share = str(max(1, (os.cpu_count() or 1) // _workers))
    THREADS = {"TF_NUM_INTRAOP_THREADS": _share, "TF_NUM_INTEROP_THREADS": _share}
    os.environ.update({k: v for k, v in THREADS.items() if k not in os.environ})

import fcntl
import shutil
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


def run_main(script, *args, cwd):
    """Run a CLI's `main(argv)` in this process, in `cwd`, and return what `run_cli` returns
    (exit code, stdout, stderr). A new process starts TensorFlow again before any work:
    tests of what a run produces call this, and each CLI keeps tests through `run_cli`,
    the way a user starts it."""
    import contextlib
    import importlib
    import io

    module = importlib.import_module(str(script).removesuffix(".py").replace("/", "."))
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = module.main(argv)
            except SystemExit as exit_:  # argparse's --help and usage errors
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess([script, *argv], code or 0, out.getvalue(),
                                       err.getvalue())


def built_once(tmp_path_factory, name, build):
    """A folder that `build(folder)` fills once for the whole test run: with pytest-xdist,
    the first worker to ask builds it where every worker looks and the others wait for it,
    so a session fixture costs its time once, not once per worker."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this run
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.write_text("")
    return folder


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    """About 40k characters of real English: the first pydoc_data topics."""
    from pydoc_data.topics import topics

    def build(folder):
        text = "\n\n".join(topics[k] for k in sorted(topics)[:12])
        (folder / "docs.txt").write_text(text, encoding="utf-8")

    return built_once(tmp_path_factory, "corpus", build) / "docs.txt"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, corpus_file):
    """train.py run once for the whole test run: (workdir, run_dir, saved_model_dir,
    stdout)."""
    def build(work):
        result = run_cli("train.py", "--data", corpus_file, "--name", "t", *TINY_FLAGS,
                         cwd=work)
        assert result.returncode == 0, result.stderr[-3000:]
        (work / "stdout.txt").write_text(result.stdout, encoding="utf-8")

    work = built_once(tmp_path_factory, "work", build)
    return (work, work / "runs" / "t", work / "saved_models" / "t" / "1",
            (work / "stdout.txt").read_text(encoding="utf-8"))


@pytest.fixture
def mixed_bfloat16():
    """The mixed_bfloat16 policy for one test, float32 restored after."""
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


# With pytest-xdist (`-n 2`, README), the tests of one file run in one worker, so a module
# fixture is built once; the server tests share one group, since they share their servers.
# The files that take longest are handed out first, so that the workers finish together.
LONG_FIRST = ("tests/test_backends.py", "tests/training/test_resume.py",
              "tests/test_pretrained.py", "tests/chat/test_sft_cli.py", "tests/test_export.py",
              "tests/serve", "tests/chat/test_chat_serving.py",
              "tests/training/test_mirrored.py", "tests/training/test_multiworker.py",
              "tests/seq2seq/test_seq2seq_task.py", "tests/test_hf_export.py")


# Tests that are each a group of their own (no shared fixtures, and each long).
OWN_GROUP = ("tests/test_backends.py",)


def file_group_of(item):
    path = item.nodeid.split("::")[0]
    return "tests/serve" if path.startswith("tests/serve/") else path


def xdist_group_of(item):
    group = file_group_of(item)
    return item.nodeid if group in OWN_GROUP else group


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    rank = {group: i for i, group in enumerate(LONG_FIRST)}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(xdist_group_of(item)))
    items.sort(key=lambda item: rank.get(file_group_of(item), len(rank)))
