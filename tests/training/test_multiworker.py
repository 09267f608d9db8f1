"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 through train.py."""

import csv

from conftest import ROOT, TINY_FLAGS
from tfllm.training.logs import read_tensorboard
from distributed import free_ports, start, step_losses, tf_config, wait_all

STEPS = 6


def flags(corpus_file):
    argv = ["--data", corpus_file, "--name", "mw", *TINY_FLAGS, "--strategy", "multiworker",
            "--log-every", "1", "--checkpoint-every", "3", "--eval-every", "3"]
    argv[argv.index("--steps") + 1] = str(STEPS)
    return argv


def test_two_workers_agree_and_only_the_chief_writes(tmp_path, corpus_file):
    ports = free_ports(2)
    scratch = tmp_path / "tmp"  # TMPDIR: where the worker's checkpoints go, then vanish
    scratch.mkdir()
    cwds = [tmp_path / "chief", tmp_path / "worker"]
    processes = []
    for index, cwd in enumerate(cwds):
        cwd.mkdir()
        processes.append(start(
            [ROOT / "train.py", *flags(corpus_file)], cwd, tmp_path / f"worker{index}.log",
            env={"TF_CONFIG": tf_config(ports, index), "TMPDIR": str(scratch)}))
    outputs = wait_all(processes, timeout=240)
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]

    chief_losses, worker_losses = map(step_losses, outputs)
    assert sorted(chief_losses) == list(range(1, STEPS + 1)), outputs[0][-2000:]
    assert chief_losses == worker_losses
    assert "[worker 1] step 1/" in outputs[1]

    # The chief wrote the run and the SavedModel; the worker wrote nothing anywhere.
    run = cwds[0] / "runs" / "mw"
    with open(run / "metrics.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, STEPS + 1))
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == \
        ["ckpt-3.index", "ckpt-6.index"]
    assert [p.name for p in (cwds[0] / "saved_models" / "mw").iterdir()] == ["1"]
    scalars = read_tensorboard(run / "tensorboard")
    for tag in ("loss", "learning_rate", "grad_norm", "tokens_per_sec"):
        assert [step for step, _ in scalars[tag]] == list(range(1, STEPS + 1)), tag
    assert [step for step, _ in scalars["val_loss"]] == [3, 6]
    assert [f"{v:.5f}" for _, v in scalars["loss"]] == \
        [chief_losses[step] for step in range(1, STEPS + 1)]
    assert list(cwds[1].iterdir()) == []
    assert list(scratch.iterdir()) == []
