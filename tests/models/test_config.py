"""GPTConfig: presets, overrides, JSON round trip, validation errors."""

import dataclasses
import json
import os

import pytest

from tfllm.models import PRESETS, GPTConfig


def test_presets_exist():
    assert {"tiny", "small", "gpt2"} <= set(PRESETS)
    for name in PRESETS:
        config = GPTConfig.from_preset(name)
        assert config.embed_dim % config.num_heads == 0
        assert config.intermediate_dim == 4 * config.embed_dim


def test_gpt2_preset_is_gpt2_124m():
    config = GPTConfig.from_preset("gpt2")
    assert (config.num_layers, config.embed_dim, config.num_heads) == (12, 768, 12)
    assert (config.context_length, config.vocab_size) == (1024, 50257)
    assert config.intermediate_dim == 3072
    assert config.tie_embeddings and config.position_type == "learned"
    assert config.layer_norm_epsilon == 1e-5 and config.use_bias


def test_defaults_and_derived_intermediate_dim():
    assert GPTConfig(embed_dim=64, num_heads=4).intermediate_dim == 256
    config = GPTConfig(embed_dim=64, num_heads=4, intermediate_dim=100)
    assert config.intermediate_dim == 100


def test_overrides():
    config = GPTConfig.from_preset("tiny", num_layers=2, dropout=0.1, tie_embeddings=False)
    assert (config.num_layers, config.dropout, config.tie_embeddings) == (2, 0.1, False)
    assert config.embed_dim == PRESETS["tiny"]["embed_dim"]  # the rest from the preset
    # Overriding the width re-derives the feed-forward width.
    assert GPTConfig.from_preset("tiny", embed_dim=64).intermediate_dim == 256


def test_dict_round_trip():
    config = GPTConfig.from_preset("small", dropout=0.2, position_type="sinusoidal")
    assert GPTConfig.from_dict(config.to_dict()) == config
    assert set(config.to_dict()) == {f.name for f in dataclasses.fields(GPTConfig)}


def test_json_save_and_load_round_trip(tmp_path):
    config = GPTConfig.from_preset("tiny", num_layers=3, tie_embeddings=False, pad_id=1)
    path = str(tmp_path / "config.json")
    config.save(path)
    assert os.listdir(tmp_path) == ["config.json"]  # no temporary file left behind
    with open(path, encoding="utf-8") as f:
        assert json.load(f)["num_layers"] == 3  # plain, readable JSON
    assert GPTConfig.load(path) == config
    config.save(path)  # overwriting is fine
    assert GPTConfig.load(path) == config


def test_load_missing_file(tmp_path):
    missing = str(tmp_path / "nope" / "config.json")
    with pytest.raises(FileNotFoundError, match="nope"):
        GPTConfig.load(missing)


def test_unknown_preset():
    with pytest.raises(ValueError, match="'huge'") as error:
        GPTConfig.from_preset("huge")
    assert "gpt2" in str(error.value)  # names the valid choices


def test_unknown_field():
    with pytest.raises(ValueError, match="num_layer"):
        GPTConfig.from_preset("tiny", num_layer=2)


def test_embed_dim_must_be_divisible_by_num_heads():
    with pytest.raises(ValueError, match=r"embed_dim=100.*num_heads=3"):
        GPTConfig(embed_dim=100, num_heads=3)
    with pytest.raises(ValueError, match="num_heads=5"):
        GPTConfig.from_preset("tiny", num_heads=5)


@pytest.mark.parametrize("field,value,match", [
    ("num_layers", 0, "num_layers"),
    ("vocab_size", -1, "vocab_size"),
    ("dropout", 1.0, "dropout"),
    ("position_type", "rotary", "'rotary'"),
])
def test_invalid_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**{field: value})


def test_load_with_unknown_field_names_it(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**GPTConfig().to_dict(), "num_layer": 2}))
    with pytest.raises(ValueError, match="num_layer"):
        GPTConfig.load(str(path))
