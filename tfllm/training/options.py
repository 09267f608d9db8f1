"""The options of a training run (what train.py's flags fill in). No TensorFlow here,
so the command line parses and validates in a blink."""

import dataclasses
import os

from tfllm.training.strategy import STRATEGIES

PRECISIONS = ("fp32", "bf16", "fp16")
# lm: pretrain on text; sft: fine-tune on conversations (JSONL); classify: labelled text.
TASKS = ("lm", "sft", "classify")
POOLINGS = ("mean", "max", "cls", "last")


@dataclasses.dataclass
class TrainOptions:
    task: str = "lm"                    # lm, sft or classify
    data: str = ""                      # files/dirs/globs; empty: the built-in corpus
    val: str = ""                       # validation file (sft, classify); empty: split --data
    preset: str = "tiny"
    init: str = ""                      # a train.py run dir or GPT-2 directory to start from
    lora_rank: int = 0                  # > 0: train LoRA adapters of this rank only
    pooling: str = "mean"               # classify: mean, cls (class token) or last (GPT)
    class_weights: bool = False         # classify: weigh classes by inverse frequency
    token_dropout: float = 0.0          # classify: drop this share of tokens in training
    patience: int = 0                   # classify: stop after N evaluations without gain
    members: int = 1                    # classify: an ensemble of this many classifiers
    text_column: str = "text"           # classify: CSV/JSONL column names
    label_column: str = "label"
    overrides: dict = dataclasses.field(default_factory=dict)  # GPTConfig fields
    tokenizer: str = "sentencepiece"    # or "char"
    steps: int = 600
    batch_size: int = 32
    seq_len: int = 0                    # 0: the preset's context length
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    name: str = ""                      # default: the preset's name
    val_fraction: float = 0.1
    eval_every: int = 200
    eval_batches: int = 20
    checkpoint_every: int = 200
    strategy: str = "auto"              # auto, default, mirrored, multiworker, tpu
    precision: str = "fp32"             # fp32, bf16 or fp16 (mixed precision)
    xla: bool = True
    grad_accum: int = 1                 # micro-batches per optimizer step
    steps_per_call: int = 10            # optimizer steps per call of the compiled loop
    beta2: float = 0.95                 # AdamW's second-moment decay
    random_windows: bool = False        # lm: windows at random offsets, not fixed cuts
    clip_norm: float = 1.0              # global gradient norm; 0: no clipping
    keep_checkpoints: int = 3
    log_every: int = 10                 # steps between metrics.csv / TensorBoard rows
    runs_dir: str = "runs"
    export_dir: str = "saved_models"
    export: bool = True
    sample_tokens: int = 80

    def __post_init__(self):
        base = os.path.basename(os.path.normpath(self.init)) if self.init else self.preset
        # A fine-tune must not resume (or overwrite) the run it starts from.
        self.name = self.name or (base if self.task == "lm" else f"{base}-{self.task}")
        if self.init:
            fixed = sorted(set(self.overrides) - {"dropout", "context_length"})
            if fixed:
                flags = ", ".join("--" + f.replace("_", "-") for f in fixed)
                raise ValueError(f"--init takes the model's shape from the checkpoint: drop "
                                 f"{flags} (only --dropout and a shorter --context-length apply)")
            if self.tokenizer != "sentencepiece":
                raise ValueError("--init uses the checkpoint's GPT-2 tokenizer: drop --tokenizer")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}: choose one of {', '.join(TASKS)}")
        if self.lora_rank < 0:
            raise ValueError(f"--lora-rank must be 0 (off) or positive, got {self.lora_rank}")
        if self.lora_rank and self.task != "sft":
            raise ValueError("--lora-rank applies to --task sft only: drop it")
        if self.task != "lm" and not self.data:
            raise ValueError(f"--task {self.task} needs --data FILE (no built-in default)")
        if not 0.0 <= self.token_dropout < 1.0:
            raise ValueError(f"--token-dropout must be in [0, 1), got {self.token_dropout}")
        if self.members < 1:
            raise ValueError(f"--members must be 1 or more, got {self.members}")
        if self.members > 1 and self.task != "classify":
            raise ValueError("--members applies to --task classify only: drop it")
        if self.patience < 0:
            raise ValueError(f"--patience must be 0 (off) or positive, got {self.patience}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}: choose one of "
                             f"{', '.join(POOLINGS)}")
        for field in ("steps", "batch_size", "eval_every", "checkpoint_every", "eval_batches",
                      "grad_accum", "keep_checkpoints", "log_every", "steps_per_call"):
            if getattr(self, field) <= 0:
                raise ValueError(f"--{field.replace('_', '-')} must be positive, "
                                 f"got {getattr(self, field)}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if self.sample_tokens < 0:
            raise ValueError(f"--sample-tokens must be 0 (no samples.txt) or positive, got "
                             f"{self.sample_tokens}")
        if not 0.0 < self.beta2 < 1.0:
            raise ValueError(f"--beta2 must be in (0, 1), got {self.beta2}")
        if self.clip_norm < 0:
            raise ValueError(f"--clip-norm must be 0 (off) or positive, got {self.clip_norm}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}: choose one of "
                             f"{', '.join(STRATEGIES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}: choose one of "
                             f"{', '.join(PRECISIONS)}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"--batch-size {self.batch_size} is not divisible by --grad-accum "
                             f"{self.grad_accum}: each step splits the batch into that many "
                             "equal micro-batches")
        if self.tokenizer not in ("sentencepiece", "char"):
            raise ValueError(f"unknown tokenizer {self.tokenizer!r}: use sentencepiece or char")
        if os.sep in self.name or self.name.startswith("."):
            raise ValueError(f"--name {self.name!r} must be a plain directory name")
