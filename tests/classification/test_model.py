"""build_classifier: padding invariance for every pooling, the GPT backbone it shares with
build_gpt, a .keras round trip, and the train loop's classification loss."""

import keras
import numpy as np
import pytest
from keras import ops

from helpers import to_numpy
from tfllm.models import GPTConfig, build_classifier, build_gpt
from tfllm.models.classifier import SequencePooling, copy_backbone_weights

CONFIG = GPTConfig(vocab_size=61, context_length=32, num_layers=2, num_heads=2, embed_dim=16)
TEXTS = [[5, 9, 11, 3], [7, 3], [12, 13, 14, 15, 16, 17, 3]]  # token ids, EOS (3) last


def padded(rows, width, pad_id=0):
    return np.array([r + [pad_id] * (width - len(r)) for r in rows], np.int32)


@pytest.mark.parametrize("pooling, causal, members",
                         [("mean", False, 1), ("max", False, 1), ("cls", False, 1),
                          ("last", False, 1), ("mean", True, 1), ("last", True, 1),
                          ("mean", False, 3)])
def test_more_padding_gives_the_same_probabilities(pooling, causal, members):
    keras.utils.set_random_seed(1)
    model = build_classifier(CONFIG, 4, pooling=pooling, causal=causal, members=members)
    probs = [to_numpy(ops.softmax(model(padded(TEXTS, width)))) for width in (7, 12, 32)]
    for other in probs[1:]:
        np.testing.assert_allclose(other, probs[0], atol=1e-5, rtol=0)
    # One text alone, unpadded, is scored as it is in a padded batch.
    alone = to_numpy(ops.softmax(model(np.array([TEXTS[1]], np.int32))))
    np.testing.assert_allclose(alone[0], probs[0][1], atol=1e-5, rtol=0)
    # ... and the texts differ, so the check is not vacuous.
    assert np.abs(probs[0][0] - probs[0][1]).max() > 1e-4


def test_pooling_reads_only_real_positions():
    x = ops.reshape(ops.arange(2 * 4 * 3, dtype="float32"), (2, 4, 3))
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_allclose(to_numpy(SequencePooling("mean")(x, mask)),
                               [[1.5, 2.5, 3.5], [16.5, 17.5, 18.5]])
    np.testing.assert_allclose(to_numpy(SequencePooling("last")(x, mask)),
                               [[3, 4, 5], [21, 22, 23]])
    np.testing.assert_allclose(to_numpy(SequencePooling("cls")(x, mask)), [[0, 1, 2], [12, 13, 14]])
    # Max: the padded positions hold the largest values and must not win; a text with
    # no real token pools to zeros.
    np.testing.assert_allclose(to_numpy(SequencePooling("max")(x, mask)),
                               [[3, 4, 5], [21, 22, 23]])
    np.testing.assert_allclose(to_numpy(SequencePooling("max")(x, np.zeros((2, 4)))),
                               np.zeros((2, 3)))


def test_a_gpt_backbone_loads_into_the_causal_classifier():
    keras.utils.set_random_seed(2)
    gpt = build_gpt(CONFIG)
    classifier = build_classifier(CONFIG, 3, pooling="last", causal=True)
    copied = copy_backbone_weights(classifier, gpt)
    assert copied == ["embedding", "block_0", "block_1", "final_norm"]
    ids = padded(TEXTS, 9)
    hidden = [keras.Model(m.input, m.get_layer("final_norm").output)(ids) for m in (gpt, classifier)]
    np.testing.assert_allclose(to_numpy(hidden[1]), to_numpy(hidden[0]), atol=1e-6)


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="causal"):
        build_classifier(CONFIG, 3, pooling="cls", causal=True)
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_classifier(CONFIG, 1)
    with pytest.raises(ValueError, match="unknown pooling"):
        build_classifier(CONFIG, 2, pooling="median")


def test_an_ensemble_averages_its_members_log_probabilities():
    keras.utils.set_random_seed(5)
    model = build_classifier(CONFIG, 3, members=3)
    ids = padded(TEXTS, 8)
    members = [keras.Model(model.input, model.get_layer(f"logits_m{i}").output)(ids)
               for i in range(3)]
    probs = [to_numpy(ops.softmax(m)) for m in members]
    geometric = np.exp(np.mean(np.log(probs), axis=0))
    expected = geometric / geometric.sum(-1, keepdims=True)
    np.testing.assert_allclose(to_numpy(ops.softmax(model(ids))), expected, atol=1e-6)
    # Each member has its own weights (they start apart, so they can disagree).
    assert np.abs(probs[0] - probs[1]).max() > 1e-4
    assert len(model.weights) == 3 * len(build_classifier(CONFIG, 3).weights)
    # A GPT loads into every member of a causal ensemble.
    gpt = build_gpt(CONFIG)
    causal = build_classifier(CONFIG, 3, pooling="last", causal=True, members=2)
    assert sorted(copy_backbone_weights(causal, gpt)) == sorted(
        f"{name}_m{i}" for i in range(2)
        for name in ("embedding", "block_0", "block_1", "final_norm"))
    np.testing.assert_array_equal(to_numpy(causal.get_layer("block_1_m1").weights[0]),
                                  to_numpy(gpt.get_layer("block_1").weights[0]))
    with pytest.raises(ValueError, match="at least 1 member"):
        build_classifier(CONFIG, 3, members=0)


