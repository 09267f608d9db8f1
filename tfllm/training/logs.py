"""Run logs: metrics.csv (appended, survives a crash), TensorBoard scalars, and the
loss-curve PNG. Only the chief writes them (see pretrain.py)."""

import csv
import io
import os

from tfllm.atomic import save_figure, write_atomic
from tfllm.background import in_background
from tfllm.training import run_dir as rd

FIELDS = ("step", "train_loss", "val_loss", "learning_rate", "grad_norm", "tokens_per_sec",
          "elapsed_s")


class MetricsLog:
    """Append-only CSV: each row is flushed, so a killed run keeps what it logged."""

    def __init__(self, path):
        self.path = path

    def _fields(self):
        if os.path.exists(self.path):  # a run started by an older tfllm keeps its columns
            with open(self.path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), None)
            if header:
                return header
        return list(FIELDS)

    def write(self, **row):
        fields = self._fields()
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: row.get(k, "") for k in fields})

    def read(self):
        if not os.path.exists(self.path):
            return []
        with open(self.path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def truncate(self, step):
        """Drop rows after `step`: a resumed run logs those steps again."""
        rows = self.read()
        if not any(int(r["step"]) > step for r in rows):
            return
        fields = self._fields()
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(r for r in rows if int(r["step"]) <= step)
        write_atomic(self.path, text.getvalue())


class TensorBoardLog:
    """Scalars for TensorBoard (`tensorboard --logdir runs/NAME/tensorboard`).

    Written with `tf.summary.write` and the scalar plugin's metadata, which is what
    `tf.summary.scalar` does, so the event files need no `tensorboard` package to write.
    """

    def __init__(self, directory):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        self._tf = tf
        self._metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class=summary_pb2.DATA_CLASS_SCALAR)
        self.writer = tf.summary.create_file_writer(directory)

    def write(self, step, **scalars):
        tf = self._tf
        with self.writer.as_default():
            for name, value in scalars.items():
                if value is not None:
                    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step,
                                     metadata=self._metadata)
        self.writer.flush()

    def close(self):
        self.writer.close()


def read_tensorboard(directory):
    """{tag: [(step, value), ...]} from the event files in `directory`."""
    import glob as globbing

    import tensorflow as tf

    scalars = {}
    for path in sorted(globbing.glob(os.path.join(directory, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor))
                scalars.setdefault(value.tag, []).append((event.step, number))
    return scalars


def plot_losses(rows, path, title="loss"):
    """Train and validation loss of one run (its metrics.csv rows) against step."""
    plot_runs({"": rows}, path, title)


def plot_in_background(metrics, run_dir, title):
    """The run's loss plot (`plot_losses` of the MetricsLog `metrics`, to loss.png in
    `run_dir`) drawn on a thread of its own while the command goes on (its final
    evaluation); returns the Future."""
    return in_background(plot_losses, metrics.read(), os.path.join(run_dir, rd.LOSS_PLOT),
                         title)


def plot_runs(runs, path, title="loss"):
    """Train (solid) and validation (dashed, dots) loss against step of several runs,
    `{name: metrics.csv rows}`, in one PNG written atomically to `path`."""
    # The Figure API, not pyplot: no global state, so it may run on another thread.
    from matplotlib.figure import Figure

    def series(rows, key):
        points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
        return zip(*points) if points else ((), ())

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for i, (name, rows) in enumerate(runs.items()):
        colour = f"C{i}"
        for key, label, style in (("train_loss", "train", dict(linestyle="-")),
                                  ("val_loss", "validation", dict(linestyle="--", marker="o"))):
            steps, values = series(rows, key)
            ax.plot(steps, values, label=f"{name} {label}".strip(), color=colour, **style)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
