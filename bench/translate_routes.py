#!/usr/bin/env python3
"""English -> Chinese on Tatoeba's cmn-eng pairs, two routes on the same training time:

    python bench/translate_routes.py                     # a 12-minute budget per route
    python bench/translate_routes.py --minutes 3 --test-size 200   # a quick look

1. encoder-decoder: `train.py --task seq2seq` on the pairs, for --seq2seq-steps steps. Its
   whole train.py wall time is the budget.
2. decoder-only: a GPT pretrained on the same pairs as plain text (`train.py`, a third of
   the budget's steps by default), then fine-tuned on them as chat instructions
   ("Translate into Chinese:\\n...", an instruction mixture) with `--task sft` for as many
   steps as the rest of the budget holds, from the step time the pretraining measured.

Both use one SentencePiece vocabulary of --vocab-size over both languages, the `tiny`
shapes and train.py's defaults otherwise. Each is then scored by the report card
(`evaluate.py --suite --suite-rows translate`) on the test split: greedy output, BLEU with
sacrebleu's `zh` tokenizer and chrF. Prints a table; writes everything under --out.

The data comes by name (`python -m tfllm.datasets`): set TFLLM_DATA to a folder that holds
it, or let the first run download it.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, cwd, log, done=None, stage=None):
    """Run a top-level script; returns its wall seconds (exits on failure). A stage that
    `done` ({stage: seconds}, kept in walls.json) holds is not run again."""
    if done is not None and stage in done:
        return done[stage]
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        code = subprocess.call([sys.executable, os.path.join(ROOT, args[0]), *map(str, args[1:])],
                               cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"error: {' '.join(map(str, args))} exited with {code}; see {log}")
    seconds = time.perf_counter() - t0
    if done is not None:
        done[stage] = seconds
        with open(os.path.join(cwd, "walls.json"), "w", encoding="utf-8") as f:
            json.dump(done, f)
    return seconds


def median_tokens_per_s(log):
    """The median of a train.py log's tokens/s lines."""
    with open(log, encoding="utf-8") as f:
        rates = [float(r.replace(",", "")) for r in re.findall(r"([\d,.]+) tokens/s", f.read())]
    return sorted(rates)[len(rates) // 2]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=12.0,
                   help="the budget: the encoder-decoder's steps are chosen to take about "
                   "this long (at --seconds-per-step), and the decoder-only route gets "
                   "the time the encoder-decoder really took")
    p.add_argument("--seq2seq-steps", type=int, default=0,
                   help="the encoder-decoder's steps (default: from --minutes)")
    p.add_argument("--seconds-per-step", type=float, default=0.45,
                   help="the encoder-decoder's expected step time, to choose its steps")
    p.add_argument("--gpt-seconds-per-step", type=float, default=0.9,
                   help="the GPT's expected step time, to choose its pretraining steps")
    p.add_argument("--pretrain-share", type=float, default=1 / 3,
                   help="the decoder-only route's share of the budget spent pretraining")
    p.add_argument("--vocab-size", type=int, default=6000)
    p.add_argument("--test-size", type=int, default=2925, help="test pairs scored")
    p.add_argument("--out", default="translate_routes")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    out = os.path.abspath(args.out)
    walls = os.path.join(out, "walls.json")
    # Rerun with the same --out, a finished stage is kept (its time too).
    done = {}
    if os.path.exists(walls):
        with open(walls, encoding="utf-8") as f:
            done = json.load(f)
    common = ["--no-export", "--eval-every", 250, "--checkpoint-every", 1000]
    scratch = ["--vocab-size", args.vocab_size, *common]  # --init runs take the vocabulary

    steps = args.seq2seq_steps or int(args.minutes * 60 / args.seconds_per_step)
    budget = run(["train.py", "--task", "seq2seq", "--data", "cmn-eng", "--val", "cmn-eng:valid",
                  "--name", "en-zh", "--steps", steps, "--eval-pairs", 0, *scratch], out,
                 os.path.join(out, "seq2seq.log"), done, "seq2seq")
    print(f"encoder-decoder: {steps} steps in {budget:.0f} s (the budget)", flush=True)

    pre_steps = max(20, int(budget * args.pretrain_share / args.gpt_seconds_per_step))
    pre_wall = run(["train.py", "--data", "cmn-eng", "--val", "cmn-eng:valid", "--name",
                    "pairs-lm", "--steps", pre_steps, "--sample-tokens", 0, *scratch], out,
                   os.path.join(out, "pretrain.log"), done, "pretrain")
    for name, source in (("train", "cmn-eng"), ("valid", "cmn-eng:valid")):
        with open(os.path.join(out, f"{name}_mix.json"), "w", encoding="utf-8") as f:
            json.dump({"sources": [{"data": source, "kind": "translate",
                                    "direction": "en-zh"}],
                       **({"examples": 200} if name == "valid" else {})}, f)
    # The fine-tune runs the same model on rows of the same size as the pretraining, so
    # its steps take as long; its start-up and evaluations about as long too.
    step_s = 32 * 128 / median_tokens_per_s(os.path.join(out, "pretrain.log"))
    outside = max(0.0, pre_wall - pre_steps * step_s)
    sft_steps = max(20, int((budget - pre_wall - outside) / step_s))
    sft_wall = run(["train.py", "--task", "sft", "--init", "runs/pairs-lm", "--data",
                    "train_mix.json", "--val", "valid_mix.json", "--name", "pairs-sft",
                    "--steps", sft_steps, "--warmup-steps", 20, *common], out,
                   os.path.join(out, "sft.log"), done, "sft")
    print(f"decoder-only: {pre_steps} pretraining + {sft_steps} fine-tuning steps in "
          f"{pre_wall:.0f} + {sft_wall:.0f} s", flush=True)

    run(["evaluate.py", "runs/en-zh", "runs/pairs-sft", "--suite", "--suite-rows",
         "translate", "--suite-size", args.test_size, "--out", "card"], out,
        os.path.join(out, "card.log"))
    with open(os.path.join(out, "card", "report.json"), encoding="utf-8") as f:
        rows = json.load(f)["rows"]["translate"]
    print("\n| route | steps | training wall | BLEU (zh) | chrF | test pairs |")
    print("| --- | --- | --- | --- | --- | --- |")
    for route, path, wall, how in (
            ("encoder-decoder (seq2seq)", "runs/en-zh", budget, f"{steps}"),
            ("decoder-only (pretrain + SFT)", "runs/pairs-sft", pre_wall + sft_wall,
             f"{pre_steps} + {sft_steps}")):
        r = rows[path]
        print(f"| {route} | {how} | {wall / 60:.1f} min | {r['bleu']:.2f} | {r['chrf']:.2f} | "
              f"{r['pairs']} |")
    print(f"\nreport card: {os.path.join(out, 'card', 'report.md')}")


if __name__ == "__main__":
    main()
