#!/usr/bin/env python3
"""Train a GPT. With no arguments: the `tiny` preset on CPython's own documentation.

    python train.py                                  # built-in corpus, tiny preset
    python train.py --data corpus.txt --preset small --steps 5000 --name mymodel

Writes runs/<name>/ and exports saved_models/<name>/<version>/. Run with --help for every flag.
"""

import argparse
import sys

from tfllm.cli import exit_code, import_tensorflow_quietly
from tfllm.training.options import TrainOptions
from tfllm.training.strategy import start_strategy

# Preset fields a flag may override: (flag, GPTConfig field, type, help).
OVERRIDES = [
    ("--vocab-size", "vocab_size", int, "tokenizer/model vocabulary size (SentencePiece)"),
    ("--context-length", "context_length", int, "longest sequence the model accepts"),
    ("--num-layers", "num_layers", int, "transformer blocks"),
    ("--num-heads", "num_heads", int, "attention heads per block"),
    ("--embed-dim", "embed_dim", int, "model width"),
    ("--intermediate-dim", "intermediate_dim", int, "feed-forward width (default 4x width)"),
    ("--dropout", "dropout", float, "dropout rate (default 0)"),
    ("--position-type", "position_type", str, "position embedding: learned or sinusoidal"),
]


def parse_args(argv=None):
    d = TrainOptions()
    p = argparse.ArgumentParser(
        description="Train a GPT-style language model; writes runs/NAME/ and a SavedModel.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", default=d.task, choices=["lm", "sft", "classify"],
                   help="lm: pretrain on text; sft: fine-tune a run (--init) on conversations "
                   "(JSONL); classify: train a text classifier (label<TAB>text, CSV, JSONL)")
    p.add_argument("--data", default="", help="lm: text file(s), directory or glob, comma-"
                   "separated, empty for CPython's bundled documentation (pydoc_data); "
                   "sft/classify: the training file")
    p.add_argument("--val", default="", help="sft/classify: validation file (default: a "
                   "held-out share of --data)")
    p.add_argument("--preset", default=d.preset, help="model size: tiny, small or gpt2")
    p.add_argument("--init", default="", help="start from a train.py run directory "
                   "(runs/NAME) or pretrained GPT-2 weights: a Hugging Face directory "
                   "(config.json, model.safetensors, vocab.json, merges.txt) or a keras-hub "
                   "GPT2 preset; the model shape and tokenizer come from it")
    p.add_argument("--lora-rank", type=int, default=d.lora_rank, help="sft: train only "
                   "rank-N LoRA adapters on the attention and feed-forward projections "
                   "(merged into the export); 0: train every weight")
    p.add_argument("--pooling", default=d.pooling, choices=["mean", "max", "cls", "last"],
                   help="classify: mean or max over the tokens, a class token, or the last "
                   "token (a GPT from --init)")
    p.add_argument("--token-dropout", type=float, default=d.token_dropout,
                   help="classify: drop this share of each text's tokens while training "
                   "(word dropout)")
    p.add_argument("--patience", type=int, default=d.patience, help="classify: stop after "
                   "this many evaluations without a better validation accuracy; 0: off")
    p.add_argument("--members", type=int, default=d.members,
                   help="classify: train an ensemble of this many classifiers as one model "
                   "(their log-probabilities averaged); each costs a classifier's time")
    p.add_argument("--class-weights", action="store_true",
                   help="classify: weigh each class by its inverse frequency in --data")
    p.add_argument("--text-column", default=d.text_column,
                   help="classify: the text column of a CSV/JSONL file")
    p.add_argument("--label-column", default=d.label_column,
                   help="classify: the label column of a CSV/JSONL file")
    for flag, _, kind, help_text in OVERRIDES:
        p.add_argument(flag, type=kind, help=f"override the preset's {help_text}")
    p.add_argument("--untied-embeddings", action="store_true",
                   help="give the output layer its own weights instead of the input embedding's")
    p.add_argument("--tokenizer", default=d.tokenizer, choices=["sentencepiece", "char"],
                   help="SentencePiece BPE trained on the data, or characters")
    p.add_argument("--steps", type=int, default=d.steps, help="optimizer steps in total")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch (windows)")
    p.add_argument("--seq-len", type=int, default=d.seq_len,
                   help="tokens per training window; 0: the preset's context length")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW)")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help="linear warm-up steps before the cosine decay")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="decoupled weight decay (not on norms, biases, embeddings)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for weights, data order, samples")
    p.add_argument("--name", default="", help="run name: runs/NAME and saved_models/NAME "
                   "(default: the preset's name); rerunning a name resumes it")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="share of the token stream (its end) held out for validation")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="steps between validations")
    p.add_argument("--eval-batches", type=int, default=d.eval_batches,
                   help="validation batches per periodic evaluation (the final one uses all)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="steps between checkpoints")
    p.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints,
                   help="how many of the latest checkpoints to keep")
    p.add_argument("--log-every", type=int, default=d.log_every,
                   help="steps between metrics.csv/TensorBoard rows (and log lines)")
    p.add_argument("--strategy", default=d.strategy, help="tf.distribute strategy: auto (TPU "
                   "if one resolves, multiworker if TF_CONFIG names several workers, mirrored "
                   "if several GPUs, else default), default, mirrored, multiworker or tpu")
    p.add_argument("--precision", default=d.precision, help="fp32, bf16 or fp16 (mixed "
                   "precision: float32 weights, softmax and loss; fp16 adds loss scaling)")
    p.add_argument("--xla", action=argparse.BooleanOptionalAction, default=d.xla,
                   help="compile the train and eval steps with XLA (about 2x faster on CPU)")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum,
                   help="split each step's batch into this many micro-batches (the same "
                   "update with less memory)")
    p.add_argument("--steps-per-call", type=int, default=d.steps_per_call,
                   help="optimizer steps run in one call of the compiled train loop (less "
                   "Python per step; a call still ends at every log, eval and checkpoint "
                   "step, and the result does not depend on it)")
    p.add_argument("--beta2", type=float, default=d.beta2,
                   help="AdamW's second-moment decay (nanoGPT's small-batch recipes use 0.99)")
    p.add_argument("--random-windows", action=argparse.BooleanOptionalAction,
                   default=d.random_windows, help="lm: train on windows at random offsets of "
                   "the text (nanoGPT's sampling) instead of fixed, shuffled cuts")
    p.add_argument("--clip-norm", type=float, default=d.clip_norm,
                   help="clip the gradient's global norm (over all replicas) to this; 0: off")
    p.add_argument("--sample-tokens", type=int, default=d.sample_tokens,
                   help="tokens generated per prompt for samples.txt; 0: no samples")
    p.add_argument("--runs-dir", default=d.runs_dir, help="where run directories go")
    p.add_argument("--export-dir", default=d.export_dir, help="where SavedModels go")
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    return p.parse_args(argv)


