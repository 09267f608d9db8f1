#!/usr/bin/env python3
"""Text classification: tfllm's small transformer against TF-IDF + logistic regression.

    python bench/classify.py                      # SST-2, AG News, THUCNews headlines
    python bench/classify.py --sets sst2 --work /tmp/bench

Both train on each set's train.tsv, choose on valid.tsv (the baseline its C, tfllm its
best checkpoint and early stop) and are scored once on test.tsv. The baseline uses word
1-2-grams for English and character 1-3-grams for Chinese (no word segmentation). Sized
for 2 CPU cores: about 10 minutes for the three sets on a quiet machine (the table shows
wall and CPU seconds; other load on the machine stretches the wall time).
"""

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.path.join(ROOT, "..", "shared", "data")

# name -> (directory under shared/data, Chinese?)
SETS = {"sst2": ("sentiment/sst2", False), "ag_news": ("news/ag_news", False),
        "thucnews": ("zh/thucnews_titles", True)}
BASELINE_C = (1.0, 4.0, 16.0)

# The tfllm recipe of each set: an ensemble of five narrow encoders with mean pooling
# (trained as one model, each on its own loss), dropout on the residuals and on the
# tokens themselves (word dropout), early stopping on validation accuracy. Chosen on the
# validation sets (never on test).
COMMON = dict(batch_size=32, warmup_steps=100, weight_decay=0.1, eval_every=150,
              log_every=150, checkpoint_every=100_000, pooling="mean", members=5)
RECIPES = {
    "sst2": dict(vocab_size=8000, num_layers=1, embed_dim=64, num_heads=2, dropout=0.3,
                 steps=1500, lr=2e-3),
    "ag_news": dict(vocab_size=8000, num_layers=1, embed_dim=64, num_heads=2, dropout=0.3,
                    steps=1500, lr=2e-3),
    # Headlines are short: twice the steps cost what AG News's long texts do; a smaller
    # vocabulary keeps most pieces single characters, as the baseline's n-grams are.
    "thucnews": dict(vocab_size=5000, num_layers=1, embed_dim=64, num_heads=2, dropout=0.3,
                     steps=3000, lr=2e-3),
}
TOKEN_DROPOUT = 0.2
PATIENCE = 4  # evaluations without a better validation accuracy


def read_split(path):
    from tfllm.tasks.classify.data import read_examples

    return read_examples(path)


def baseline(train, val, test, chinese):
    """TF-IDF + logistic regression, C chosen on validation: (accuracy, macro-F1, wall s,
    CPU s, C)."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    wall, cpu = time.time(), time.process_time()
    vectorizer = (TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
                  if chinese else
                  TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True))
    x_train = vectorizer.fit_transform([e.text for e in train])
    x_val, x_test = (vectorizer.transform([e.text for e in split]) for split in (val, test))
    y_train, y_val, y_test = (np.array([e.label for e in split]) for split in (train, val, test))
    best = None
    for c in BASELINE_C:
        model = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)
        accuracy = float((model.predict(x_val) == y_val).mean())
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model)
    predicted = best[2].predict(x_test)
    return (float((predicted == y_test).mean()),
            float(f1_score(y_test, predicted, average="macro")),
            time.time() - wall, time.process_time() - cpu, best[1])


def tfllm_run(name, directory, work, log):
    """Train tfllm's classifier and score it on test: (accuracy, macro-F1, wall s, CPU s,
    validation accuracy, best step)."""
    from tfllm.tasks.classify.data import label_ids
    from tfllm.tasks.classify.model import load_classifier
    from tfllm.tasks.classify.options import ClassifyOptions
    from tfllm.tasks.classify.report import classification_metrics
    from tfllm.tasks.classify.train import train_classifier

    recipe = {**COMMON, **RECIPES[name]}
    options = ClassifyOptions(data=os.path.join(directory, "train.tsv"),
                              val=os.path.join(directory, "valid.tsv"), name=name,
                              runs_dir=os.path.join(work, "runs"), export=False,
                              patience=PATIENCE, token_dropout=TOKEN_DROPOUT, **recipe)
    wall, cpu = time.time(), time.process_time()
    result = train_classifier(options, log=log)
    wall, cpu = time.time() - wall, time.process_time() - cpu
    classifier = load_classifier(result["run_dir"])
    test = read_split(os.path.join(directory, "test.tsv"))
    y_test = label_ids(test, classifier.labels)
    predicted = classifier.predict_proba([e.text for e in test], batch_size=256).argmax(-1)
    metrics = classification_metrics(y_test, predicted, len(classifier.labels))
    return (metrics["accuracy"], metrics["macro_f1"], wall, cpu, result["val_accuracy"],
            result["best_step"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS),
                        help=f"comma-separated, from {', '.join(SETS)}")
    parser.add_argument("--data", default=DATA, help="the shared data directory")
    parser.add_argument("--work", default="", help="where tfllm's runs go (default: a "
                        "temporary directory)")
    parser.add_argument("--quiet", action="store_true", help="no training log lines")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [n for n in names if n not in SETS]
    if unknown:
        print(f"error: unknown set {unknown[0]!r}: choose from {', '.join(SETS)}",
              file=sys.stderr)
        return 2
    missing = [os.path.join(args.data, SETS[n][0], f"{s}.tsv") for n in names
               for s in ("train", "valid", "test")
               if not os.path.exists(os.path.join(args.data, SETS[n][0], f"{s}.tsv"))]
    if missing:
        print(f"error: the benchmark data is missing ({os.path.normpath(missing[0])} not "
              f"found): it reads ../shared/data beside the repository (see its README), or "
              "pass --data DIR", file=sys.stderr)
        return 2

    from tfllm.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    work = args.work or tempfile.mkdtemp(prefix="tfllm-bench-classify-")
    log = (lambda message: None) if args.quiet else \
        (lambda message: print(f"  {message}", flush=True))
    rows = []
    for name in names:
        directory = os.path.join(args.data, SETS[name][0])
        train, val, test = (read_split(os.path.join(directory, f"{s}.tsv"))
                            for s in ("train", "valid", "test"))
        print(f"{name}: {len(train):,} / {len(val):,} / {len(test):,} examples", flush=True)
        base = baseline(train, val, test, SETS[name][1])
        print(f"  TF-IDF + LR (C={base[4]:g}): test accuracy {base[0]:.4f} "
              f"[{base[2]:.0f}s]", flush=True)
        ours = tfllm_run(name, directory, work, log)
        print(f"  tfllm: test accuracy {ours[0]:.4f} (validation {ours[4]:.4f} at step "
              f"{ours[5]}) [{ours[2]:.0f}s]", flush=True)
        rows.append((name, base, ours))

    print()
    header = (f"{'set':<9} | {'TF-IDF+LR acc':>13} {'macro-F1':>8} {'train s':>7} | "
              f"{'tfllm acc':>9} {'macro-F1':>8} {'train s':>7} {'CPU s':>6} | better")
    print(header)
    print("-" * len(header))
    for name, base, ours in rows:
        better = "tfllm" if ours[0] > base[0] else "TF-IDF"
        print(f"{name:<9} | {base[0]:>13.4f} {base[1]:>8.4f} {base[2]:>7.0f} | "
              f"{ours[0]:>9.4f} {ours[1]:>8.4f} {ours[2]:>7.0f} {ours[3]:>6.0f} | {better}")
    wins = sum(ours[0] > base[0] for _, base, ours in rows)
    print(f"\ntfllm beats the baseline's test accuracy on {wins} of {len(rows)} set(s); runs "
          f"in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
