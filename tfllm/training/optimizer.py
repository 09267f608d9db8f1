"""AdamW (decoupled weight decay, global-norm clipping) with linear warm-up then cosine
decay to a floor; a dynamic loss scale around it for float16."""

import keras
import tensorflow as tf


class AdamW(keras.optimizers.AdamW):
    """Keras AdamW for gradients the train loop has already summed over replicas, with
    each variable's update one fused op.

    Keras sums gradients across replicas *after* clipping them, so `global_clipnorm`
    would clip each replica's share by its own norm. The train loop all-reduces first
    (tfllm.training.loop), so clipping here sees the global gradient; this class skips
    the second all-reduce.

    Keras' TensorFlow update builds about 25 ops per variable (the schedule, the bias
    corrections, the moment updates, their casts): 1,300 of the 3,200 ops of the recipe's
    traced step, which cost trace and compile time and nothing at run time. Here the
    step's scalars are computed once, and each variable takes one `ResourceApplyAdam`
    (TensorFlow's Adam kernel, which XLA compiles): Keras' update formula, with the
    moments' `1 - beta` computed in float32 instead of rounded from Python floats, so the
    numbers agree with Keras' to float32 rounding, not to the bit. Weight decay and
    clipping are Keras' own. It overrides two methods of Keras' TensorFlow optimizer
    (keras is pinned) and has no amsgrad branch (tfllm never asks for one), so it refuses
    amsgrad.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError("tfllm's AdamW has no amsgrad variant: use "
                             "keras.optimizers.AdamW(amsgrad=True) instead")

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None:
            return
        decayed = [v.value for v in variables if self._use_weight_decay(v)]

        def decay_all(distribution, decayed):
            lr = tf.cast(self.learning_rate, tf.float32)
            wd = tf.cast(self.weight_decay, tf.float32)
            for variable in decayed:
                distribution.extended.update(
                    variable, lambda v: v.assign_sub(v * tf.cast(wd, v.dtype)
                                                     * tf.cast(lr, v.dtype)), group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(
            decay_all, self._distribution_strategy, decayed)

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        # `learning_rate` arrives per replica here; the schedule read again is one value.
        local_step = tf.cast(self.iterations + 1, tf.float32)
        scalars = {name: tf.constant(value, tf.float32) for name, value in
                   (("beta1", self.beta_1), ("beta2", self.beta_2), ("epsilon", self.epsilon))}
        scalars.update(lr=tf.cast(self.learning_rate, tf.float32),
                       beta1_power=tf.pow(scalars["beta1"], local_step),
                       beta2_power=tf.pow(scalars["beta2"], local_step))

        def adam(variable, gradient):
            index = self._get_variable_index(variable)
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=self._momentums[index].value.handle,
                v=self._velocities[index].value.handle,
                grad=tf.cast(gradient, variable.dtype), **scalars)

        for gradient, variable in grads_and_vars:
            distribution.extended.update(variable, adam, args=(gradient,), group=False)


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
