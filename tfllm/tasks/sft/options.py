"""The options of `train.py --task sft` (on top of the shared ones)."""

import dataclasses

from tfllm.training.options import TrainOptions, option


@dataclasses.dataclass
class SFTOptions(TrainOptions):
    task: str = option("sft", "what to train (see the task table in --help)")
    lora_rank: int = option(0, "train only rank-N LoRA adapters on the attention and "
                            "feed-forward projections (merged into the export); 0: train "
                            "every weight")

    def __post_init__(self):
        super().__post_init__()
        if self.lora_rank < 0:
            raise ValueError(f"--lora-rank must be 0 (off) or positive, got {self.lora_rank}")
        if not self.data:
            raise ValueError("--task sft needs --data FILE (no built-in default)")
