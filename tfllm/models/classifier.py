"""build_classifier(config, num_classes): a transformer over token ids, pooled into one
vector per text, and a linear head over the classes."""

import re

import keras
from keras import ops

from tfllm.layers import PositionalEmbedding, TransformerBlock

POOLINGS = ("mean", "max", "cls", "last")


def build_classifier(config, num_classes, pooling="mean", causal=False, token_dropout=0.0,
                     members=1, name="classifier"):
    """Build a text classifier as a Functional `keras.Model`.

    Maps `token_ids (batch, seq)` int32 to float32 class logits `(batch, num_classes)`;
    `keras.ops.softmax(logits)` gives the class probabilities (the SavedModel's
    `serving_default` returns them). Logits rather than probabilities come out so the
    loss is computed from them, stably, in float32.

    With `causal=False` (the default) the blocks form an encoder: every token attends to
    every real token of its text. `causal=True` builds a GPT's layers under the same
    names as `build_gpt` (`embedding`, `block_i`, `final_norm`), so a pretrained language
    model's weights load into it (`copy_backbone_weights`).

    Token id `config.pad_id` is padding: it is masked out of attention and pooling and
    positions count real tokens only, so more (right) padding leaves the logits as
    they are.

    Args:
        config: a `GPTConfig` (its vocabulary, width, depth, dropout, pad id).
        num_classes: how many classes the head scores.
        pooling: `"mean"` or `"max"` over the real tokens, `"cls"` a learned class token before
            the text (encoder only), or `"last"` the last real token.
        causal: GPT-style causal attention instead of bidirectional.
        token_dropout: while training, hide this share of each text's tokens from
            attention and pooling (word dropout: a strong regulariser on small data).
        members: build an ensemble of this many classifiers over the same ids, each
            with its own weights (layer names ending `_m0`, `_m1`, ...), whose logits
            are the mean of their log-probabilities (`MemberAverage`). Trained in one
            model, each member on its own loss (`member_view`); on small data the
            average is steadier than any one member.

    Example:

    >>> from tfllm.models import GPTConfig
    >>> config = GPTConfig(vocab_size=50, context_length=8, num_layers=1, num_heads=2,
    ...                    embed_dim=8)
    >>> model = build_classifier(config, num_classes=3)
    >>> tuple(model(keras.ops.ones((2, 5), "int32")).shape)
    (2, 3)
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    if pooling == "cls" and causal:
        raise ValueError("a class token before the text sees nothing under causal "
                         "attention: use --pooling last or mean with a GPT")
    if int(num_classes) < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}: give "
                         "training data with two or more labels")
    if int(members) < 1:
        raise ValueError(f"an ensemble needs at least 1 member, got {members}")
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    padding_mask = ops.not_equal(token_ids, config.pad_id)  # (batch, seq)
    if members == 1:
        logits = _member(config, num_classes, pooling, causal, token_dropout, token_ids,
                         padding_mask)
    else:
        logits = MemberAverage(name="members")(
            [_member(config, num_classes, pooling, causal, token_dropout, token_ids,
                     padding_mask, suffix=f"_m{i}") for i in range(members)])
    return keras.Model(token_ids, logits, name=name)


def _member(config, num_classes, pooling, causal, token_dropout, token_ids, padding_mask,
            suffix=""):
    """One classifier's layers (names ending in `suffix`) from ids to class logits."""
    init = keras.initializers.RandomNormal(stddev=0.02)
    x = PositionalEmbedding(
        config.vocab_size, config.context_length, config.embed_dim,
        position_type=config.position_type, embeddings_initializer=init,
        name=f"embedding{suffix}")(token_ids, padding_mask=padding_mask)  # (batch, seq, embed)
    x = keras.layers.Dropout(config.dropout, name=f"embedding_dropout{suffix}")(x)
    if token_dropout:
        padding_mask = TokenDropout(token_dropout, name=f"token_dropout{suffix}")(padding_mask)
    if pooling == "cls":
        x, padding_mask = ClassToken(name=f"class_token{suffix}")(x, padding_mask)
    for i in range(config.num_layers):
        x = TransformerBlock(
            config.num_heads, config.intermediate_dim, dropout=config.dropout, causal=causal,
            layer_norm_epsilon=config.layer_norm_epsilon, use_bias=config.use_bias,
            kernel_initializer=init, name=f"block_{i}{suffix}")(x, padding_mask=padding_mask)
    x = keras.layers.LayerNormalization(
        epsilon=config.layer_norm_epsilon, name=f"final_norm{suffix}")(x)
    pooled = SequencePooling(pooling, name=f"pooling{suffix}")(x, padding_mask)
    pooled = keras.layers.Dropout(config.dropout, name=f"head_dropout{suffix}")(pooled)
    # float32 logits under mixed precision: the softmax and loss stay exact.
    return keras.layers.Dense(num_classes, kernel_initializer=init, dtype="float32",
                              name=f"logits{suffix}")(pooled)


@keras.saving.register_keras_serializable(package="tfllm")
class MemberAverage(keras.layers.Layer):
    """An ensemble's logits: the mean of its members' log-probabilities (the log of their
    geometric mean, which softmax renormalises). Training goes through `member_view`
    instead, each member on its own loss.

    Call arguments:
        inputs: a list of `(batch, classes)` logits, one per member.

    Returns:
        `(batch, classes)` float32 logits.
    """

    def call(self, inputs):
        log_probs = [ops.log_softmax(ops.cast(x, "float32"), axis=-1) for x in inputs]
        return ops.mean(ops.stack(log_probs, axis=0), axis=0)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]


