"""The train loop's arithmetic, in process under the default strategy: gradient
accumulation, clipping, weight decay, the loss over real tokens."""

import numpy as np
import pytest

from steps import CONFIG, random_batches, train_steps


@pytest.mark.parametrize("xla", [True, False])
def test_grad_accumulation_gives_the_same_update_as_one_big_batch(xla):
    x, y = random_batches(steps=3, batch=8)
    # A tight clip norm, so clipping acts on every step: it must see the summed gradient.
    one = train_steps(x, y, batch=8, grad_accum=1, clip_norm=0.5, xla=xla)
    four = train_steps(x, y, batch=8, grad_accum=4, clip_norm=0.5, xla=xla)
    np.testing.assert_allclose(four[0], one[0], rtol=1e-5)  # loss at every step
    np.testing.assert_allclose(four[1], one[1], rtol=1e-5)  # gradient norm before clipping
    assert min(one[1]) > 0.5  # clipping was active
    for a, b in zip(four[2], one[2]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_loss_is_the_mean_over_real_target_tokens():
    import keras
    import tensorflow as tf

    x, y = random_batches(steps=1, batch=8)
    losses, _, _ = train_steps(x, y, batch=8, lr=1e-9)
    from tfllm.models import GPTConfig, build_gpt

    keras.utils.set_random_seed(0)
    logits = build_gpt(GPTConfig(**CONFIG))(x)
    per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    expected = float(tf.reduce_sum(per_token * (y != 0)) / np.sum(y != 0))
    assert losses[0] == pytest.approx(expected, rel=1e-5)


def test_weight_decay_skips_norms_biases_and_embeddings():
    import keras
    import tensorflow as tf

    from tfllm.models import GPTConfig, build_gpt
    from tfllm.training.optimizer import build_optimizer

    model = build_gpt(GPTConfig(**CONFIG, tie_embeddings=False))
    optimizer = build_optimizer(model, peak_lr=0.1, total_steps=10, warmup_steps=0,
                                weight_decay=0.5)
    before = {v.path: np.array(v) for v in model.trainable_variables}
    # Zero gradients: Adam moves nothing, so only the decoupled decay (lr * wd) acts.
    optimizer.apply([tf.zeros(v.shape) for v in model.trainable_variables],
                    model.trainable_variables)
    decayed = set()
    for v in model.trainable_variables:
        after = np.array(v)
        if np.allclose(after, before[v.path]):
            continue
        np.testing.assert_allclose(after, before[v.path] * (1 - 0.1 * 0.5), rtol=1e-6)
        decayed.add(v.path)
    kernels = {v.path for v in model.trainable_variables if v.path.endswith("/kernel")}
    assert decayed == kernels
    assert "lm_head/kernel" in decayed and "block_0/attention/qkv/kernel" in decayed
    for kept in ("embedding/token_embeddings", "embedding/position_embeddings",
                 "block_0/attention_norm/gamma", "final_norm/beta", "block_1/ffn_in/bias"):
        assert kept in before and kept not in decayed
    assert keras.config.dtype_policy().name == "float32"


def test_adamw_updates_as_keras_adamw():
    """tfllm's AdamW applies each variable's update with one fused op; its updates must
    stay Keras' own to float32 rounding, through warm-up, decay, clipping and the
    weight-decay exclusions."""
    import keras
    import tensorflow as tf

    from tfllm.models import GPTConfig, build_gpt
    from tfllm.training.optimizer import (build_optimizer, learning_rate_schedule,
                                          no_decay_variables)

    def trained(make_optimizer):
        keras.utils.set_random_seed(0)
        model = build_gpt(GPTConfig(**CONFIG))
        optimizer = make_optimizer(model)
        variables = model.trainable_variables
        before = [np.array(v) for v in variables]
        optimizer.build(variables)
        apply = tf.function(lambda grads: optimizer.apply(grads, variables))
        rng = np.random.default_rng(1)
        for _ in range(4):
            apply([tf.constant(rng.normal(size=v.shape), tf.float32) for v in variables])
        return [np.array(v) - b for v, b in zip(variables, before)]

    def keras_adamw(model):
        optimizer = keras.optimizers.AdamW(
            learning_rate=learning_rate_schedule(0.05, 10, 2), weight_decay=0.1,
            beta_1=0.9, beta_2=0.99, global_clipnorm=1.0)
        optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
        return optimizer

    ours = trained(lambda model: build_optimizer(model, 0.05, 10, 2, 0.1, clip_norm=1.0,
                                                 beta_2=0.99))
    for a, b in zip(ours, trained(keras_adamw), strict=True):
        assert np.abs(b).max() > 1e-3  # every variable moved
        # atol: float32 rounding of variables up to ~1, which the updates inherit.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)

    # The shared-scalar update has no amsgrad branch: asking for it is refused, not ignored.
    from tfllm.training.optimizer import AdamW

    with pytest.raises(ValueError, match="amsgrad"):
        AdamW(amsgrad=True)


def test_an_evaluation_compiled_beside_the_first_train_call_evaluates_the_same():
    import keras
    import tensorflow as tf

    from tfllm.models import GPTConfig, build_gpt
    from tfllm.training.loop import Trainer
    from tfllm.training.optimizer import build_optimizer

    x, y = random_batches(steps=4, batch=8)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8, drop_remainder=True)
    runs = []
    for ahead in (True, False):
        keras.utils.set_random_seed(0)
        model = build_gpt(GPTConfig(**CONFIG))
        trainer = Trainer(model, build_optimizer(model, 3e-3, 4, 1),
                          tf.distribute.get_strategy(), jit_compile=True, steps_per_call=2)
        if ahead:  # compiles on another thread during the first train call
            trainer.compile_eval_step(data)
        losses = trainer.train_steps(iter(trainer.distribute(data)), 2)[0].numpy()
        runs.append((losses.tolist(), trainer.evaluate(data)))
    assert runs[0] == runs[1]


def test_an_evaluation_in_compiled_chunks_is_the_mean_over_every_batch(monkeypatch):
    """With XLA one program call evaluates a chunk of stacked batches: chunks split at any
    point (a run of batches cut short by a smaller last batch, `max_batches` inside a
    chunk) give the per-batch mean."""
    import keras
    import tensorflow as tf

    from tfllm.models import GPTConfig, build_gpt
    from tfllm.training import loop

    monkeypatch.setattr(loop, "EVAL_BATCHES_PER_CALL", 4)
    x, y = random_batches(steps=7, batch=4)
    # 26 rows: six batches of 4, then one of 2 (another shape, so another chunk).
    data = tf.data.Dataset.from_tensor_slices((x[:26], y[:26])).batch(4)
    keras.utils.set_random_seed(0)
    model = build_gpt(GPTConfig(**CONFIG))
    trainer = loop.Trainer(model, keras.optimizers.SGD(), tf.distribute.get_strategy(),
                           jit_compile=True)

    def expected(batches):
        sums = [loop.token_losses(model(xb), yb, 0) for xb, yb in batches]
        return (float(sum(float(s) for s, _ in sums) / sum(float(n) for _, n in sums)),
                int(sum(float(n) for _, n in sums)))

    for max_batches in (None, 5, 3, 1):
        loss, tokens = trainer.evaluate(data, max_batches)
        want_loss, want_tokens = expected(list(data.take(max_batches or 7)))
        assert tokens == want_tokens
        assert loss == pytest.approx(want_loss, rel=1e-6)
