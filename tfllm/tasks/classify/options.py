"""The options of `train.py --task classify` (on top of the shared ones)."""

import dataclasses

from tfllm.training.options import TrainOptions, option

# The builder's POOLINGS (tfllm.models.classifier), repeated so flags parse without Keras.
POOLINGS = ("mean", "max", "cls", "last")


@dataclasses.dataclass
class ClassifyOptions(TrainOptions):
    task: str = option("classify", "what to train (see the task table in --help)")
    pooling: str = option("mean", "mean or max over the tokens, a class token, or the last "
                          "token (a GPT from --init)", choices=POOLINGS)
    class_weights: bool = option(False, "weigh each class by its inverse frequency in --data")
    token_dropout: float = option(0.0, "drop this share of each text's tokens while "
                                  "training (word dropout)")
    patience: int = option(0, "stop after this many evaluations without a better validation "
                           "accuracy; 0: off")
    members: int = option(1, "train an ensemble of this many classifiers as one model (their "
                          "log-probabilities averaged); each costs a classifier's time")
    text_column: str = option("text", "the text column of a CSV/JSONL file")
    label_column: str = option("label", "the label column of a CSV/JSONL file")

    def __post_init__(self):
        super().__post_init__()
        if not self.data:
            raise ValueError("--task classify needs --data FILE (no built-in default)")
        if not 0.0 <= self.token_dropout < 1.0:
            raise ValueError(f"--token-dropout must be in [0, 1), got {self.token_dropout}")
        if self.members < 1:
            raise ValueError(f"--members must be 1 or more, got {self.members}")
        if self.patience < 0:
            raise ValueError(f"--patience must be 0 (off) or positive, got {self.patience}")