def member_view(model):
    """The same weights as a Model whose outputs are each member's own logits (a list),
    so that each member trains on its own cross-entropy, as independently trained
    classifiers would (a loss on the averaged logits would instead move every member
    by the ensemble's error, and they would stop learning once the average is right).
    A single classifier is returned as it is."""
    heads = {int(match[1]): layer for layer in model.layers
             if (match := re.fullmatch(r"logits_m(\d+)", layer.name))}
    if not heads:
        return model
    return keras.Model(model.inputs, [heads[i].output for i in sorted(heads)],
                       name=f"{model.name}_members")


def copy_backbone_weights(classifier, gpt):
    """Load a GPT's embedding, blocks and final norm into a `causal=True` classifier
    of the same config (into every member of an ensemble; the language-model head is
    left behind). Returns the classifier layers loaded."""
    names = []
    for layer in classifier.layers:
        source = re.sub(r"_m\d+$", "", layer.name)  # a member's layer: its GPT name
        if source in ("embedding", "final_norm") or source.startswith("block_"):
            layer.set_weights(gpt.get_layer(source).get_weights())
            names.append(layer.name)
    return names


@keras.saving.register_keras_serializable(package="tfllm")
class TokenDropout(keras.layers.Layer):
    """Word dropout: while training, each real token but a text's last is masked out
    with probability `rate` (the last one stays, so no text is left empty).

    Call arguments:
        padding_mask: `(batch, seq)`, 1 for real tokens.
        training: whether to drop.

    Returns:
        The bool padding mask with the dropped tokens False.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"token dropout must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, padding_mask, training=None):
        real = ops.cast(padding_mask, "bool")
        if not training or not self.rate:
            return real
        positions = ops.arange(ops.shape(real)[1], dtype="int32")
        last = ops.max(ops.where(real, positions, -1), axis=1, keepdims=True)
        keep = keras.random.uniform(ops.shape(real), seed=self.seed_generator) >= self.rate
        return ops.logical_and(real, ops.logical_or(keep, positions == last))

    def compute_output_shape(self, padding_mask_shape):
        return padding_mask_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tfllm")
class ClassToken(keras.layers.Layer):
    """Prepends one learned vector to every sequence (BERT's [CLS], without a position).

    Call arguments:
        inputs: `(batch, seq, hidden)`.
        padding_mask: `(batch, seq)`, 1 for real tokens.

    Returns:
        `(batch, 1 + seq, hidden)` and the padding mask with the class token real.
    """

    def build(self, inputs_shape, padding_mask_shape=None):
        self.token = self.add_weight(
            shape=(1, 1, inputs_shape[-1]), name="token",
            initializer=keras.initializers.RandomNormal(stddev=0.02))

    def call(self, inputs, padding_mask):
        batch = ops.shape(inputs)[0]
        token = ops.broadcast_to(ops.cast(self.token, inputs.dtype),
                                 (batch, 1, ops.shape(inputs)[-1]))
        real = ops.ones((batch, 1), "bool")
        return (ops.concatenate([token, inputs], axis=1),
                ops.concatenate([real, ops.cast(padding_mask, "bool")], axis=1))

    def compute_output_shape(self, inputs_shape, padding_mask_shape):
        length = None if inputs_shape[1] is None else inputs_shape[1] + 1
        return ((inputs_shape[0], length, inputs_shape[2]), (inputs_shape[0], length))


@keras.saving.register_keras_serializable(package="tfllm")
class SequencePooling(keras.layers.Layer):
    """One vector per sequence from the real (unpadded) positions.

    Args:
        mode: `"mean"` over real positions, `"max"` the largest value of each feature
            over real positions, `"cls"` the first position, `"last"` the last real
            position (right or left padding alike).

    Call arguments:
        inputs: `(batch, seq, hidden)`.
        padding_mask: `(batch, seq)`, 1 for real tokens.

    Returns:
        `(batch, hidden)`.

    Example:

    >>> x = keras.ops.reshape(keras.ops.arange(12, dtype="float32"), (1, 4, 3))
    >>> SequencePooling("last")(x, keras.ops.array([[1, 1, 0, 0]])).tolist()
    [[3.0, 4.0, 5.0]]
    """

    def __init__(self, mode="mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLINGS:
            raise ValueError(f"unknown pooling {mode!r}: choose one of {', '.join(POOLINGS)}")
        self.mode = mode

    def call(self, inputs, padding_mask):
        if self.mode == "cls":
            return inputs[:, 0]
        real = ops.cast(padding_mask, "float32")  # (batch, seq)
        if self.mode == "max":
            values = ops.where(ops.cast(padding_mask, "bool")[:, :, None],
                               ops.cast(inputs, "float32"), float("-inf"))
            pooled = ops.max(values, axis=1)
            # A text with no real token (all padding) pools to zeros, not -inf.
            pooled = ops.where(ops.sum(real, axis=1, keepdims=True) > 0, pooled, 0.0)
            return ops.cast(pooled, inputs.dtype)
        if self.mode == "last":
            positions = ops.arange(ops.shape(inputs)[1], dtype="int32")
            last = ops.max(ops.where(ops.cast(padding_mask, "bool"), positions, -1), axis=1)
            real = ops.one_hot(last, ops.shape(inputs)[1], dtype="float32")  # (batch, seq)
        else:
            real = real / ops.maximum(ops.sum(real, axis=1, keepdims=True), 1.0)
        # Summed in float32: mixed precision must not round a long sum.
        pooled = ops.einsum("bs,bsh->bh", real, ops.cast(inputs, "float32"))
        return ops.cast(pooled, inputs.dtype)

    def compute_output_shape(self, inputs_shape, padding_mask_shape):
        return (inputs_shape[0], inputs_shape[2])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
