#!/usr/bin/env python3
"""tfllm against nanoGPT on nanoGPT's own CPU recipe, in the same run.

    python bench/vs_nanogpt.py                  # one round: each command once, then the steps
    python bench/vs_nanogpt.py --rounds 2       # alternating, medians over the rounds
    python bench/vs_nanogpt.py --iters 300      # a quick look (not the recipe's 2,000)

The recipe (nanoGPT's README, "I only have a macbook"): character-level Tiny Shakespeare,
4 layers x 128, 4 heads, context 64, batch 12, 2,000 iterations, lr 1e-3 with 100 warm-up
steps and cosine decay to 1e-4, dropout 0. nanoGPT runs through
`../shared/ref/run_nanogpt_cpu.sh` (torch in its own venv; this script makes the venv with
torch==2.13.0, the CPU wheel, if it is missing), tfllm through its own `train.py` with the
same data and hyper-parameters. The two commands alternate round by round, then the steps
alone do. Printed, for each and as a ratio:

    validation loss      the final model on the whole validation split (consecutive
                         64-token windows), and nanoGPT's estimator: the mean over 20 random
                         batches of 12 windows (for tfllm: 20 such batches drawn here)
    wall time            the whole command, start-up to exit
    step in the loop     the median time per training step while the loop runs (nanoGPT's
                         `time ...ms` lines, tfllm's tokens/s lines), and its tokens/s
    peak memory          the largest resident set of the command's processes
    step alone           one training step (forward, backward, clipping, AdamW) on one fixed
                         batch of 12 x 64, the same model, nothing else; for tfllm also with
                         its default steps per call, and the matmuls-alone bound
                         (bench/train_throughput.py): the step's matrix products alone;
                         and both on one thread (torch.set_num_threads(1), one TensorFlow
                         thread), which separates per-thread speed from parallelism
    loop overhead        step in the loop over step alone
    outside the loop     wall time less the iterations at the loop's step time: start-up,
                         compilation, evaluations, checkpoints (and any slower stretch of
                         the loop, which the median leaves out)
    outside, timed       for tfllm, each part timed from when its output lines arrive:
                         start-up (to the "model:" line), the first call (the first
                         logged steps less their time at the median step), the periodic
                         evaluations (each evaluating interval less its steps), the final
                         whole-split evaluation and the exit after it

Speed ratios are nanoGPT's time over tfllm's (above 1: tfllm is faster). Without
`../shared` (a fresh clone) it says so and exits 0.
"""

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
RUN_NANOGPT = os.path.join(SHARED, "ref", "run_nanogpt_cpu.sh")
NANOGPT_DIR = os.path.join(SHARED, "ref", "nanogpt")
DATA = os.path.join(SHARED, "data", "tinyshakespeare", "input.txt")
VENV = os.environ.get("NANOGPT_VENV", "/tmp/nanogpt-venv")
TORCH = "torch==2.13.0"  # the CPU wheel; a bare `torch` would pull the CUDA build

LAYERS, HEADS, WIDTH, CONTEXT, BATCH = 4, 4, 128, 64, 12
LR, MIN_LR, WARMUP, WEIGHT_DECAY, CLIP = 1e-3, 1e-4, 100, 0.1, 1.0
EVAL_EVERY, EVAL_BATCHES = 250, 20
NANOGPT_LINE = re.compile(r"nanogpt: val (\S+) at iter (\d+), wall (\S+) s, (\S+) ms/iter "
                          r"\(median\), whole-split val (\S+)")


