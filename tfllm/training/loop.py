"""The train loop: one custom step under `strategy.run`, for every tf.distribute strategy.

Each replica takes its share of the global batch (in `grad_accum` micro-batches), and
its loss is divided by the global count of what the loss averages over (real target
tokens for a language model, padding excluded; examples, or their class weights, for a
classifier), so the summed gradient is that of the mean loss over the whole global batch,
whatever the number of replicas or micro-batches. Gradients are all-reduced once, then clipped by their
global norm and applied by the optimizer (which must not all-reduce again:
`tfllm.training.optimizer.AdamW`).

XLA: with the default strategy the whole step (forward, backward, update) is one
compiled function. Under Mirrored/MultiWorker each replica's forward and backward pass
is compiled, and the all-reduce and the update run outside XLA (XLA cannot compile one
function over several devices). A TPU compiles everything itself.

Several steps per call: `train_steps` runs a number of steps in one call (as Keras'
`steps_per_execution` does), so Python and the call cost once per call. With XLA on one
device the call is one compiled program: a loop over a stack of `steps_per_call` batches
drawn beforehand, of which it trains on the first `steps` (a call that ends early at a
logging or checkpoint step runs the same program, so every step runs the same code).
Calling the compiled step from inside another graph function instead costs more per step
than the Python call it saves (README Results). Otherwise a graph function draws each batch
from the distributed iterator and calls the step (compiled per replica, or by the TPU).

Evaluation runs the same way: with XLA on one device, one compiled program loops over a
stack of up to `EVAL_BATCHES_PER_CALL` batches and returns each batch's sums, so a
20-batch evaluation is one call and the recipe's whole validation split five.

Randomness: the seed of every random layer (dropout, token dropout) at a step is a pure
function of the layer's initial seed and the optimizer's step count, which the
checkpoint holds, so a resumed run draws the same dropout masks as an uninterrupted one,
whatever the number of steps per call.
"""

import itertools

import keras
import numpy as np
import tensorflow as tf

from tfllm.background import in_background
from tfllm.graph_function import graph_function


def token_losses(logits, targets, pad_id):
    """Per-replica (sum of token cross-entropies, count of real targets), in float32."""
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=targets, logits=tf.cast(logits, tf.float32))
    real = tf.not_equal(targets, pad_id)
    # `where`, not a product: a row of padding alone has NaN logits (nothing to attend to).
    return (tf.reduce_sum(tf.where(real, losses, 0.0)),
            tf.reduce_sum(tf.cast(real, tf.float32)))


class TokenLoss:
    """The language-model loss: mean cross-entropy over real (non-pad) target tokens.

    The train loop takes any loss object with this shape: `count(targets)`, the weight a
    batch adds to the mean, computed from the targets alone (the loop needs the global
    count before the forward pass), and `__call__(outputs, targets) -> (loss_sum, count)`.
    """

    def __init__(self, pad_id=0):
        self.pad_id = pad_id

    def count(self, targets):
        return tf.reduce_sum(tf.cast(tf.not_equal(targets, self.pad_id), tf.float32))

    def __call__(self, logits, targets):
        return token_losses(logits, targets, self.pad_id)


# Seeds a random layer may draw per micro-batch (one per call; a block calls its residual
# dropout twice): the distance between the seed counters of consecutive steps is this
# times grad_accum. Keras hands TensorFlow's stateless ops each half of a seed modulo
# 2**31 - 2, so the counters stay distinct for 2**29 / grad_accum steps.
SEEDS_PER_MICRO_BATCH = 4
# Added to the initial seeds on replica k (k times), so replicas draw different masks.
REPLICA_SEED_SHIFT = 1_000_003
# Batches one compiled evaluation call runs at most (XLA on one device). Calls, not
# compute, are what this saves: 0.3-0.5 s of the 2-2.5 s whole-split evaluation of
# nanoGPT's recipe (145 batches). Unused slots cost a copy of the stacked inputs only.
EVAL_BATCHES_PER_CALL = 32


def seed_states(model):
    """The state variables of the model's random layers (each `keras.random.SeedGenerator`
    of a Dropout or similar layer): [seed, counter] pairs, not in the model's checkpoint."""
    return [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]


def _same_shape_runs(batches, size):
    """Lists of up to `size` consecutive batches whose tensors have the same shapes (a
    short last batch, or a batch padded to its own length, starts a run of its own)."""
    def shapes(batch):
        return [tuple(t.shape) for t in tf.nest.flatten(batch)]

    run = []
    for batch in batches:
        if run and (len(run) == size or shapes(batch) != shapes(run[0])):
            yield run
            run = []
        run.append(batch)
    if run:
        yield run


