"""GPTConfig: the few numbers that define a model, with named presets."""

import dataclasses
import json
import os
import typing

from tfllm.atomic import write_json
from tfllm.layers.embedding import POSITION_TYPES

PRESETS = {
    # Trains in minutes on 2 CPU cores: the default of train.py. Dropout because the
    # built-in corpus (~130k tokens) is small enough to memorise.
    "tiny": dict(vocab_size=2048, context_length=128, num_layers=4, num_heads=4,
                 embed_dim=128, dropout=0.1),
    # A first real model for one GPU (or a patient CPU).
    "small": dict(vocab_size=8192, context_length=512, num_layers=6, num_heads=6,
                  embed_dim=384),
    # GPT-2 124M: the open model whose weights tfllm's layout matches.
    "gpt2": dict(vocab_size=50257, context_length=1024, num_layers=12, num_heads=12,
                 embed_dim=768),
}


class ConfigFile:
    """Presets and the JSON round trip of a model config dataclass: `from_preset(name,
    **overrides)`, `to_dict`/`from_dict` (unknown fields refused), `save`/`load`."""

    PRESETS: typing.ClassVar[dict] = {}

    @classmethod
    def from_preset(cls, name, **overrides):
        if name not in cls.PRESETS:
            raise ValueError(f"unknown preset {name!r}: choose one of {sorted(cls.PRESETS)}")
        return cls.from_dict({**cls.PRESETS[name], **overrides})

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}: valid are {sorted(fields)}")
        return cls(**values)

    def save(self, path):
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"no model config at '{path}': point at a run directory")
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


@dataclasses.dataclass
class GPTConfig(ConfigFile):
    """A GPT's shape. `intermediate_dim` defaults to 4x `embed_dim`."""

    PRESETS: typing.ClassVar[dict] = PRESETS

    vocab_size: int = 2048
    context_length: int = 128
    num_layers: int = 4
    num_heads: int = 4
    embed_dim: int = 128
    intermediate_dim: int = 0
    dropout: float = 0.0
    position_type: str = "learned"
    tie_embeddings: bool = True
    layer_norm_epsilon: float = 1e-5
    use_bias: bool = True
    pad_id: int = 0
    # Ids from this one up only pad the embedding table (GPT-2: 50257 tokens in a table of
    # 50304, pad_id 50257): never predicted, their logits are -1e9. 0: every id is a token.
    real_vocab_size: int = 0

    def __post_init__(self):
        if not self.intermediate_dim:
            self.intermediate_dim = 4 * self.embed_dim
        for name in ("vocab_size", "context_length", "num_layers", "num_heads", "embed_dim"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}: "
                "pick a multiple of the head count")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad_id={self.pad_id} is not an id of the vocabulary "
                             f"(0..{self.vocab_size - 1}): pick a row of the embedding table")
        if not 0 <= self.real_vocab_size <= self.vocab_size:
            raise ValueError(f"real_vocab_size={self.real_vocab_size} must be between 0 (all "
                             f"ids are tokens) and vocab_size={self.vocab_size}")
        if self.position_type not in POSITION_TYPES:
            raise ValueError(
                f"unknown position_type {self.position_type!r}: use one of {POSITION_TYPES}")
