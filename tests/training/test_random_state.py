"""Dropout's randomness is a pure function of the seed and the step: the same seed gives
the same losses whatever the steps per call, and a run restored from a checkpoint into
freshly built objects (as a rerun after a crash does) goes on exactly as the run that
was never interrupted."""

import numpy as np
import pytest

from steps import CONFIG, random_batches

DROPOUT = dict(CONFIG, num_layers=1, dropout=0.3)


def fresh_trainer(steps, grad_accum=1, seed=0, xla=False):
    """A model, optimizer and Trainer built as train.py builds them (seeded first)."""
    import keras

    from tfllm.models import GPTConfig, build_gpt
    from tfllm.training.build import build_model_and_optimizer
    from tfllm.training.loop import Trainer
    from tfllm.training.options import TrainOptions
    from tfllm.training.strategy import resolve_strategy

    options = TrainOptions(steps=steps, batch_size=8, lr=3e-3, warmup_steps=1,
                           grad_accum=grad_accum)
    strategy = resolve_strategy("default")
    keras.utils.set_random_seed(seed)
    model, optimizer = build_model_and_optimizer(
        options, strategy, lambda: build_gpt(GPTConfig(**DROPOUT)))
    # Uncompiled by default: the same seeds as under XLA, without its compile time
    # (train.py's XLA path is resumed in test_resume.py). Under XLA a call runs a program
    # compiled for 3 stacked batches, whatever its steps.
    return Trainer(model, optimizer, strategy, jit_compile=xla, grad_accum=grad_accum,
                   steps_per_call=3)


def batches(trainer, x, y, skip=0):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8, drop_remainder=True)
    return iter(trainer.distribute(dataset.skip(skip)))


def run(trainer, iterator, calls):
    """Losses of the steps, `calls` giving the steps of each call (0: one `train_step`)."""
    losses = []
    for steps in calls:
        if steps == 0:
            losses.append(float(trainer.train_step(next(iterator))[0]))
        else:
            losses += [float(v) for v in trainer.train_steps(iterator, steps)[0].numpy()]
    return losses


@pytest.mark.parametrize("grad_accum,xla", [(1, False), (2, False), (1, True)],
                         ids=["graph", "graph+accumulation", "xla"])
def test_the_same_seed_gives_the_same_losses_whatever_the_steps_per_call(grad_accum, xla):
    x, y = random_batches(steps=6, batch=8)
    one = fresh_trainer(6, grad_accum, xla=xla)
    single = run(one, batches(one, x, y), [0] * 6)
    chunked = fresh_trainer(6, grad_accum, xla=xla)
    assert run(chunked, batches(chunked, x, y), [1, 2, 3]) == single
    # Dropout acts (a different seed gives other losses from the first step on).
    other = fresh_trainer(6, grad_accum, seed=1)
    other_losses = run(other, batches(other, x, y), [6])
    assert other_losses[0] != single[0]


def test_a_restored_run_continues_exactly_as_the_uninterrupted_one(tmp_path):
    from tfllm.training.checkpoints import Checkpoints

    x, y = random_batches(steps=6, batch=8)
    whole = fresh_trainer(6)
    expected = run(whole, batches(whole, x, y), [3, 3])

    first = fresh_trainer(6)
    assert run(first, batches(first, x, y), [2, 1]) == expected[:3]
    Checkpoints(str(tmp_path), first.model, first.optimizer).save(3, data_position=3)

    second = fresh_trainer(6)  # a new process: fresh objects, then the checkpoint
    saved = Checkpoints(str(tmp_path), second.model, second.optimizer)
    assert saved.restore() is not None and int(saved.data_position) == 3
    resumed = run(second, batches(second, x, y, skip=3), [1, 2])
    np.testing.assert_array_equal(resumed, expected[3:])
