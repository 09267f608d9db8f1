"""evaluate.py for a language model (run directory or SavedModel): loss, perplexity and
bits per byte on held-out text, and continuations of the prompts given."""

import os

from tfllm.evaluation import (format_table, heldout_texts, load_for_evaluation, score_texts,
                              write_report)
from tfllm.generation import check_generation_args


def evaluate_lm(args):
    """Score `args.model` on `args.data` (default: the run's validation text), generate
    from `args.prompt`, print the table and write report.json."""
    if args.prompt:
        check_generation_args(args.max_new_tokens, 0.0, 0, 1.0)
    model = load_for_evaluation(args.model)
    context = model.context_length
    seq_len = args.seq_len or context
    if seq_len > context:
        raise ValueError(f"--seq-len {seq_len} is above the model's context of {context}: "
                         "lower it")
    texts = heldout_texts(model.train_options, args.data)
    if not texts:
        raise ValueError("no held-out text to score: pass --data FILE")
    metrics = score_texts(model, texts, seq_len, args.batch_size)
    outputs = model.generate(args.prompt, args.max_new_tokens) if args.prompt else []
    report = {"model": args.model, "data": args.data or "validation split of the run's data",
              "seq_len": seq_len, "metrics": metrics,
              "generations": [{"prompt": p, "output": o} for p, o in zip(args.prompt, outputs)]}
    is_saved_model = os.path.exists(os.path.join(args.model, "saved_model.pb"))
    path = write_report(report, args.out or ("." if is_saved_model else args.model))
    print(format_table(report))
    print(f"report: {path}")
