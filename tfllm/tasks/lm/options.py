"""The options of `train.py --task lm` (on top of the shared ones)."""

import dataclasses

from tfllm.training.options import TrainOptions, option


@dataclasses.dataclass
class LMOptions(TrainOptions):
    random_windows: bool = option(False, "train on windows at random offsets of the text "
                                  "(nanoGPT's sampling) instead of fixed, shuffled cuts")
    sample_tokens: int = option(80, "tokens generated per prompt for samples.txt; 0: no "
                                "samples")

    def __post_init__(self):
        super().__post_init__()
        if self.sample_tokens < 0:
            raise ValueError(f"--sample-tokens must be 0 (no samples.txt) or positive, got "
                             f"{self.sample_tokens}")