def test_ensemble_members_train_on_their_own_losses():
    """Through member_view, the loss is the mean of the members' cross-entropies: one
    member's gradient does not depend on another member's weights."""
    import tensorflow as tf

    from tfllm.models.classifier import member_view
    from tfllm.tasks.classify.model import ClassificationLoss

    keras.utils.set_random_seed(6)
    model = build_classifier(CONFIG, 3, members=2)
    view = member_view(model)
    ids, labels = padded(TEXTS, 8), tf.constant([0, 2, 1])
    outputs = view(ids)
    assert len(outputs) == 2 and member_view(build_classifier(CONFIG, 3)).name == "classifier"
    loss = ClassificationLoss()
    separate = [float(loss(m, labels)[0]) for m in outputs]
    assert abs(float(loss(outputs, labels)[0]) - np.mean(separate)) < 1e-5

    member_0 = model.get_layer("logits_m0").kernel

    def gradient():
        with tf.GradientTape() as tape:
            value = loss(view(ids), labels)[0]
        return tape.gradient(value, member_0).numpy()

    before = gradient()
    other = model.get_layer("logits_m1").kernel
    other.assign(other.numpy() + 1.0)  # member 1 changes its mind
    np.testing.assert_allclose(gradient(), before, atol=1e-7)


def test_keras_file_round_trip_gives_equal_outputs(tmp_path):
    keras.utils.set_random_seed(3)
    model = build_classifier(CONFIG, 3, pooling="cls", members=2)
    path = tmp_path / "classifier.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    ids = padded(TEXTS, 8)
    np.testing.assert_allclose(to_numpy(loaded(ids)), to_numpy(model(ids)), atol=1e-6)


def test_weighted_loss_and_gradient_accumulation_in_the_train_loop():
    """The shared Trainer with the classification loss: its loss is the class-weighted
    mean cross-entropy, and two micro-batches give the same update as one batch."""
    import tensorflow as tf

    from tfllm.tasks.classify.model import ClassificationLoss
    from tfllm.training.loop import Trainer
    from tfllm.training.optimizer import build_optimizer

    rng = np.random.default_rng(0)
    x = rng.integers(4, CONFIG.vocab_size, size=(8, 6)).astype(np.int32)
    x[::2, 3:] = 0  # some padding
    y = np.array([0, 1, 2, 0, 0, 1, 0, 2], np.int32)
    weights = np.array([0.5, 2.0, 1.5], np.float32)
    strategy = tf.distribute.get_strategy()
    results = []
    for accum in (1, 2):
        keras.utils.set_random_seed(4)
        model = build_classifier(CONFIG, 3)
        logits = to_numpy(model(x)).astype(np.float64)
        optimizer = build_optimizer(model, 1e-2, total_steps=2, warmup_steps=0)
        trainer = Trainer(model, optimizer, strategy, grad_accum=accum,
                          loss=ClassificationLoss(weights))
        batch = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        loss, count, _ = trainer.train_step(next(iter(trainer.distribute(batch))))
        results.append((float(loss), [w.copy() for w in model.get_weights()]))

        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        expected = -(weights[y] * log_probs[np.arange(8), y]).sum() / weights[y].sum()
        assert float(loss) == pytest.approx(expected, rel=1e-5)
        assert float(count) == pytest.approx(weights[y].sum())
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, atol=1e-5)  # Adam: lr * sign(g) for tiny g


def test_token_dropout_hides_tokens_only_while_training():
    from tfllm.models.classifier import TokenDropout

    mask = np.zeros((64, 40), bool)
    for row in range(64):
        mask[row, : 5 + row % 30] = True
    layer = TokenDropout(0.3, seed=5)
    np.testing.assert_array_equal(to_numpy(layer(mask)), mask)  # inference: unchanged
    dropped = to_numpy(layer(mask, training=True))
    assert not (dropped & ~mask).any()  # padding stays padding
    last = mask.sum(axis=1) - 1
    assert dropped[np.arange(64), last].all()  # every text keeps its last token (EOS)
    share = 1 - dropped.sum() / mask.sum()
    assert 0.2 < share < 0.35
    # In a model: training calls differ, inference calls repeat exactly.
    keras.utils.set_random_seed(6)
    model = build_classifier(CONFIG, 3, token_dropout=0.5)
    ids = padded(TEXTS, 8)
    np.testing.assert_array_equal(to_numpy(model(ids)), to_numpy(model(ids)))
    assert np.abs(to_numpy(model(ids, training=True)) - to_numpy(model(ids))).max() > 1e-6