def options_from(args):
    overrides = {field: getattr(args, field) for _, field, _, _ in OVERRIDES
                 if getattr(args, field) is not None}
    if args.untied_embeddings:
        overrides["tie_embeddings"] = False
    return TrainOptions(
        task=args.task, val=args.val, lora_rank=args.lora_rank, pooling=args.pooling,
        class_weights=args.class_weights, token_dropout=args.token_dropout,
        patience=args.patience, members=args.members, text_column=args.text_column,
        label_column=args.label_column, data=args.data, preset=args.preset, init=args.init, overrides=overrides,
        tokenizer=args.tokenizer,
        steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, seed=args.seed,
        name=args.name, val_fraction=args.val_fraction, eval_every=args.eval_every,
        eval_batches=args.eval_batches, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, log_every=args.log_every,
        strategy=args.strategy, precision=args.precision, xla=args.xla,
        grad_accum=args.grad_accum, steps_per_call=args.steps_per_call, beta2=args.beta2,
        random_windows=args.random_windows,
        clip_norm=args.clip_norm, sample_tokens=args.sample_tokens,
        runs_dir=args.runs_dir, export_dir=args.export_dir, export=not args.no_export)


def main(argv=None):
    args = parse_args(argv)

    def run():
        options = options_from(args)
        # Checks the strategy and TF_CONFIG; MultiWorker must start before TF's devices do.
        start_strategy(options.strategy, options.batch_size)
        import_tensorflow_quietly()
        if options.task == "sft":
            from tfllm.training.sft import train_sft as train
        elif options.task == "classify":
            from tfllm.training.classify import train_classifier as train
        else:
            from tfllm.training.pretrain import pretrain as train
        train(options)

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
