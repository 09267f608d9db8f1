"""AdamW (decoupled weight decay, global-norm clipping) with linear warm-up then cosine
decay to a floor; a dynamic loss scale around it for float16."""

import keras


class AdamW(keras.optimizers.AdamW):
    """Keras AdamW for gradients the train loop has already summed over replicas.

    Keras sums gradients across replicas *after* clipping them, so `global_clipnorm`
    would clip each replica's share by its own norm. The train loop all-reduces first
    (tfllm.training.loop), so clipping here sees the global gradient; this class only
    skips the second all-reduce.
    """

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


def learning_rate_schedule(peak_lr, total_steps, warmup_steps, min_lr_ratio=0.1):
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak_lr,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=min_lr_ratio,
        warmup_target=peak_lr if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def no_decay_variables(model):
    """Variables weight decay leaves alone: every vector (LayerNormalization gamma/beta,
    biases) and the embedding tables (`token_embeddings`, `position_embeddings`).
    Decay regularises the matrices that mix features; shrinking the rest only hurts."""
    return [v for v in model.trainable_variables
            if len(v.shape) < 2 or v.name.endswith("embeddings")]


def build_optimizer(model, peak_lr, total_steps, warmup_steps, weight_decay=0.1,
                    clip_norm=1.0, precision="fp32", beta_2=0.95):
    """AdamW for `model` (call inside the strategy's scope); for `fp16`, wrapped in a
    dynamic `LossScaleOptimizer` (the train loop scales the loss with `scale_loss`).
    `beta_2`: the second-moment decay; 0.99 suits small batches (nanoGPT's CPU recipe),
    whose gradients are noisier."""
    optimizer = AdamW(
        learning_rate=learning_rate_schedule(peak_lr, total_steps, warmup_steps),
        weight_decay=weight_decay, beta_1=0.9, beta_2=beta_2,
        global_clipnorm=clip_norm or None)
    optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
    if precision == "fp16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def current_learning_rate(optimizer):
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
