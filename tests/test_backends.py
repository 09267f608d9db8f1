"""The layers and model builders run on JAX too: rerun their tests under KERAS_BACKEND=jax.

tfllm/layers and tfllm/models promise keras.ops only (DESIGN.md, Boundaries). This test
keeps the promise honest by running tests/layers and tests/models, and only those (no
recursion into this file), in a fresh interpreter with the JAX backend.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# One test per folder: with `-n 2` the two reruns can go to different workers.
@pytest.mark.parametrize("suite", ["tests/layers", "tests/models"])
def test_layers_and_models_pass_on_jax(suite):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX IS NOT INSTALLED: the layer and model tests were NOT run on the "
                    "JAX backend, so backend-agnosticism is unchecked "
                    "(pip install jax, see requirements.txt)")
    try:
        import jax  # noqa: F401
    except Exception as error:  # installed but broken
        pytest.skip(f"JAX IS NOT IMPORTABLE ({error!r}): the layer and model tests were "
                    "NOT run on the JAX backend")

    env = dict(os.environ, KERAS_BACKEND="jax")
    # Share a GPU with this (TensorFlow) process instead of grabbing 75% of it.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    # The tests compile hundreds of small one-off programs, each run once or twice: LLVM's
    # optimisations cost more than they save there, and the numbers checked are the same.
    flags = ["--xla_backend_optimization_level=0"]
    if env.get("TF_NUM_INTRAOP_THREADS") == "1":  # this worker's share of the cores (conftest)
        flags += ["--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"]
    env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""), *flags]).strip()
    # --disable-warnings only hides the warnings summary, so the failures end the output.
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--tb=short", "--disable-warnings", suite]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"`KERAS_BACKEND=jax {' '.join(command[2:])}` exited with {result.returncode}; "
        f"last lines of its output:\n{output[-8000:]}")
