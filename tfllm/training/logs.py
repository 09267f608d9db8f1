"""Run logs: metrics.csv (appended, survives a crash) and the loss-curve PNG."""

import csv
import os

FIELDS = ("step", "train_loss", "val_loss", "learning_rate", "tokens_per_sec", "elapsed_s")


class MetricsLog:
    """Append-only CSV: each row is flushed, so a killed run keeps what it logged."""

    def __init__(self, path):
        self.path = path

    def write(self, **row):
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            if new:
                writer.writeheader()
            writer.writerow({k: row.get(k, "") for k in FIELDS})

    def read(self):
        if not os.path.exists(self.path):
            return []
        with open(self.path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))


def plot_losses(rows, path, title="loss"):
    """Train and validation loss against step, written atomically to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key):
        points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
        return zip(*points) if points else ((), ())

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        steps, values = series(key)
        ax.plot(steps, values, label=label, marker="o" if key == "val_loss" else None)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
