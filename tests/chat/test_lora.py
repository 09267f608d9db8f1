"""tfllm.lora: Keras LoRA adapters on a GPT train alone, merge into a plain GPT with the
same outputs, and survive a checkpoint. (The exported SavedModel of a LoRA run is checked
against the adapted model in test_sft_cli.py.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfllm.lora import enable_lora, lora_variables, merged_gpt
from tfllm.models import GPTConfig, build_gpt

CONFIG = GPTConfig(vocab_size=97, context_length=32, num_layers=2, num_heads=2, embed_dim=16)
ADAPTED = ("attention/qkv", "attention/output", "ffn_in", "ffn_out")


def lora_model(rank=2, seed=0):
    """A GPT with adapters whose b matrices are random (b starts at zero, which would make
    every comparison trivially pass)."""
    keras.utils.set_random_seed(seed)
    model = build_gpt(CONFIG)
    enable_lora(model, rank)
    for variable in lora_variables(model):
        if variable.path.endswith("lora_kernel_b"):
            variable.assign(np.random.default_rng(seed).normal(0, 0.2, variable.shape))
    return model


def token_ids(seed=1):
    ids = np.random.default_rng(seed).integers(1, CONFIG.vocab_size, size=(3, 12))
    ids[1, 9:] = CONFIG.pad_id  # padding too
    return ids.astype(np.int32)


def test_only_the_adapters_train():
    keras.utils.set_random_seed(0)
    model = build_gpt(CONFIG)
    before = model(token_ids())
    adapters = enable_lora(model, rank=2)
    expected = {f"block_{i}/{layer}/lora_kernel_{ab}" for i in range(CONFIG.num_layers)
                for layer in ADAPTED for ab in "ab"}
    assert {v.path for v in model.trainable_variables} == expected
    assert {v.path for v in adapters} == expected
    assert len(model.trainable_variables) == 16
    # b starts at zero: the adapted model starts as the base model.
    np.testing.assert_array_equal(model(token_ids()), before)


def test_a_train_step_changes_the_adapters_and_nothing_else():
    from tfllm.training.loop import Trainer
    from tfllm.training.optimizer import build_optimizer

    model = lora_model()
    frozen = {v.path: v.numpy().copy() for v in model.weights if "lora" not in v.path}
    adapters = {v.path: v.numpy().copy() for v in lora_variables(model)}
    optimizer = build_optimizer(model, 1e-2, 10, 0)
    trainer = Trainer(model, optimizer, tf.distribute.get_strategy())
    ids = token_ids()
    batch = (tf.constant(ids[:, :-1]), tf.constant(ids[:, 1:]))
    loss, _, _ = trainer.train_step(next(iter(trainer.distribute(
        tf.data.Dataset.from_tensors(batch)))))
    assert np.isfinite(float(loss))
    for v in model.weights:
        if v.path in frozen:
            np.testing.assert_array_equal(v.numpy(), frozen[v.path], err_msg=v.path)
    assert all(not np.array_equal(v.numpy(), adapters[v.path]) for v in lora_variables(model))


def test_merged_gpt_is_plain_and_gives_the_same_logits():
    model = lora_model()
    merged = merged_gpt(model, CONFIG)
    assert not any("lora" in v.path for v in merged.weights)
    assert len(merged.trainable_variables) == len(build_gpt(CONFIG).trainable_variables)
    ids = token_ids()
    real = ids != CONFIG.pad_id
    np.testing.assert_allclose(np.asarray(merged(ids))[real], np.asarray(model(ids))[real],
                               atol=1e-5, rtol=0)
    # The adapters matter: the base kernels alone give other logits.
    base = build_gpt(CONFIG)
    base.set_weights([v.numpy() for v in model.weights if "lora" not in v.path])
    assert np.abs(np.asarray(base(ids)) - np.asarray(model(ids)))[real].max() > 1e-3


def test_checkpoints_save_and_restore_the_adapters(tmp_path):
    from tfllm.training.checkpoints import Checkpoints
    from tfllm.training.optimizer import build_optimizer

    model = lora_model(seed=0)
    saved = Checkpoints(str(tmp_path / "ckpt"), model, build_optimizer(model, 1e-3, 10, 0))
    saved.save(step=5, data_position=5)
    fresh = lora_model(seed=7)  # other base weights and adapters
    restored = Checkpoints(str(tmp_path / "ckpt"), fresh, build_optimizer(fresh, 1e-3, 10, 0))
    assert restored.restore() is not None and int(restored.step) == 5
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    np.testing.assert_array_equal(fresh(token_ids()), model(token_ids()))


def test_rank_larger_than_the_width_is_refused():
    model = build_gpt(CONFIG)
    with pytest.raises(ValueError, match="lower --lora-rank"):
        enable_lora(model, CONFIG.embed_dim + 1)
    with pytest.raises(ValueError, match="must be positive"):
        enable_lora(model, 0)
