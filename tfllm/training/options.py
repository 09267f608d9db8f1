"""The options of a training run, declared once: each is a dataclass field whose metadata
holds its help text and choices. train.py's flags and --help are generated from these
fields, so a new option is one field. `TrainOptions` holds what every task shares; each
task subclasses it with its own fields (tfllm/tasks/<task>/options.py). No TensorFlow
here, so the command line parses and validates in a blink."""

import argparse
import dataclasses
import os

from tfllm.training.strategy import STRATEGIES

PRECISIONS = ("fp32", "bf16", "fp16")
TOKENIZERS = ("sentencepiece", "char")


def option(default, help, *, choices=None, kind=None):
    """A dataclass field declaring a train.py option: its default, its --help text,
    optionally the values it accepts and its type (needed when the default is None)."""
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "kind": kind or type(default)})


# GPTConfig fields a flag may set over the preset's (None: the preset's own value).
MODEL_FIELDS = ("vocab_size", "context_length", "num_layers", "num_heads", "embed_dim",
                "intermediate_dim", "dropout", "position_type")


@dataclasses.dataclass
class TrainOptions:
    task: str = option("lm", "what to train (see the task table in --help)")
    data: str = option("", "training data: lm: text file(s), directory or glob, comma-"
                       "separated, empty for CPython's bundled documentation (pydoc_data); "
                       "sft/classify: the training file")
    val: str = option("", "validation data, in --data's format (default: --val-fraction of "
                      "--data held out)")
    preset: str = option("tiny", "model size: tiny, small or gpt2")
    init: str = option("", "start from a train.py run directory (runs/NAME) or pretrained "
                       "GPT-2 weights: a Hugging Face directory (config.json, "
                       "model.safetensors, vocab.json, merges.txt) or a keras-hub GPT2 "
                       "preset; the model shape and tokenizer come from it")
    vocab_size: int = option(None, "override the preset's tokenizer/model vocabulary size "
                             "(SentencePiece)", kind=int)
    context_length: int = option(None, "override the preset's longest sequence the model "
                                 "accepts", kind=int)
    num_layers: int = option(None, "override the preset's transformer blocks", kind=int)
    num_heads: int = option(None, "override the preset's attention heads per block", kind=int)
    embed_dim: int = option(None, "override the preset's model width", kind=int)
    intermediate_dim: int = option(None, "override the preset's feed-forward width (default "
                                   "4x width)", kind=int)
    dropout: float = option(None, "override the preset's dropout rate", kind=float)
    position_type: str = option(None, "override the preset's position embedding",
                                choices=("learned", "sinusoidal"), kind=str)
    untied_embeddings: bool = option(False, "give the output layer its own weights instead "
                                     "of the input embedding's")
    tokenizer: str = option("sentencepiece", "SentencePiece BPE trained on the data, or "
                            "characters", choices=TOKENIZERS)
    steps: int = option(600, "optimizer steps in total")
    batch_size: int = option(32, "global batch (windows, conversations rows or texts)")
    seq_len: int = option(0, "tokens per training window; 0: the preset's context length "
                          "(classify: the longest training text; seq2seq: the longest side "
                          "of a training pair)")
    lr: float = option(2e-3, "peak learning rate (AdamW)")
    warmup_steps: int = option(100, "linear warm-up steps before the cosine decay")
    weight_decay: float = option(0.1, "decoupled weight decay (not on norms, biases, "
                                 "embeddings)")
    seed: int = option(0, "seed for weights, data order, samples")
    name: str = option("", "run name: runs/NAME and saved_models/NAME (default: the preset's "
                       "or --init's name, plus -TASK for a fine-tune); rerunning a name "
                       "resumes it")
    val_fraction: float = option(0.1, "share of --data held out for validation (lm: the end "
                                 "of the token stream)")
    eval_every: int = option(200, "steps between validations")
    eval_batches: int = option(20, "validation batches per periodic evaluation (the final "
                               "one uses all)")
    checkpoint_every: int = option(200, "steps between checkpoints")
    keep_checkpoints: int = option(3, "how many of the latest checkpoints to keep")
    log_every: int = option(10, "steps between metrics.csv/TensorBoard rows (and log lines)")
    strategy: str = option("auto", "tf.distribute strategy: auto (TPU if one resolves, "
                           "multiworker if TF_CONFIG names several workers, mirrored if "
                           "several GPUs, else default)", choices=STRATEGIES)
    precision: str = option("fp32", "mixed precision: float32 weights, softmax and loss; "
                            "fp16 adds loss scaling", choices=PRECISIONS)
    xla: bool = option(True, "compile the train and eval steps with XLA (faster, on CPU "
                       "too)")
    grad_accum: int = option(1, "split each step's batch into this many micro-batches (the "
                             "same update with less memory)")
    steps_per_call: int = option(10, "optimizer steps run in one call of the compiled train "
                                 "loop (less Python per step; a call still ends at every log, "
                                 "eval and checkpoint step, and the result does not depend on "
                                 "it)")
    beta2: float = option(0.95, "AdamW's second-moment decay (nanoGPT's small-batch recipes "
                          "use 0.99)")
    clip_norm: float = option(1.0, "clip the gradient's global norm (over all replicas) to "
                              "this; 0: off")
    runs_dir: str = option("runs", "where run directories go")
    export_dir: str = option("saved_models", "where SavedModels go")
    export: bool = option(True, "export a SavedModel at the end (--no-export skips it)")

    @property
    def overrides(self):
        """The GPTConfig fields the flags set over the preset's."""
        values = {f: getattr(self, f) for f in MODEL_FIELDS if getattr(self, f) is not None}
        if self.untied_embeddings:
            values["tie_embeddings"] = False
        return values

    def __post_init__(self):
        base = os.path.basename(os.path.normpath(self.init)) if self.init else self.preset
        # A fine-tune must not resume (or overwrite) the run it starts from.
        self.name = self.name or (base if self.task == "lm" else f"{base}-{self.task}")
        for field in dataclasses.fields(self):
            choices = field.metadata.get("choices")
            value = getattr(self, field.name)
            if choices and value is not None and value not in choices:
                raise ValueError(f"unknown {field.name.replace('_', ' ')} {value!r}: choose "
                                 f"one of {', '.join(choices)}")
        if self.init:
            fixed = sorted(set(self.overrides) - {"dropout", "context_length"})
            if fixed:
                flags = ", ".join("--" + f.replace("_", "-") for f in fixed)
                raise ValueError(f"--init takes the model's shape from the checkpoint: drop "
                                 f"{flags} (only --dropout and a shorter --context-length apply)")
            if self.tokenizer != "sentencepiece":
                raise ValueError("--init uses the checkpoint's GPT-2 tokenizer: drop --tokenizer")
        for field in ("steps", "batch_size", "eval_every", "checkpoint_every", "eval_batches",
                      "grad_accum", "keep_checkpoints", "log_every", "steps_per_call"):
            if getattr(self, field) <= 0:
                raise ValueError(f"--{field.replace('_', '-')} must be positive, "
                                 f"got {getattr(self, field)}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if not 0.0 < self.beta2 < 1.0:
            raise ValueError(f"--beta2 must be in (0, 1), got {self.beta2}")
        if self.clip_norm < 0:
            raise ValueError(f"--clip-norm must be 0 (off) or positive, got {self.clip_norm}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"--batch-size {self.batch_size} is not divisible by --grad-accum "
                             f"{self.grad_accum}: each step splits the batch into that many "
                             "equal micro-batches")
        if os.sep in self.name or self.name.startswith("."):
            raise ValueError(f"--name {self.name!r} must be a plain directory name")


def flag(name):
    return "--" + name.replace("_", "-")


def add_flags(parser, fields, title=None):
    """Add one flag per dataclass field to `parser` (in an argument group titled `title`).
    Flags default to absent (argparse.SUPPRESS), so the parsed namespace holds only what
    the command line gave; the dataclass supplies the defaults."""
    group = parser.add_argument_group(title) if title else parser
    for field in fields:
        meta = field.metadata
        default = "" if field.default in (None, "") else f" (default: {field.default!r})"
        if meta["kind"] is bool:
            action = argparse.BooleanOptionalAction if field.default else "store_true"
            group.add_argument(flag(field.name), action=action, default=argparse.SUPPRESS,
                               help=meta["help"] + default)
        else:
            # Choices are checked by the dataclass, which refuses in one line.
            choices = f"; one of {', '.join(meta['choices'])}" if meta["choices"] else ""
            group.add_argument(flag(field.name), type=meta["kind"], default=argparse.SUPPRESS,
                               help=meta["help"] + choices + default)
