"""The options of a training run (what train.py's flags fill in). No TensorFlow here,
so the command line parses and validates in a blink."""

import dataclasses
import os


@dataclasses.dataclass
class TrainOptions:
    data: str = ""                      # files/dirs/globs; empty: the built-in corpus
    preset: str = "tiny"
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
    strategy: str = "auto"
    xla: bool = True
    runs_dir: str = "runs"
    export_dir: str = "saved_models"
    export: bool = True
    sample_tokens: int = 80

    def __post_init__(self):
        self.name = self.name or self.preset
        for field in ("steps", "batch_size", "eval_every", "checkpoint_every", "eval_batches"):
            if getattr(self, field) <= 0:
                raise ValueError(f"--{field.replace('_', '-')} must be positive, "
                                 f"got {getattr(self, field)}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if self.tokenizer not in ("sentencepiece", "char"):
            raise ValueError(f"unknown tokenizer {self.tokenizer!r}: use sentencepiece or char")
        if os.sep in self.name or self.name.startswith("."):
            raise ValueError(f"--name {self.name!r} must be a plain directory name")
