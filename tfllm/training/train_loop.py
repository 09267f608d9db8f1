"""The logged train loop of token-level tasks (language modelling, chat SFT): steps,
metrics.csv and TensorBoard rows, periodic validation, checkpoints, a progress bar on a
terminal. Resuming starts from the checkpoint's step and data position."""

import os
import sys
import time

import keras
import tensorflow as tf

from tfllm.training import run_dir as rd
from tfllm.training.logs import MetricsLog, TensorBoardLog
from tfllm.training.optimizer import current_learning_rate


class RunLogs:
    """metrics.csv and TensorBoard, written by the chief."""

    def __init__(self, run_dir, resumed_step):
        self.metrics = MetricsLog(os.path.join(run_dir, rd.METRICS))
        self.metrics.truncate(resumed_step)  # steps after the checkpoint are logged again
        self.tensorboard = TensorBoardLog(os.path.join(run_dir, rd.TENSORBOARD))

    def write(self, step, loss, lr, grad_norm, rate, elapsed, val_loss=None):
        self.metrics.write(
            step=step, train_loss=f"{loss:.6f}", learning_rate=f"{lr:.4e}",
            grad_norm=f"{grad_norm:.5f}", tokens_per_sec=f"{rate:.0f}",
            elapsed_s=f"{elapsed:.1f}", val_loss="" if val_loss is None else f"{val_loss:.6f}")
        self.tensorboard.write(step, loss=loss, learning_rate=lr, grad_norm=grad_norm,
                               tokens_per_sec=rate, val_loss=val_loss)

    def close(self):
        self.tensorboard.close()


def train_loop(trainer, train_ds, val_ds, options, checkpoints, logs, log=print):
    """Run the steps left, `options.steps_per_call` at a time (a call ends at every
    logging, evaluation and checkpoint step); returns {step: train loss} for each step
    run here."""
    step = int(checkpoints.step)
    position = int(checkpoints.data_position)
    losses = {}
    if step >= options.steps:
        return losses
    # The shuffled stream is seeded, so skipping the batches already drawn resumes the data.
    batches = iter(trainer.distribute(train_ds.skip(position)))
    interactive = sys.stdout.isatty()
    progress = None
    if interactive:
        progress = keras.utils.Progbar(
            options.steps, stateful_metrics=["loss", "tok/s", "lr", "grad norm"])
        progress.update(step)
    trainer.compile_eval_step(val_ds)
    start, window_start, pending, timed = time.time(), time.time(), [], []
    while step < options.steps:
        # The first call compiles: one step, kept off the clock.
        count = 1 if not losses and not pending else min(
            options.steps_per_call, _steps_to_boundary(step, options))
        result = trainer.train_steps(batches, count)
        first = step + 1
        step += count
        position += count
        pending.append((first, result))
        if len(pending) == 1 and not losses:
            float(result[0][0])
            window_start = time.time()
        else:
            timed.append(result[1])
        last = step == options.steps
        evaluate = step % options.eval_every == 0 or last
        if step % options.log_every == 0 or evaluate:
            # Reading the numbers waits for the steps: only here, not after every call.
            for first, (call_losses, _, _) in pending:
                losses.update(zip(range(first, first + len(call_losses)),
                                  map(float, call_losses.numpy())))
            rate = sum(float(tf.reduce_sum(t)) for t in timed) / max(
                time.time() - window_start, 1e-9)
            loss, grad_norm = losses[step], float(pending[-1][1][2][-1])
            lr = current_learning_rate(trainer.optimizer)
            val_loss = trainer.evaluate(val_ds, options.eval_batches)[0] if evaluate else None
            if logs:
                logs.write(step, loss, lr, grad_norm, rate, time.time() - start, val_loss)
            if progress:
                progress.update(step, [("loss", loss), ("tok/s", rate), ("lr", lr),
                                       ("grad norm", grad_norm)])
            else:
                log(f"step {step}/{options.steps}: loss {loss:.5f}, lr {lr:.3e}, grad norm "
                    f"{grad_norm:.4f}, {rate:,.0f} tokens/s"
                    + ("" if val_loss is None else f", val loss {val_loss:.5f}"))
            pending, timed, window_start = [], [], time.time()
        if step % options.checkpoint_every == 0 or last:
            checkpoints.save(step, position)
    return losses


def _steps_to_boundary(step, options):
    """Steps from `step` to the next step that logs, evaluates, checkpoints or ends."""
    cadences = (options.log_every, options.eval_every, options.checkpoint_every)
    return min([every - step % every for every in cadences] + [options.steps - step])


def logged_train_loop(trainer, train_ds, val_ds, options, checkpoints, run_dir, chief, log):
    """`train_loop` with the chief's metrics.csv and TensorBoard open around it; returns
    (losses, the closed RunLogs or None on other workers)."""
    logs = RunLogs(run_dir, int(checkpoints.step)) if chief else None
    try:
        return train_loop(trainer, train_ds, val_ds, options, checkpoints, logs, log), logs
    finally:
        if logs:
            logs.close()


def tagged(log, prefix):
    """`log` with every line prefixed (a MultiWorker worker's lines)."""
    return lambda message: log(prefix + message)

