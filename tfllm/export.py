"""Export a train.py run as a SavedModel version that TF Serving loads as it is, and/or
write the models directory's models.config.

    python -m tfllm.export RUN_DIR [--name NAME] [--version N] [--output-dir saved_models]
                           [--models-config [--serving-root /models] [--version-policy P]]
    python -m tfllm.export --models-config [--output-dir saved_models] ...
    python -m tfllm.export RUN_DIR --format hf OUT_DIR    (Hugging Face: tfllm.hf_format)

The run's task (tfllm.tasks) decides what the SavedModel holds: a GPT's generation, chat,
scoring and logits signatures (tfllm.savedmodel.gpt), or a classifier's
(tfllm.tasks.classify.export).
"""

import argparse
import os

from tfllm.cli import exit_at_once, exit_code, import_tensorflow_quietly
from tfllm.savedmodel.tf_serving import parse_version_policy, write_models_config
from tfllm.tasks import require, task_of


def export_run(run_dir, output_dir="saved_models", name=None, version=None):
    """Export a run directory as its task does; returns the new version's path."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(
            f"no run directory '{run_dir}': give a directory written by train.py (runs/NAME)")
    task = task_of(run_dir)
    import_tensorflow_quietly()
    return task.export(run_dir, output_dir, name, version)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tfllm.export",
        description="Export a train.py run as a SavedModel version for TF Serving, and/or "
                    "write the models directory's models.config.")
    parser.add_argument("run_dir", nargs="?",
                        help="run directory written by train.py (runs/NAME)")
    parser.add_argument("--output-dir", default="saved_models",
                        help="models directory TF Serving watches (default: saved_models)")
    parser.add_argument("--name", help="model name (default: the run directory's name)")
    parser.add_argument("--version", type=int,
                        help="integer version (default: one more than the latest)")
    parser.add_argument("--models-config", action="store_true",
                        help="write OUTPUT_DIR/models.config listing every exported model")
    parser.add_argument("--serving-root",
                        help="where the server sees OUTPUT_DIR, for base_path (e.g. /models "
                             "in docker; default: its absolute path)")
    parser.add_argument("--version-policy", default="latest",
                        help="'latest', 'latest:N', 'all' or 'specific:1,2' (default: latest)")
    parser.add_argument("out_dir", nargs="?", help="--format hf: the directory to write")
    parser.add_argument("--format", choices=("savedmodel", "hf"), default="savedmodel",
                        help="savedmodel (TF Serving) or hf: a Hugging Face GPT-2 directory")
    args = parser.parse_intermixed_args(argv)  # RUN --format hf OUT: positionals apart

    def run():
        if args.format == "hf":
            if args.run_dir is None or args.out_dir is None:
                raise ValueError("--format hf takes a run directory and an output directory")
            require(args.run_dir, "--format hf", lambda task: task.generates)
            import_tensorflow_quietly()
            from tfllm.hf_format import export_hf

            return print(export_hf(args.run_dir, args.out_dir))
        if args.out_dir is not None:
            raise ValueError(f"a second directory ('{args.out_dir}') is for --format hf: "
                             "SavedModels go to --output-dir")
        if args.run_dir is None and not args.models_config:
            raise ValueError("give a run directory to export, or --models-config")
        parse_version_policy(args.version_policy)  # refuse before anything is written
        if args.run_dir is not None:
            print(export_run(args.run_dir, args.output_dir, args.name, args.version))
        if args.models_config:
            print(write_models_config(args.output_dir, args.serving_root, args.version_policy))

    return exit_code(run)


if __name__ == "__main__":
    exit_at_once(main())
