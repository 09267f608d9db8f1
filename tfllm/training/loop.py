"""The train loop: one custom step under `strategy.run`, for every tf.distribute strategy.

The loss is the mean over the global count of real target tokens (padding excluded), so
it is the same whether a batch runs on one replica or is split across several.
"""

import tensorflow as tf


def token_losses(logits, targets, pad_id):
    """Per-replica (sum of token cross-entropies, count of real targets), in float32."""
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=targets, logits=tf.cast(logits, tf.float32))
    real = tf.cast(tf.not_equal(targets, pad_id), tf.float32)
    return tf.reduce_sum(losses * real), tf.reduce_sum(real)


class Trainer:
    """Holds the compiled train and eval steps for a model built in `strategy.scope()`."""

    def __init__(self, model, optimizer, strategy, pad_id=0, jit_compile=False):
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.pad_id = pad_id
        with strategy.scope():
            # Slots must exist before the first distributed step.
            optimizer.build(model.trainable_variables)
        self._train_step = tf.function(self._train_step_fn, jit_compile=jit_compile)
        self._eval_step = tf.function(self._eval_step_fn, jit_compile=jit_compile)

    def distribute(self, dataset):
        return self.strategy.experimental_distribute_dataset(dataset)

    def _replica_train(self, inputs, targets):
        context = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            logits = self.model(inputs, training=True)
            loss_sum, count = token_losses(logits, targets, self.pad_id)
            global_count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
            loss = loss_sum / tf.maximum(global_count, 1.0)
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss_sum, count

    def _train_step_fn(self, batch):
        loss_sum, count = self.strategy.run(self._replica_train, args=batch)
        return self._reduce(loss_sum, count)

    def _replica_eval(self, inputs, targets):
        logits = self.model(inputs, training=False)
        return token_losses(logits, targets, self.pad_id)

    def _eval_step_fn(self, batch):
        loss_sum, count = self.strategy.run(self._replica_eval, args=batch)
        return (self.strategy.reduce("SUM", loss_sum, axis=None),
                self.strategy.reduce("SUM", count, axis=None))

    def _reduce(self, loss_sum, count):
        total = self.strategy.reduce("SUM", loss_sum, axis=None)
        tokens = self.strategy.reduce("SUM", count, axis=None)
        return total / tf.maximum(tokens, 1.0), tokens

    def train_step(self, distributed_batch):
        """One optimizer step; returns (mean loss over real tokens, token count)."""
        loss, tokens = self._train_step(distributed_batch)
        return float(loss), int(tokens)

    def evaluate(self, dataset, max_batches=None):
        """Mean loss over all real target tokens of `dataset`, and their count."""
        total, tokens = 0.0, 0
        for i, batch in enumerate(self.distribute(dataset)):
            if max_batches is not None and i >= max_batches:
                break
            loss_sum, count = self._eval_step(batch)
            total += float(loss_sum)
            tokens += int(count)
        return total / max(tokens, 1), tokens
