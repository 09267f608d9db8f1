"""Scoring a classifier: accuracy, per-class precision/recall/F1, macro and weighted F1,
the confusion matrix (and its PNG), the most confident mistakes; report.json and
report.md, each written atomically."""

import os

import numpy as np

from tfllm.atomic import save_figure, write_atomic, write_json

REPORT_JSON, REPORT_MD, CONFUSION_PNG = "report.json", "report.md", "confusion.png"


def classification_metrics(y_true, y_pred, num_classes):
    """Scores of integer predictions. A class never predicted has precision 0, one
    absent from `y_true` recall 0 (scikit-learn's zero_division=0)."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    confusion = np.zeros((num_classes, num_classes), np.int64)  # rows: true, columns: predicted
    np.add.at(confusion, (y_true, y_pred), 1)
    hits = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return {
        "accuracy": float(hits.sum() / max(len(y_true), 1)),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * support).sum() / max(support.sum(), 1)),
        "precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
        "support": support.tolist(), "confusion_matrix": confusion.tolist(),
    }


def confident_mistakes(examples, probabilities, labels, y_true, limit=10):
    """The `limit` wrong predictions made with the highest probability, most confident
    first: where the model is most sure and most wrong (often label noise)."""
    predicted = probabilities.argmax(axis=-1)
    wrong = np.flatnonzero(predicted != y_true)
    order = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")]
    return [{"source": examples[i].source, "text": examples[i].text,
             "label": labels[y_true[i]], "predicted": labels[predicted[i]],
             "confidence": float(probabilities[i, predicted[i]])} for i in order[:limit]]


def build_report(model_path, data, examples, probabilities, labels, y_true, limit=10):
    metrics = classification_metrics(y_true, probabilities.argmax(axis=-1), len(labels))
    per_class = [{"label": label, "precision": metrics["precision"][k],
                  "recall": metrics["recall"][k], "f1": metrics["f1"][k],
                  "support": metrics["support"][k]} for k, label in enumerate(labels)]
    return {
        "task": "classify", "model": model_path, "data": data, "examples": len(y_true),
        "labels": list(labels),
        "metrics": {k: metrics[k] for k in ("accuracy", "macro_precision", "macro_recall",
                                            "macro_f1", "weighted_f1")},
        "per_class": per_class,
        "confusion_matrix": metrics["confusion_matrix"],
        "confusion_png": CONFUSION_PNG,
        "mistakes": confident_mistakes(examples, probabilities, labels, y_true, limit),
    }


def format_markdown(report):
    m = report["metrics"]
    lines = ["# Classification report", "",
             f"- model: `{report['model']}`", f"- data: `{report['data']}` "
             f"({report['examples']:,} examples)", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {name.replace('_', ' ')} | {m[name]:.4f} |" for name in m]
    lines += ["", "## Per class", "", "| label | precision | recall | F1 | support |",
              "|---|---|---|---|---|"]
    lines += [f"| {_cell(c['label'])} | {c['precision']:.4f} | {c['recall']:.4f} | "
              f"{c['f1']:.4f} | {c['support']} |" for c in report["per_class"]]
    lines += ["", "## Confusion matrix (rows: true, columns: predicted)", "",
              f"![confusion matrix]({report['confusion_png']})", "",
              "| | " + " | ".join(_cell(label) for label in report["labels"]) + " |",
              "|---" * (len(report["labels"]) + 1) + "|"]
    lines += [f"| **{_cell(label)}** | " + " | ".join(str(n) for n in row) + " |"
              for label, row in zip(report["labels"], report["confusion_matrix"])]
    lines += ["", "## Most confident mistakes", "",
              "| confidence | true | predicted | where | text |", "|---|---|---|---|---|"]
    lines += [f"| {e['confidence']:.3f} | {_cell(e['label'])} | {_cell(e['predicted'])} | "
              f"{_cell(e['source'])} | {_cell(_short(e['text']))} |" for e in report["mistakes"]]
    return "\n".join(lines) + "\n"


def format_table(report):
    """The few lines evaluate.py prints."""
    m = report["metrics"]
    rows = [("model", report["model"]), ("data", f"{report['data']} "
                                                 f"({report['examples']:,} examples)"),
            ("accuracy", f"{m['accuracy']:.4f}"), ("macro F1", f"{m['macro_f1']:.4f}"),
            ("weighted F1", f"{m['weighted_f1']:.4f}")]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines += [f"  {c['label']:<12} P {c['precision']:.3f}  R {c['recall']:.3f}  "
              f"F1 {c['f1']:.3f}  n={c['support']}" for c in report["per_class"]]
    return "\n".join(lines)


def write_reports(report, out_dir):
    """report.json, report.md and confusion.png in `out_dir`, each atomically; returns
    the paths."""
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, CONFUSION_PNG)
    plot_confusion(report["confusion_matrix"], report["labels"], png)
    paths = {"json": os.path.join(out_dir, REPORT_JSON), "md": os.path.join(out_dir, REPORT_MD),
             "png": png}
    write_json(paths["json"], report)
    write_atomic(paths["md"], format_markdown(report))
    return paths


def plot_confusion(matrix, labels, path):
    """The confusion matrix as a PNG heat map, each row normalised (recall), counts
    written in the cells; written atomically."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():  # labels in scripts the default font lacks (CJK)
        warnings.filterwarnings("ignore", message="Glyph .* missing")
        _plot_confusion(plt, matrix, labels, path)


def _plot_confusion(plt, matrix, labels, path):
    counts = np.asarray(matrix, np.float64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(labels)
    size = max(4.0, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    names = [_short(str(label), 16) for label in labels]
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (colour: share of the true class)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _short(text, limit=120):
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


