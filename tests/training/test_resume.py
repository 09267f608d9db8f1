"""Crash-safe training through train.py: SIGKILL after a checkpoint, rerun the same
command, and it finishes the same steps with the same losses (dropout on, several steps
per call); a truncated latest checkpoint is detected and the one before it used, with a
warning."""

import csv
import re
import time

import pytest

from conftest import ROOT, TINY_FLAGS, run_main
from distributed import kill, start, step_losses

STEPS = 40
LOG_EVERY = 2


def command(corpus_file):
    # Dropout on, and calls of several steps whose boundaries differ between the first
    # run and the resumed one (a resumed run's first call is a single step).
    argv = ["--data", corpus_file, "--name", "r", *TINY_FLAGS, "--no-export",
            "--sample-tokens", "2", "--log-every", str(LOG_EVERY), "--checkpoint-every", "10",
            "--eval-every", "20", "--steps-per-call", "5"]
    argv[argv.index("--steps") + 1] = str(STEPS)
    argv[argv.index("--dropout") + 1] = "0.1"
    return argv


def logged_steps(run):
    with open(run / "metrics.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def resumed_step(output):
    match = re.search(r"resumed from \S+ckpt-(\d+) at step (\d+)", output)
    assert match, output[-2000:]
    assert match.group(1) == match.group(2)
    return int(match.group(2))


def assert_same_losses(later, earlier, steps):
    assert steps, "no steps in common"
    for step in steps:
        assert float(later[step]) == pytest.approx(float(earlier[step]), rel=1e-5), step


def test_sigkill_then_rerun_resumes_and_a_truncated_checkpoint_falls_back(tmp_path,
                                                                           corpus_file):
    run = tmp_path / "runs" / "r"
    index = run / "checkpoints" / "checkpoint"  # written after a checkpoint's files
    first = start([ROOT / "train.py", *command(corpus_file)], tmp_path, tmp_path / "first.log",
                  env={"PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + 180
        # Kill a few steps past the first checkpoint, so some steps are run twice.
        while not (index.exists() and max(step_losses(open(first.log_path).read()),
                                          default=0) >= 13):
            assert first.poll() is None, open(first.log_path).read()[-3000:]
            assert time.time() < deadline, "no checkpoint within 180 s"
            time.sleep(0.02)
    finally:
        kill(first)  # SIGKILL: no clean-up of any kind
    killed = step_losses(open(first.log_path).read())
    assert max(killed) < STEPS, "the run ended before it could be killed"

    # Rerunning the same command resumes from the checkpoint and ends at the same step (the
    # reruns call train.main here: the killed run is the separate process under test).
    second = run_main("train.py", *command(corpus_file), cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    start_step = resumed_step(second.stdout)
    assert 10 <= start_step <= max(killed)
    resumed = step_losses(second.stdout)
    assert sorted(resumed) == list(range(start_step + LOG_EVERY, STEPS + 1, LOG_EVERY))
    # The same weights, optimizer state and data position: the steps run twice agree,
    # and the loss carries on from where it was (not from a fresh model's).
    assert_same_losses(resumed, killed, sorted(set(resumed) & set(killed)))
    assert float(resumed[start_step + LOG_EVERY]) < float(killed[LOG_EVERY]) - 0.3
    # Rows after the checkpoint, once.
    assert logged_steps(run) == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))

    # Truncate the newest checkpoint: the rerun warns and uses the one before.
    data = run / "checkpoints" / f"ckpt-{STEPS}.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    third = run_main("train.py", *command(corpus_file), cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    warning = [line for line in third.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and f"ckpt-{STEPS}" in warning[0], third.stderr[-3000:]
    assert f"using ckpt-{STEPS - 10}" in warning[0]
    assert resumed_step(third.stdout) == STEPS - 10
    again = step_losses(third.stdout)
    assert sorted(again) == list(range(STEPS - 10 + LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert_same_losses(again, resumed, sorted(again))
    assert logged_steps(run) == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
