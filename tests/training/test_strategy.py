"""Strategy choice and TF_CONFIG checks: plain Python, no TensorFlow started."""

import json

import pytest

from tfllm.training import strategy as st


def config(workers=2, index=0, task_type="worker", chief=False):
    cluster = {"worker": [f"10.0.0.{i}:2222" for i in range(workers)]}
    if chief:
        cluster["chief"] = ["10.0.0.9:2222"]
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@pytest.fixture
def env(monkeypatch):
    for name in ("TF_CONFIG", "TPU_NAME", "COLAB_TPU_ADDR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(st.glob, "glob", lambda pattern: [])  # no /dev/accel*
    return monkeypatch


def test_tf_config_parses_and_names_the_chief(env):
    assert st.read_tf_config() is None
    env.setenv("TF_CONFIG", config(workers=3, index=0))
    cluster = st.read_tf_config()
    assert cluster.workers == ("10.0.0.0:2222", "10.0.0.1:2222", "10.0.0.2:2222")
    assert cluster.is_chief
    env.setenv("TF_CONFIG", config(workers=3, index=2))
    assert not st.read_tf_config().is_chief
    env.setenv("TF_CONFIG", config(workers=2, index=0, chief=True))
    assert not st.read_tf_config().is_chief  # with a "chief" task, worker 0 is not it
    env.setenv("TF_CONFIG", config(workers=2, index=0, task_type="chief", chief=True))
    assert st.read_tf_config().is_chief and len(st.read_tf_config().workers) == 3


@pytest.mark.parametrize("value, message", [
    ("{not json", "not valid JSON"),
    ('{"cluster": {"worker": ["a:1"]}}', 'needs a "cluster" and a "task"'),
    (config(workers=2, index=2), "task index 2 is out of range"),
    (config(workers=2, index=-1), "task index -1 is out of range"),
    (config(task_type="ps"), "task type 'ps' is not in its cluster"),
    (config(task_type="chief"), "task type 'chief' is not in its cluster"),
    ('{"cluster": {"worker": ["nohostport"]}, "task": {"type": "worker", "index": 0}}',
     '"host:port"'),
    ('{"cluster": {"worker": [], "ps": ["a:1"]}, "task": {"type": "worker", "index": 0}}',
     "'ps'"),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "names no workers"),
])
def test_a_broken_tf_config_is_refused_with_the_fix(env, value, message):
    env.setenv("TF_CONFIG", value)
    with pytest.raises(ValueError, match="TF_CONFIG") as error:
        st.check_strategy("auto")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_auto_picks_by_what_the_machine_has(env):
    assert st.check_strategy("auto") == "local"  # mirrored or default, by the GPU count
    env.setenv("TF_CONFIG", config(workers=1))
    assert st.check_strategy("auto") == "local"
    env.setenv("TF_CONFIG", config(workers=2))
    assert st.check_strategy("auto") == "multiworker"
    env.setenv("TPU_NAME", "my-tpu")
    assert st.check_strategy("auto") == "tpu"


def test_explicit_choices_and_their_errors(env):
    with pytest.raises(ValueError, match="unknown strategy 'nccl'"):
        st.check_strategy("nccl")
    with pytest.raises(ValueError, match="--strategy tpu found no TPU"):
        st.check_strategy("tpu")
    with pytest.raises(ValueError, match="--strategy multiworker needs TF_CONFIG"):
        st.check_strategy("multiworker")
    env.setenv("TF_CONFIG", "[]")  # only auto and multiworker read TF_CONFIG
    assert st.check_strategy("mirrored") == "mirrored"
    assert st.check_strategy("default") == "default"
    env.setenv("TPU_NAME", "my-tpu")
    assert st.check_strategy("tpu") == "tpu"


def test_the_global_batch_must_split_over_the_replicas():
    from tfllm.training.build import check_batch
    from tfllm.training.options import TrainOptions

    check_batch(TrainOptions(batch_size=8, grad_accum=2), replicas=2)
    with pytest.raises(ValueError, match="--batch-size 6 is not divisible by the 4 replicas"):
        check_batch(TrainOptions(batch_size=6), replicas=4)
    with pytest.raises(ValueError, match="replica's batch of 2 is not divisible by --grad-accum"):
        check_batch(TrainOptions(batch_size=8, grad_accum=4), replicas=4)
