"""Checkpoints: keep the last N, restore the newest readable one, warn and fall back when
one is truncated or corrupted, and write nothing in the run directory from a worker."""

import os

import numpy as np
import pytest


def make_state(tmp_path, keep=3, chief=True):
    import keras

    from tfllm.training.checkpoints import Checkpoints

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.AdamW()
    optimizer.build(model.trainable_variables)
    return model, Checkpoints(str(tmp_path / "checkpoints"), model, optimizer, keep=keep,
                              chief=chief)


def saved_weights(model, checkpoints, steps):
    weights = {}
    for step in steps:
        model.layers[0].kernel.assign(np.full((3, 2), float(step), np.float32))
        checkpoints.save(step, data_position=10 * step)
        weights[step] = model.layers[0].kernel.numpy()
    return weights


def test_keeps_the_last_n_and_resumes_step_and_data_position(tmp_path):
    model, checkpoints = make_state(tmp_path, keep=2)
    assert checkpoints.restore() is None  # nothing yet
    saved_weights(model, checkpoints, [1, 2, 3])
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.index")) == \
        ["ckpt-2.index", "ckpt-3.index"]
    model2, fresh = make_state(tmp_path, keep=2)
    assert fresh.restore().endswith("ckpt-3")
    assert int(fresh.step) == 3 and int(fresh.data_position) == 30
    np.testing.assert_array_equal(model2.layers[0].kernel.numpy(), np.full((3, 2), 3.0))


@pytest.mark.parametrize("damage", ["truncated data", "truncated index", "garbage index"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path, damage):
    model, checkpoints = make_state(tmp_path)
    weights = saved_weights(model, checkpoints, [1, 2])
    directory = tmp_path / "checkpoints"
    target = directory / ("ckpt-2.data-00000-of-00001" if "data" in damage else "ckpt-2.index")
    data = target.read_bytes()
    target.write_bytes(b"\x00garbage" * 4 if "garbage" in damage else data[: len(data) // 2])

    warnings = []
    model2, fresh = make_state(tmp_path)
    assert fresh.restore(warn=warnings.append).endswith("ckpt-1")
    assert len(warnings) == 1 and "ckpt-2" in warnings[0] and "using ckpt-1" in warnings[0]
    assert int(fresh.step) == 1
    np.testing.assert_array_equal(model2.layers[0].kernel.numpy(), weights[1])


def test_no_readable_checkpoint_is_an_error(tmp_path):
    model, checkpoints = make_state(tmp_path)
    saved_weights(model, checkpoints, [1])
    (tmp_path / "checkpoints" / "ckpt-1.index").write_bytes(b"broken")
    _, fresh = make_state(tmp_path)
    with pytest.raises(ValueError, match="no checkpoint .* can be read"):
        fresh.restore(warn=lambda message: None)


def test_a_worker_saves_to_a_temporary_place_and_leaves_nothing(tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    model, checkpoints = make_state(tmp_path / "run", chief=False)
    saved_weights(model, checkpoints, [1, 2])
    assert not (tmp_path / "run").exists()
    assert os.listdir(scratch) == []
