"""AdamW with linear warm-up then cosine decay to a floor."""

import keras

# Weight decay regularises matrices; decaying norms, biases and embeddings only hurts.
NO_DECAY = ("norm", "bias", "embeddings", "gamma", "beta")


def learning_rate_schedule(peak_lr, total_steps, warmup_steps, min_lr_ratio=0.1):
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak_lr,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=min_lr_ratio,
        warmup_target=peak_lr if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def build_optimizer(peak_lr, total_steps, warmup_steps, weight_decay=0.1, clipnorm=1.0):
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate_schedule(peak_lr, total_steps, warmup_steps),
        weight_decay=weight_decay, beta_1=0.9, beta_2=0.95,
        global_clipnorm=clipnorm or None)
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY))
    return optimizer


def current_learning_rate(optimizer):
    schedule = optimizer._learning_rate
    if callable(schedule):
        return float(schedule(optimizer.iterations))
    return float(optimizer.learning_rate)
