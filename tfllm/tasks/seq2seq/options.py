"""The options of `train.py --task seq2seq` (on top of the shared ones)."""

import dataclasses

from tfllm.training.options import TrainOptions, option


@dataclasses.dataclass
class Seq2SeqOptions(TrainOptions):
    task: str = option("seq2seq", "what to train (see the task table in --help)")
    reverse: bool = option(False, "learn the second column -> the first (zh->en from an "
                           "english<TAB>chinese file)")
    eval_pairs: int = option(500, "validation pairs translated at the end for BLEU and chrF; "
                             "0: none")

    def __post_init__(self):
        super().__post_init__()
        if not self.data:
            raise ValueError("--task seq2seq needs --data FILE of source<TAB>target rows (no "
                             "built-in default)")
        if self.init:
            raise ValueError("--task seq2seq trains an encoder-decoder from scratch: drop "
                             "--init")
        if self.eval_pairs < 0:
            raise ValueError(f"--eval-pairs must be 0 (none) or positive, got "
                             f"{self.eval_pairs}")
