"""Choosing the tf.distribute strategy that the train loop runs under.

    default      one device (the first GPU, else the CPU)
    mirrored     every local GPU (without GPUs: the CPU's logical devices), one process
    multiworker  MultiWorkerMirroredStrategy over the machines TF_CONFIG names
    tpu          TPUStrategy on the TPU that TPU_NAME (or a TPU VM's /dev/accel*) points at
    auto         tpu when a TPU resolves, multiworker when TF_CONFIG names several workers,
                 mirrored when several GPUs are visible, else default

Everything a user can get wrong (the name, TF_CONFIG, asking for a missing TPU) is checked
in plain Python before TensorFlow starts, so train.py can refuse it in one line. This
module imports TensorFlow only inside functions for that reason.
"""

import dataclasses
import glob
import json
import os

from tfllm.quiet import quiet_stderr

STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")
TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')

_created = {}  # kind -> strategy: at most one of each per process (MirroredStrategy's rule)


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The cluster TF_CONFIG describes, and this process's place in it."""

    workers: tuple          # "host:port" of every task, the chief first if there is one
    task_type: str          # "chief" or "worker"
    task_index: int
    has_chief: bool = False

    @property
    def is_chief(self):
        # TensorFlow's rule: the "chief" task, or worker 0 when the cluster has no chief.
        return self.task_type == "chief" or (self.task_index == 0 and not self.has_chief)


def read_tf_config(environ=None):
    """The `Cluster` of the TF_CONFIG environment variable, or None when it is unset.

    Raises ValueError (with the fix) when it does not parse, names no workers, or names
    this task wrongly (a task type or index the cluster does not have).
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e.msg} at character {e.pos}): "
                         f"set it like {TF_CONFIG_EXAMPLE}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError(f"TF_CONFIG needs a \"cluster\" and a \"task\" object: set it like "
                         f"{TF_CONFIG_EXAMPLE}")
    unsupported = sorted(set(cluster) - {"chief", "worker"})
    if unsupported:
        raise ValueError(f"TF_CONFIG's cluster has {unsupported} jobs, which multi-worker "
                         "training does not use: list the machines as \"worker\" (and at "
                         "most one \"chief\")")
    jobs = {}
    for job in ("chief", "worker"):
        addresses = cluster.get(job, [])
        if isinstance(addresses, str):
            addresses = [addresses]
        if not isinstance(addresses, list) or not all(
                isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses):
            raise ValueError(f"TF_CONFIG's cluster {job!r} must be a list of \"host:port\" "
                             f"strings, got {addresses!r}")
        jobs[job] = addresses
    if len(jobs["chief"]) > 1:
        raise ValueError(f"TF_CONFIG names {len(jobs['chief'])} chiefs: name at most one")
    if not jobs["chief"] + jobs["worker"]:
        raise ValueError(f"TF_CONFIG's cluster names no workers: set it like "
                         f"{TF_CONFIG_EXAMPLE}")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in ("chief", "worker") or not jobs[task_type]:
        present = [job for job in ("chief", "worker") if jobs[job]]
        raise ValueError(f"TF_CONFIG's task type {task_type!r} is not in its cluster "
                         f"({', '.join(present)}): set \"task\": {{\"type\": \"worker\", "
                         "\"index\": N}")
    if isinstance(index, bool) or not isinstance(index, int) or not \
            0 <= index < len(jobs[task_type]):
        raise ValueError(f"TF_CONFIG's task index {index!r} is out of range: the cluster has "
                         f"{len(jobs[task_type])} {task_type}(s), numbered from 0")
    return Cluster(tuple(jobs["chief"] + jobs["worker"]), task_type, index,
                   has_chief=bool(jobs["chief"]))


def _tpu_address():
    """Where a TPU would be (for TPUClusterResolver), or None when nothing points at one."""
    if os.environ.get("TPU_NAME"):
        return os.environ["TPU_NAME"]
    if os.environ.get("COLAB_TPU_ADDR"):
        return "grpc://" + os.environ["COLAB_TPU_ADDR"]
    if glob.glob("/dev/accel[0-9]*"):  # a Cloud TPU VM: the chips are local
        return "local"
    return None


def check_strategy(name="auto"):
    """What `name` asks for, from plain-Python checks (TensorFlow is not imported):
    "default", "mirrored", "multiworker", "tpu", or "local" (auto on one machine:
    mirrored or default, by the GPU count).

    Raises ValueError for an unknown name, `tpu` with nothing pointing at a TPU,
    `multiworker` without TF_CONFIG, and a TF_CONFIG that is broken.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    if name == "tpu" and _tpu_address() is None:
        raise ValueError("--strategy tpu found no TPU (TPU_NAME is unset and there is no "
                         "/dev/accel*): run on a Cloud TPU VM, set TPU_NAME, or pick "
                         "another --strategy")
    cluster = read_tf_config() if name in ("auto", "multiworker") else None
    if name == "multiworker" and cluster is None:
        raise ValueError("--strategy multiworker needs TF_CONFIG naming the workers: set it "
                         f"like {TF_CONFIG_EXAMPLE}")
    if name != "auto":
        return name
    if _tpu_address() is not None:
        return "tpu"
    if cluster is not None and len(cluster.workers) > 1:
        return "multiworker"
    return "local"


def start_strategy(name="auto", global_batch=None, log=print):
    """Check `name` (see `check_strategy`) and, for multi-worker training, create the
    strategy now: MultiWorkerMirroredStrategy must exist before TensorFlow initialises
    its devices, so a command line calls this before anything else touches TensorFlow.
    Creating it waits until every worker TF_CONFIG names has started."""
    if check_strategy(name) != "multiworker":
        return
    workers = len(read_tf_config().workers)
    if global_batch is not None and global_batch % workers:
        raise ValueError(f"--batch-size {global_batch} is not divisible by the {workers} "
                         f"workers of TF_CONFIG: use a multiple of {workers} (times the "
                         "devices per worker)")
    log(f"waiting for the {workers} workers of TF_CONFIG to start...")
    with quiet_stderr():  # TensorFlow's start-up banner; shown only if this fails
        resolve_strategy(name)


def resolve_strategy(name="auto"):
    """The strategy `name` asks for, created once per process and then reused."""
    kind = check_strategy(name)
    if kind == "local":
        import tensorflow as tf

        kind = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    if kind not in _created:
        _created[kind] = _create(kind)
    return _created[kind]


def _create(kind):
    import tensorflow as tf

    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if kind == "multiworker":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:
            raise RuntimeError(
                f"{e}: create the multiworker strategy (tfllm.training.strategy."
                "start_strategy) before anything else runs TensorFlow") from None
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=_tpu_address())
    try:
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (tf.errors.OpError, ValueError, RuntimeError) as e:
        raise ValueError(f"--strategy tpu could not reach the TPU at {_tpu_address()!r} "
                         f"({str(e).splitlines()[0]}): check TPU_NAME and the TPU's state") \
            from None
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """Whether this process writes the run's files (checkpoints, logs, exports): under
    MultiWorker the chief TF_CONFIG names, everywhere else the one process."""
    cluster = _multiworker_cluster(strategy)
    return cluster is None or cluster.is_chief


def worker_id(strategy):
    """This process's task index under MultiWorker (0 elsewhere)."""
    cluster = _multiworker_cluster(strategy)
    return 0 if cluster is None else cluster.task_index


def _multiworker_cluster(strategy):
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return read_tf_config()
    return None
