"""Building a model for training, whatever the task: the precision's dtype policy, the
strategy's scope, the optimizer, the batch split over replicas, and the float32
single-device copy used after training."""

import keras

from tfllm.training.loop import strategy_kind
from tfllm.training.optimizer import build_optimizer

# --precision -> the Keras dtype policy the model is built under (variables stay float32).
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def check_batch(options, replicas):
    """The global batch must split evenly over the replicas, then into micro-batches."""
    if options.batch_size % replicas:
        raise ValueError(
            f"--batch-size {options.batch_size} is not divisible by the {replicas} replicas "
            f"of this strategy: use a multiple of {replicas}")
    if (options.batch_size // replicas) % options.grad_accum:
        raise ValueError(
            f"each replica's batch of {options.batch_size // replicas} is not divisible by "
            f"--grad-accum {options.grad_accum}: use a --batch-size that is a multiple of "
            f"{replicas * options.grad_accum}")


def build_model_and_optimizer(options, strategy, build):
    """`build()`'s model and its optimizer in `strategy.scope()`, under the precision's
    policy (set only while building: layers keep the policy they were built with)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[options.precision])
    try:
        with strategy.scope():
            model = build()
            optimizer = build_optimizer(
                model, options.lr, options.steps, options.warmup_steps, options.weight_decay,
                clip_norm=options.clip_norm, precision=options.precision,
                beta_2=options.beta2)
    finally:
        keras.config.set_dtype_policy(previous)
    return model, optimizer


def inference_copy(model, build, options, strategy):
    """The model itself, or, when it was trained in mixed precision or across devices, a
    float32 single-device copy of its weights (`build()` makes the empty model): what
    samples, evaluation and the SavedModel use."""
    if options.precision == "fp32" and strategy_kind(strategy) == "default":
        return model
    copy = build()
    copy.set_weights(model.get_weights())
    return copy