def tfllm_command(iters, run_dir):
    return [sys.executable, os.path.join(ROOT, "train.py"), "--data", DATA,
            "--tokenizer", "char", "--num-layers", str(LAYERS), "--num-heads", str(HEADS),
            "--embed-dim", str(WIDTH), "--context-length", str(CONTEXT),
            "--seq-len", str(CONTEXT), "--batch-size", str(BATCH), "--steps", str(iters),
            "--lr", str(LR), "--warmup-steps", str(WARMUP), "--dropout", "0",
            "--eval-every", str(min(EVAL_EVERY, iters)), "--eval-batches", str(EVAL_BATCHES),
            "--beta2", "0.99", "--random-windows",  # nanoGPT's optimizer and sampling
            "--sample-tokens", "0", "--no-export", "--name", "shakespeare",
            "--runs-dir", run_dir]


def nanogpt_python():
    """The venv's python with torch (made on first use)."""
    if os.environ.get("NANOGPT_PY"):
        return os.environ["NANOGPT_PY"]
    python = os.path.join(VENV, "bin", "python")
    ready = os.path.exists(python) and subprocess.run(
        [python, "-c", "import torch, numpy"], capture_output=True).returncode == 0
    if not ready:
        print(f"making {VENV} with {TORCH} (about a minute)", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", TORCH, "numpy"], check=True)
    return python


def timed(command, env=None, lines=None):
    """(stdout, wall seconds, peak resident MB of the command and what it waited for).
    With a list `lines`, each stdout line is appended to it as (seconds since the start,
    line) when it arrives; stderr then goes with stdout."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        stderr=subprocess.PIPE if lines is None else subprocess.STDOUT)
    if lines is None:
        out, err = process.communicate()
    else:
        for line in process.stdout:
            lines.append((time.perf_counter() - start, line))
        process.wait()
        out = err = "".join(line for _, line in lines)
    wall = time.perf_counter() - start
    # The kernel's peak for the child, merged with those of its own waited-for children.
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if process.returncode:
        raise RuntimeError(f"{command[:2]} failed ({process.returncode}): {err[-2000:]}")
    return out, wall, peak_mb


def in_fresh_process(function, *args, env=None):
    """`function(*args)` of this file, run in a fresh interpreter (with `env` added): a
    command started there is its only child, so RUSAGE_CHILDREN there is that command's
    alone."""
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
            f"import vs_nanogpt as b; print('RESULT', repr(b.{function}(*{args!r})))")
    out, _, _ = timed([sys.executable, "-c", code], env)
    line = [row for row in out.splitlines() if row.startswith("RESULT ")][-1]
    return eval(line[len("RESULT "):])  # noqa: S307  (our own repr)


def run_nanogpt(iters):
    return in_fresh_process("_nanogpt_command", iters)


def _nanogpt_command(iters):
    # A short run evaluates (and so keeps a checkpoint) at its end too.
    out, _, peak = timed(["bash", RUN_NANOGPT, f"--max_iters={iters}",
                          f"--lr_decay_iters={iters}",
                          f"--eval_interval={min(EVAL_EVERY, iters)}"],
                         env={"NANOGPT_PY": nanogpt_python()})
    match = NANOGPT_LINE.search(out)
    if not match:
        raise RuntimeError(f"no result line from nanoGPT: {out[-2000:]}")
    # Its wall time is its train.py's alone (not the data preparation or the whole-split
    # scoring the script adds), where tfllm's includes its final whole-split evaluation.
    return {"val_20": float(match[1]), "val_whole": float(match[5]), "wall": float(match[3]),
            "ms_per_step": float(match[4]), "peak_mb": peak}


def _tfllm_command(iters):
    with tempfile.TemporaryDirectory(prefix="vs-nanogpt-") as work:
        lines = []
        out, wall, peak = timed(tfllm_command(iters, work), lines=lines)
        rates = [float(r.replace(",", "")) for r in re.findall(r"([\d,]+) tokens/s", out)]
        val_whole = float(re.findall(r"validation loss ([\d.]+) nats/token", out)[-1])
        val_20 = random_batch_loss(os.path.join(work, "shakespeare"))
    ms_per_step = 1000 * BATCH * CONTEXT / statistics.median(rates)
    return {"val_20": val_20, "val_whole": val_whole, "wall": wall,
            "ms_per_step": ms_per_step, "peak_mb": peak,
            "parts": outside_parts(lines, wall, ms_per_step)}


STEP_LINE = re.compile(r"step (\d+)/\d+: .*?([\d,]+) tokens/s")


def outside_parts(lines, wall, ms_per_step):
    """Seconds of each part of a tfllm command outside its train loop, from the arrival
    times of its lines: start-up, first call, evaluations, final evaluation, exit. The
    first logged interval counts whole as the first call."""
    model = next(t for t, line in lines if line.startswith("model:"))
    final = next(t for t, line in lines if line.startswith("validation loss"))
    steps = [(t, int(m[1]), float(m[2].replace(",", "")), "val loss" in line)
             for t, line in lines if (m := STEP_LINE.match(line))]
    first_time, first_step = steps[0][:2]
    evaluations = 0.0
    for (t0, step0, _, _), (t, step, rate, evaluated) in zip(steps, steps[1:]):
        if evaluated:  # the interval less its steps at the interval's own rate
            evaluations += t - t0 - (step - step0) * BATCH * CONTEXT / rate
    return {"start-up": model,
            "first call": first_time - model - first_step * ms_per_step / 1000,
            "evaluations": evaluations, "final evaluation": final - steps[-1][0],
            "exit": wall - final}


def run_tfllm(iters):
    return in_fresh_process("_tfllm_command", iters)


def random_batch_loss(run_dir, batches=EVAL_BATCHES, seed=0):
    """nanoGPT's estimator on a tfllm run: mean loss over `batches` batches of BATCH
    windows at random offsets of the validation split."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, ROOT)
    import numpy as np
    import tensorflow as tf

    from tfllm.data import heldout_ids, read_texts, split_texts
    from tfllm.training.run_dir import load_run, train_options

    model, tokenizer, _ = load_run(run_dir)
    options = train_options(run_dir)
    _, val_texts = split_texts(read_texts(options["data"]), options["val_fraction"])
    ids = heldout_ids(tokenizer, val_texts)[1:]  # the text alone, as nanoGPT's val.bin
    rng = np.random.default_rng(seed)
    logits = tf.function(lambda x: model(x, training=False), jit_compile=True)
    losses = []
    for _ in range(batches):
        starts = rng.integers(0, len(ids) - CONTEXT, BATCH)
        windows = np.stack([ids[s:s + CONTEXT + 1] for s in starts])
        x, y = windows[:, :-1], windows[:, 1:]
        losses.append(float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y, logits=logits(tf.constant(x))))))
    return float(np.mean(losses))


