"""MirroredStrategy over the CPU split into 2 logical devices gives the loss of the
default strategy at every step (its own process: one MirroredStrategy per process, and
logical devices must be set before TensorFlow starts)."""

import json
import subprocess
import sys

from conftest import ROOT, THREADS

SCRIPT = """
import json, os
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from steps import CONFIG, random_batches, train_steps
from tfllm.training.strategy import resolve_strategy
x, y = random_batches(steps=4, batch=8)
config = dict(CONFIG, num_layers=1)  # compiles faster; the loop is what is under test
runs = {}
for name, strategy, accum in [("default", "default", 1), ("mirrored", "mirrored", 1),
                              ("mirrored_accum", "mirrored", 2)]:
    losses, norms, _ = train_steps(x, y, batch=8, strategy=strategy, grad_accum=accum,
                                   clip_norm=0.2, config=config)
    runs[name] = {"losses": losses, "norms": norms}
runs["replicas"] = resolve_strategy("mirrored").num_replicas_in_sync
print("RESULT " + json.dumps(runs))
"""


def test_mirrored_on_two_devices_matches_the_default_strategy_at_every_step():
    env_path = f"{ROOT}:{ROOT / 'tests' / 'training'}"
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=400, env={**THREADS, "PYTHONPATH": env_path,
                                              "TF_CPP_MIN_LOG_LEVEL": "2",
                                              "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    line = [row for row in result.stdout.splitlines() if row.startswith("RESULT ")][-1]
    runs = json.loads(line[len("RESULT "):])
    assert runs["replicas"] == 2
    default = runs["default"]
    assert min(default["norms"]) > 0.2  # the clip norm acted: on the all-reduced gradient
    for name in ("mirrored", "mirrored_accum"):
        for key in ("losses", "norms"):
            for step, (got, want) in enumerate(zip(runs[name][key], default[key]), 1):
                assert abs(got - want) <= 1e-4 * abs(want), (name, key, step, got, want)


TRAIN_MIRRORED = """
import os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import train
sys.exit(train.main(sys.argv[1:]))
"""


def test_a_model_trained_under_mirrored_exports_and_loads_the_same_way(tmp_path, corpus_file):
    from conftest import TINY_FLAGS

    flags = list(TINY_FLAGS)
    flags[flags.index("--steps") + 1] = "10"
    flags[flags.index("--sample-tokens") + 1] = "0"  # the export is under test
    result = subprocess.run(
        [sys.executable, "-c", TRAIN_MIRRORED, "--data", str(corpus_file), "--name", "m",
         "--strategy", "mirrored", *flags], cwd=tmp_path, capture_output=True, text=True,
        timeout=400, env={**THREADS, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
                          "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replica(s)" in result.stdout
    # Loaded here: a SavedModel carries its functions, whatever strategy trained the model.
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the tokenizer's ops)

    saved_model = tf.saved_model.load(str(tmp_path / "saved_models" / "m" / "1"))
    out = saved_model.signatures["greedy"](prompts=tf.constant(["The", "A list"]),
                                           max_new_tokens=tf.constant(10))
    served = [s.decode() for s in out["outputs"].numpy()]

    from tfllm.evaluation import RunModel

    assert served == RunModel(str(tmp_path / "runs" / "m")).generate(["The", "A list"], 10)
