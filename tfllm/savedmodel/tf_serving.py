"""TF Serving's `--model_config_file`: one entry per exported model of a models directory.

    python -m tfllm.export --models-config [--output-dir saved_models]
                           [--serving-root /models] [--version-policy P]
"""

import os

from tfllm.atomic import write_atomic

MODELS_CONFIG = "models.config"


def parse_version_policy(policy):
    """'latest', 'latest:N', 'all' or 'specific:V1,V2' -> (kind, numbers)."""
    kind, _, rest = str(policy).partition(":")
    try:
        numbers = [int(v) for v in rest.split(",")] if rest else []
    except ValueError:
        numbers = None
    if kind == "latest" and numbers is not None and len(numbers) <= 1 and all(
            n >= 1 for n in numbers):
        return kind, numbers or [1]
    if kind == "all" and not rest:
        return kind, []
    if kind == "specific" and numbers and all(n >= 1 for n in numbers):
        return kind, numbers
    raise ValueError(f"version policy {policy!r} is not valid: use 'latest', 'latest:N', "
                     "'all' or 'specific:1,2'")


def served_models(models_dir):
    """Names of the models under `models_dir` that have at least one complete version."""
    if not os.path.isdir(models_dir):
        raise FileNotFoundError(
            f"no models directory '{models_dir}': export a run first (python -m tfllm.export)")
    names = []
    for name in sorted(os.listdir(models_dir)):
        path = os.path.join(models_dir, name)
        if name.startswith(".") or not os.path.isdir(path):
            continue
        if any(v.isdigit() and os.path.exists(os.path.join(path, v, "saved_model.pb"))
               for v in os.listdir(path)):
            names.append(name)
    if not names:
        raise FileNotFoundError(
            f"'{models_dir}' holds no exported model (NAME/VERSION/saved_model.pb): "
            "export a run first (python -m tfllm.export RUN_DIR)")
    return names


def models_config_text(models_dir, serving_root=None, version_policy="latest"):
    """TF Serving's `--model_config_file` text: one `config` per model in `models_dir`,
    with `base_path` under `serving_root` (where the server sees `models_dir`, e.g.
    `/models` in the docker image; default: its absolute path here)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    kind, numbers = parse_version_policy(version_policy)
    root = serving_root or os.path.abspath(models_dir)
    server_config = model_server_config_pb2.ModelServerConfig()
    for name in served_models(models_dir):
        entry = server_config.model_config_list.config.add(
            name=name, base_path=f"{root.rstrip('/')}/{name}", model_platform="tensorflow")
        policy = entry.model_version_policy
        if kind == "latest":
            policy.latest.num_versions = numbers[0]
        elif kind == "all":
            policy.all.SetInParent()
        else:
            policy.specific.versions.extend(numbers)
    return text_format.MessageToString(server_config)


def write_models_config(models_dir, serving_root=None, version_policy="latest"):
    """Write `models_dir/models.config` atomically; returns its path."""
    text = models_config_text(models_dir, serving_root, version_policy)
    path = os.path.join(models_dir, MODELS_CONFIG)
    write_atomic(path, text)
    return path