NANOGPT_STEP = r"""
import statistics, sys, time
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from model import GPT, GPTConfig
steps, warm, threads = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if threads:
    torch.set_num_threads(threads)
torch.manual_seed(0)
model = GPT(GPTConfig(n_layer=%d, n_head=%d, n_embd=%d, block_size=%d, vocab_size=65,
                      dropout=0.0, bias=False))
optimizer = model.configure_optimizers(%r, %r, (0.9, 0.99), "cpu")
rng = np.random.default_rng(0)
ids = torch.from_numpy(rng.integers(0, 65, (%d, %d + 1)))
x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
times = []
for i in range(warm + steps):
    start = time.perf_counter()
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), %r)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss.item()
    times.append(time.perf_counter() - start)
print("RESULT", 1000 * statistics.median(times[warm:]))
""" % (LAYERS, HEADS, WIDTH, CONTEXT, WEIGHT_DECAY, LR, BATCH, CONTEXT, CLIP)


def nanogpt_step_ms(steps, warm=10, threads=0):
    """ms per step alone; `threads` > 0 limits torch to that many threads."""
    out = subprocess.run([nanogpt_python(), "-c", NANOGPT_STEP, NANOGPT_DIR, str(steps),
                          str(warm), str(threads)], capture_output=True, text=True,
                         check=True).stdout
    return float(out.split("RESULT")[-1])