def strategy_kind(strategy):
    """'default' (one device), 'replicas' (Mirrored, MultiWorker) or 'tpu'."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    if isinstance(strategy, (tf.distribute.MirroredStrategy,
                             tf.distribute.MultiWorkerMirroredStrategy)):
        return "replicas"
    return "default"


class Trainer:
    """The compiled train and eval steps for a model and optimizer built in
    `strategy.scope()`.

    Args:
        grad_accum: split each replica's batch into this many micro-batches and sum
            their gradients before the one update (same update, less activation memory).
        loss: the loss object (see `TokenLoss`); default: `TokenLoss(pad_id)`.
        gradient_masks: {variable path: bool (rows,) mask}: only the True rows of those
            variables get a gradient, so only they change (the optimizer's moments of the
            other rows stay zero, and so do their updates).
        steps_per_call: the most steps one `train_steps` call runs (a longer call, with
            XLA on one device, compiles a program of its own).
    """

    def __init__(self, model, optimizer, strategy, pad_id=0, jit_compile=False,
                 grad_accum=1, loss=None, gradient_masks=None, steps_per_call=1):
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.pad_id = pad_id
        self.loss = loss or TokenLoss(pad_id)
        self.grad_accum = int(grad_accum)
        self.steps_per_call = int(steps_per_call)
        self.loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)  # fp16
        masks = gradient_masks or {}
        unknown = set(masks) - {v.path for v in model.trainable_variables}
        if unknown:
            raise ValueError(f"gradient mask for '{sorted(unknown)[0]}', which is not a "
                             "trainable variable of the model")
        self._row_masks = [masks.get(v.path) for v in model.trainable_variables]
        # The seeds the layers start from (set by keras.utils.set_random_seed before the
        # model was built, so the same in a resumed run); the counters are set each step.
        self._seeds = [(state, int(np.asarray(state.numpy())[0]))
                       for state in seed_states(model)]
        with strategy.scope():
            # Slots must exist before the first distributed step.
            optimizer.build(model.trainable_variables)
        kind = strategy_kind(strategy)
        whole = jit_compile and kind == "default"
        per_replica = jit_compile and kind == "replicas"
        self._train_step = graph_function(self._train_step_fn, jit_compile=whole or None)
        self._stacked_steps = self._train_steps = None
        if whole:
            self._stacked_steps = graph_function(self._stacked_steps_fn, jit_compile=True)
        else:  # not compiled itself: it reads the iterator; each step inside it is
            self._train_steps = graph_function(self._train_steps_fn)
        self._eval_step = self._stacked_eval = None
        if whole:
            self._stacked_eval = graph_function(self._stacked_eval_fn, jit_compile=True)
        else:  # one batch a call: on a TPU compiled by it, otherwise not compiled
            self._eval_step = graph_function(self._eval_step_fn)
        self._eval_batch = None  # set by compile_eval_step until the first train call
        self._eval_compile = None  # then the Future of the eval program's compile
        self._gradients = self._gradients_fn
        self._replica_eval = self._replica_eval_fn
        if per_replica:
            # Evaluation stays uncompiled here: an XLA function called per replica reads
            # the other replicas' variables from the first device and fails.
            self._gradients = graph_function(self._gradients_fn, jit_compile=True)

    def trained_parameters(self):
        """How many numbers the updates change: every trainable weight, counting only
        the unmasked rows of a masked one."""
        total = 0
        for variable, mask in zip(self.model.trainable_variables, self._row_masks):
            size = int(np.prod(variable.shape))
            total += size if mask is None else int(mask.sum()) * size // variable.shape[0]
        return total

    def distribute(self, dataset):
        """`dataset` (global batches) split across the replicas; under MultiWorker every
        worker reads the same stream and keeps its share of each batch."""
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        # tfllm's pipelines batch arrays already in memory: tf.data's autotuning has nothing
        # to tune but the prefetch buffer (which prefetch's own legacy tuning still sizes),
        # and with it on, deleting the training iterator at the end of a run waited 1.5-19 s.
        options.autotune.enabled = False
        return self.strategy.experimental_distribute_dataset(dataset.with_options(options))

    # -- one replica's work ---------------------------------------------------------

    def _gradients_fn(self, inputs, targets, global_count):
        """(loss sum, gradients) of this replica's batch for the loss divided by
        `global_count`, summed over `grad_accum` micro-batches."""
        variables = self.model.trainable_variables

        def micro_step(x, y):
            with tf.GradientTape() as tape:
                outputs = self.model(x, training=True)
                loss_sum, _ = self.loss(outputs, y)
                loss = loss_sum / global_count
                if self.loss_scaled:
                    loss = self.optimizer.scale_loss(loss)
            grads = tape.gradient(loss, variables)
            # Dense: the embedding's gradient is IndexedSlices with repeated rows, whose
            # norm is not the gradient's norm.
            grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                     for g, v in zip(grads, variables)]
            return loss_sum, [g if mask is None else
                              g * tf.reshape(tf.constant(mask, g.dtype),
                                             [-1] + [1] * (g.shape.rank - 1))
                              for g, mask in zip(grads, self._row_masks)]

        if self.grad_accum == 1:
            return micro_step(inputs, targets)
        k = self.grad_accum

        def split(t):  # (batch, ...) -> (k, micro, ...): token (batch, seq) or label (batch,)
            return tf.reshape(t, tf.concat([[k, -1], tf.shape(t)[1:]], axis=0))

        # Inputs may be a tuple (an encoder-decoder's source and target rows).
        xs, ys = tf.nest.map_structure(split, inputs), split(targets)

        def body(i, loss_total, grads_total):
            loss_sum, grads = micro_step(tf.nest.map_structure(lambda x: x[i], xs), ys[i])
            return i + 1, loss_total + loss_sum, [a + g for a, g in zip(grads_total, grads)]

        zeros = [tf.zeros(v.shape, tf.float32) for v in variables]
        _, loss_sum, grads = tf.while_loop(
            lambda i, *_: i < k, body, (tf.constant(0), tf.constant(0.0), zeros))
        return loss_sum, grads

    def _reseed(self, replica):
        """Point every random layer at this step's seeds: (its initial seed, shifted per
        replica so that replicas draw different masks; the step count times the seeds a
        step may draw); the layer's own counter moves on from there."""
        stride = SEEDS_PER_MICRO_BATCH * self.grad_accum
        counter = tf.cast(self.optimizer.iterations, tf.int64) * stride
        shift = tf.cast(replica, tf.int64) * REPLICA_SEED_SHIFT
        for state, seed in self._seeds:
            state.assign(tf.stack([tf.constant(seed, tf.int64) + shift, counter]))

    def _replica_train(self, inputs, targets):
        context = tf.distribute.get_replica_context()
        self._reseed(context.replica_id_in_sync_group)
        count = self.loss.count(targets)
        global_count = tf.maximum(context.all_reduce(tf.distribute.ReduceOp.SUM, count), 1.0)
        loss_sum, grads = self._gradients(inputs, targets, global_count)
        # The global gradient on every replica: clipping and the update see the same one.
        grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        grad_norm = tf.linalg.global_norm(grads)
        if self.loss_scaled:
            grad_norm = grad_norm / self.optimizer.dynamic_scale
        self.optimizer.apply(grads, self.model.trainable_variables)
        return loss_sum, count, grad_norm

    def _replica_eval_fn(self, inputs, targets):
        return self.loss(self.model(inputs, training=False), targets)

    # -- whole steps ------------------------------------------------------------------

    def _train_step_fn(self, batch):
        loss_sum, count, grad_norm = self.strategy.run(self._replica_train, args=batch)
        total = self.strategy.reduce("SUM", loss_sum, axis=None)
        tokens = self.strategy.reduce("SUM", count, axis=None)
        grad_norm = self.strategy.experimental_local_results(grad_norm)[0]  # same on all
        return total / tf.maximum(tokens, 1.0), tokens, grad_norm

    def _train_steps_fn(self, iterator, steps):
        return self._step_loop(self._train_step, lambda i: next(iterator), steps, steps, 3)

    def _stacked_steps_fn(self, batches, steps):
        """The first `steps` steps over `batches` (each tensor stacked (K, ...)); returns
        (K,) arrays of each step's loss, count and gradient norm, zero past `steps`."""
        return self._loop_over_stack(self._train_step_fn, batches, steps, 3)

    def _loop_over_stack(self, step, batches, count, outputs):
        """`step` on each of the first `count` of `batches` (each tensor stacked (K, ...));
        returns (K,) arrays of its `outputs` results, zero past `count`."""
        size = tf.nest.flatten(batches)[0].shape[0]
        return self._step_loop(step, lambda i: tf.nest.map_structure(lambda t: t[i], batches),
                               count, size, outputs)

    def _step_loop(self, step, batch_at, steps, size, outputs):
        """`step(batch_at(i))` for i < `steps` in a `tf.while_loop`; returns (size,) arrays
        of each of its `outputs` float32 scalar results."""
        def body(i, *arrays):
            results = step(batch_at(i))
            return (i + 1, *(a.write(i, r) for a, r in zip(arrays, results, strict=True)))

        arrays = [tf.TensorArray(tf.float32, size=size, element_shape=())
                  for _ in range(outputs)]
        _, *arrays = tf.while_loop(lambda i, *_: i < steps, body, (tf.constant(0), *arrays))
        return tuple(a.stack() for a in arrays)

    def _eval_step_fn(self, batch):
        loss_sum, count = self.strategy.run(self._replica_eval, args=batch)
        return (self.strategy.reduce("SUM", loss_sum, axis=None),
                self.strategy.reduce("SUM", count, axis=None))

    def _stacked_eval_fn(self, batches, count):
        """The eval step over the first `count` of `batches` (each tensor stacked
        (K, ...)); returns (K,) arrays of each batch's loss sum and count."""
        return self._loop_over_stack(self._eval_step_fn, batches, count, 2)

    def train_step(self, distributed_batch):
        """One optimizer step; returns tensors (mean loss over real tokens, their count,
        gradient global norm before clipping); for another loss, its mean and count.
        Reading them waits for the step."""
        return self._train_step(distributed_batch)

    def train_steps(self, iterator, steps):
        """`steps` optimizer steps in one call, each on the next batch of `iterator` (an
        iterator over `distribute(...)`); returns tensors of shape (steps,): each step's
        mean loss, count and gradient norm, as `train_step` returns them."""
        if self._stacked_steps is None:
            return self._train_steps(iterator, tf.constant(steps, tf.int32))
        # Padded with the last batch, which the program does not train on.
        stacked, count = self._stack([next(iterator) for _ in range(steps)],
                                     self.steps_per_call)
        if self._eval_batch is not None:
            # The train program is traced first, so that the eval program's tracing
            # (Python) runs while the train program compiles (C++, which lets Python run).
            self._stacked_steps.get_concrete_function(stacked, count)
            self._eval_compile = in_background(
                self._stacked_eval, *self._stack([self._eval_batch], EVAL_BATCHES_PER_CALL))
            self._eval_batch = None
        results = self._stacked_steps(stacked, count)
        return tuple(r[:steps] for r in results)

    def compile_eval_step(self, dataset):
        """With XLA, have the evaluation program for `dataset`'s batches compile on another
        thread while the first train call compiles (a compile keeps the cores only partly
        busy: 1.4 of 2 for the train step); the first `evaluate` waits for it."""
        if self._stacked_eval is not None and self._eval_compile is None:
            self._eval_batch = next(iter(self.distribute(dataset)))

    def evaluate(self, dataset, max_batches=None):
        """Mean loss over all real target tokens of `dataset` (or what the loss
        counts), and their count."""
        self._eval_batch = None  # compiled below if not already
        if self._eval_compile is not None:
            self._eval_compile.result()  # raises what compiling raised
        batches = itertools.islice(iter(self.distribute(dataset)), max_batches)
        if self._stacked_eval is None:
            sums = [self._eval_step(batch) for batch in batches]  # not read: they run ahead
        else:
            calls = [(len(run), self._stacked_eval(*self._stack(run, EVAL_BATCHES_PER_CALL)))
                     for run in _same_shape_runs(batches, EVAL_BATCHES_PER_CALL)]
            sums = [pair for count, (loss_sums, counts) in calls
                    for pair in zip(loss_sums.numpy()[:count], counts.numpy()[:count])]
        # Summed in Python floats, batch by batch.
        total = sum(float(loss_sum) for loss_sum, _ in sums)
        tokens = sum(int(count) for _, count in sums)
        return total / max(tokens, 1), tokens

    @staticmethod
    def _stack(batches, size):
        """(batches stacked to `size`, padded with the last one; how many are real)."""
        count = len(batches)
        batches = batches + batches[-1:] * (size - count)
        return (tf.nest.map_structure(lambda *tensors: tf.stack(tensors), *batches),
                tf.constant(count, tf.int32))