def _tfllm_step_ms(steps, warm=2):
    """(one step per call, the default steps per call, the matmuls alone): ms per step,
    medians over calls of 10 steps (the single steps dispatched without waiting)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, ROOT)
    import keras
    import numpy as np
    import tensorflow as tf

    from train_throughput import matmul_floor_step
    from tfllm.models import GPTConfig, build_gpt
    from tfllm.training.loop import Trainer
    from tfllm.training.optimizer import build_optimizer
    from tfllm.training.options import TrainOptions

    keras.utils.set_random_seed(0)
    config = GPTConfig(vocab_size=65, context_length=CONTEXT, num_layers=LAYERS,
                       num_heads=HEADS, embed_dim=WIDTH, dropout=0.0)
    model = build_gpt(config)
    optimizer = build_optimizer(model, LR, 10**6, WARMUP, WEIGHT_DECAY, clip_norm=CLIP)
    trainer = Trainer(model, optimizer, tf.distribute.get_strategy(), jit_compile=True)
    ids = np.random.default_rng(0).integers(1, 65, (BATCH, CONTEXT + 1)).astype(np.int32)
    x, y = tf.constant(ids[:, :-1]), tf.constant(ids[:, 1:])
    batches = iter(trainer.distribute(tf.data.Dataset.from_tensors((x, y)).repeat()))
    per_call = TrainOptions().steps_per_call
    bound = matmul_floor_step(dict(vocab_size=65, context_length=CONTEXT, num_layers=LAYERS,
                                   num_heads=HEADS, embed_dim=WIDTH, batch=BATCH))
    runs = {"one": lambda: [trainer.train_step((x, y)) for _ in range(per_call)][-1][0],
            "per_call": lambda: trainer.train_steps(batches, per_call)[0],
            "matmuls": lambda: [bound() for _ in range(per_call)][-1]}
    times = {name: [] for name in runs}
    for i in range(warm + steps // per_call):
        for name, run in runs.items():  # alternating
            start = time.perf_counter()
            np.asarray(run())
            if i >= warm:
                times[name].append((time.perf_counter() - start) / per_call)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1, help="rounds of both commands")
    p.add_argument("--iters", type=int, default=2000, help="training steps of each command")
    p.add_argument("--step-iters", type=int, default=200, help="steps timed for the steps "
                   "alone, per round")
    args = p.parse_args(argv)
    if not (os.path.exists(RUN_NANOGPT) and os.path.exists(DATA)):
        print(f"skipped: {RUN_NANOGPT} or {DATA} is missing (../shared comes with the "
              "project's machines, not with a clone)")
        return 0
    nanogpt_python()
    runs = {"nanoGPT": [], "tfllm": []}
    steps = {"nanoGPT": [], "tfllm": [], "tfllm per call": [], "matmuls alone": [],
             "nanoGPT 1 thread": [], "tfllm 1 thread": []}
    one_thread = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    for r in range(args.rounds):
        for name, run in (("nanoGPT", run_nanogpt), ("tfllm", run_tfllm))[::1 - 2 * (r % 2)]:
            runs[name].append(run(args.iters))
            print(f"round {r + 1}: {name} {runs[name][-1]}", file=sys.stderr, flush=True)
        for name in ("nanoGPT", "tfllm")[::1 - 2 * (r % 2)]:
            if name == "nanoGPT":
                steps["nanoGPT"].append(nanogpt_step_ms(args.step_iters))
                steps["nanoGPT 1 thread"].append(nanogpt_step_ms(args.step_iters, threads=1))
            else:
                ours = in_fresh_process("_tfllm_step_ms", args.step_iters)
                steps["tfllm"].append(ours["one"])
                steps["tfllm per call"].append(ours["per_call"])
                steps["matmuls alone"].append(ours["matmuls"])
                steps["tfllm 1 thread"].append(in_fresh_process(
                    "_tfllm_step_ms", args.step_iters, env=one_thread)["per_call"])
        print(f"round {r + 1}: steps alone (ms) "
              f"{ {k: round(v[-1], 2) for k, v in steps.items()} }", file=sys.stderr, flush=True)
    report(runs, steps, args)
    return 0


def report(runs, steps, args):
    def med(name, key):
        return statistics.median(run[key] for run in runs[name])

    alone = {k: statistics.median(v) for k, v in steps.items()}
    tokens = BATCH * CONTEXT
    rows = []
    for name in ("nanoGPT", "tfllm"):
        step_ms = alone["tfllm per call" if name == "tfllm" else "nanoGPT"]
        loop_ms = med(name, "ms_per_step")
        rows.append({
            "val_whole": med(name, "val_whole"), "val_20": med(name, "val_20"),
            "wall": med(name, "wall"), "loop_ms": loop_ms, "rate": tokens / loop_ms * 1000,
            "peak": med(name, "peak_mb"), "step_ms": step_ms,
            "overhead": loop_ms / step_ms - 1,
            "outside": med(name, "wall") - args.iters * loop_ms / 1000})
    nano, ours = rows
    print(f"\nnanoGPT's CPU recipe, {args.iters} steps of {BATCH} x {CONTEXT} tokens, median "
          f"of {args.rounds} round(s); speed ratios: nanoGPT's time / tfllm's\n")
    print("| | nanoGPT | tfllm | tfllm vs nanoGPT |")
    print("|---|---|---|---|")
    print(f"| validation loss, whole split | {nano['val_whole']:.4f} | {ours['val_whole']:.4f} "
          f"| {ours['val_whole'] - nano['val_whole']:+.4f} |")
    print(f"| validation loss, 20 random batches | {nano['val_20']:.4f} | {ours['val_20']:.4f} "
          f"| {ours['val_20'] - nano['val_20']:+.4f} |")
    print(f"| wall time, whole command | {nano['wall']:.1f} s | {ours['wall']:.1f} s "
          f"| {nano['wall'] / ours['wall']:.2f}x |")
    print(f"| step in the loop | {nano['loop_ms']:.1f} ms | {ours['loop_ms']:.1f} ms "
          f"| {nano['loop_ms'] / ours['loop_ms']:.2f}x |")
    print(f"| tokens/s in the loop | {nano['rate']:,.0f} | {ours['rate']:,.0f} "
          f"| {ours['rate'] / nano['rate']:.2f}x |")
    print(f"| peak memory | {nano['peak']:.0f} MB | {ours['peak']:.0f} MB "
          f"| {ours['peak'] / nano['peak']:.2f}x |")
    print(f"| step alone | {nano['step_ms']:.1f} ms | {ours['step_ms']:.1f} ms "
          f"({alone['tfllm']:.1f} ms one per call) | {nano['step_ms'] / ours['step_ms']:.2f}x |")
    print(f"| step alone, one thread | {alone['nanoGPT 1 thread']:.1f} ms "
          f"| {alone['tfllm 1 thread']:.1f} ms "
          f"| {alone['nanoGPT 1 thread'] / alone['tfllm 1 thread']:.2f}x |")
    print(f"| matmuls alone (bound) | | {alone['matmuls alone']:.1f} ms | |")
    print(f"| loop overhead over the step alone | {nano['overhead']:+.0%} "
          f"| {ours['overhead']:+.0%} | |")
    print(f"| outside the loop (start-up, compile, evaluations) | {nano['outside']:.1f} s "
          f"| {ours['outside']:.1f} s | |")
    parts = {name: statistics.median(run["parts"][name] for run in runs["tfllm"])
             for name in runs["tfllm"][0]["parts"]}
    print(f"| outside, timed part by part | | {sum(parts.values()):.1f} s: "
          + ", ".join(f"{name} {seconds:.1f}" for name, seconds in parts.items()) + " | |")


if __name__ == "__main__":
    sys.exit(main())
