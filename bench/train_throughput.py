#!/usr/bin/env python3
"""Training throughput: tfllm against keras-hub's GPT-2 in the same run.

    python bench/train_throughput.py                      # both configs, 5 rounds
    python bench/train_throughput.py --configs nanogpt-cpu --rounds 7

Contenders, trained on the same random batch with AdamW (same hyper-parameters, global-norm
clipping) and the token cross-entropy, one training step at a time:

    tfllm            build_gpt + tfllm's Trainer (the train.py step: strategy.run, XLA)
    tfllm no-XLA     the same, --no-xla
    keras-hub XLA    keras_hub.models.GPT2Backbone + tied LM head (its ReversibleEmbedding),
                     Keras compile(jit_compile=True) + train_on_batch
    keras-hub        the same, jit_compile=False
    tfllm in Keras   build_gpt in keras-hub's harness (jit_compile=True): the model alone
    matmuls alone    a bound, not a model: the step's matrix products alone (each layer's
                     qkv, attention scores and mix, output and feed-forward products, the
                     tied head) forward and backward with XLA, without norms, softmax,
                     GELU, embedding lookup, loss or optimizer. No implementation of
                     these dimensions that multiplies the same matrices runs faster here.

Random weights, no download. The contenders alternate round by round; each number is the
median over rounds, and the ratio to keras-hub XLA the median of the per-round ratios (the
neighbours in time see the same machine load). On a shared machine, tokens per CPU-second
of this process (all its threads) is the steadier measure of work per token, and is shown
beside the wall-clock rate. Peak memory is measured in a fresh process
per contender (CPU: growth of resident memory over the process after imports, sampled
every 2 ms; GPU: TensorFlow's peak allocation). MFU counts 6N + 12 L d T FLOPs per trained
token (N: parameters without position embeddings, L layers, d width, T sequence length;
the nanoGPT/PaLM estimate) against a measured fp32 matmul peak of this machine.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIGS = {
    # nanoGPT's CPU example (README: shakespeare_char, 4 layers, 128 wide, block 64, batch 12).
    "nanogpt-cpu": dict(vocab_size=65, context_length=64, num_layers=4, num_heads=4,
                        embed_dim=128, batch=12),
    # tfllm's `small` preset at its full context.
    "small": dict(vocab_size=8192, context_length=256, num_layers=6, num_heads=6,
                  embed_dim=384, batch=8),
}
CONTENDERS = ("tfllm", "tfllm no-XLA", "keras-hub XLA", "keras-hub", "tfllm in Keras",
              "matmuls alone")
BASELINE = "keras-hub XLA"
LR, WEIGHT_DECAY, CLIP = 1e-4, 0.1, 1.0


def flops_per_token(c):
    d, layers, seq, vocab = c["embed_dim"], c["num_layers"], c["context_length"], c["vocab_size"]
    per_layer = 4 * d * d + 4 * d + 2 * d * 4 * d + 4 * d + d + 4 * d  # qkv, out, ffn, norms
    params = vocab * d + layers * per_layer + 2 * d  # tied head; no position embeddings
    return 6 * params + 12 * layers * d * seq, params


def batch_tensors(c, seed=0):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    ids = rng.integers(1, c["vocab_size"], size=(c["batch"], c["context_length"] + 1))
    return tf.constant(ids[:, :-1], tf.int32), tf.constant(ids[:, 1:], tf.int32)


def matmul_floor_step(c):
    """One step of the bound: the model's matrix products, forward and backward, alone."""
    import tensorflow as tf

    batch, seq, d = c["batch"], c["context_length"], c["embed_dim"]
    heads = (batch, seq, c["num_heads"], d // c["num_heads"])
    init = tf.random.Generator.from_seed(0)
    layers = [[tf.Variable(init.normal(shape) * 0.02)
               for shape in ((d, 3 * d), (d, d), (d, 4 * d), (4 * d, d))]
              for _ in range(c["num_layers"])]
    table = tf.Variable(init.normal((c["vocab_size"], d)) * 0.02)
    variables = [v for layer in layers for v in layer] + [table]
    x0 = init.normal((batch * seq, d))

    @tf.function(jit_compile=True)
    def step():
        with tf.GradientTape() as tape:
            x = x0
            for qkv, out, ffn_in, ffn_out in layers:
                q, k, v = (tf.reshape(part, heads) for part in tf.split(x @ qkv, 3, axis=-1))
                mixed = tf.einsum("bhts,bshd->bthd", tf.einsum("bthd,bshd->bhts", q, k), v)
                x = x + tf.reshape(mixed, (batch * seq, d)) @ out
                x = x + (x @ ffn_in) @ ffn_out
            total = tf.reduce_sum(tf.matmul(x, table, transpose_b=True))
        return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(total, variables)])

    return step


def make_step(name, c):
    """A zero-argument function that runs one training step; float() of what it returns
    waits for the step. tfllm's step returns its loss tensor without waiting (train.py
    reads the loss only every --log-every steps); Keras's train_on_batch returns a
    number, so it waits after every step, as it does for its users."""
    import keras
    import tensorflow as tf

    from tfllm.models import GPTConfig, build_gpt

    if name == "matmuls alone":
        return matmul_floor_step(c)
    keras.utils.set_random_seed(0)
    x, y = batch_tensors(c)
    config = GPTConfig(vocab_size=c["vocab_size"], context_length=c["context_length"],
                       num_layers=c["num_layers"], num_heads=c["num_heads"],
                       embed_dim=c["embed_dim"], dropout=0.0)
    if name in ("tfllm", "tfllm no-XLA"):
        from tfllm.training.loop import Trainer
        from tfllm.training.optimizer import build_optimizer

        model = build_gpt(config)
        optimizer = build_optimizer(model, LR, 10**6, 0, WEIGHT_DECAY, clip_norm=CLIP)
        trainer = Trainer(model, optimizer, tf.distribute.get_strategy(), pad_id=0,
                          jit_compile=name == "tfllm")
        return lambda: trainer.train_step((x, y))[0]

    if name.startswith("keras-hub"):
        import keras_hub

        backbone = keras_hub.models.GPT2Backbone(
            vocabulary_size=c["vocab_size"], num_layers=c["num_layers"],
            num_heads=c["num_heads"], hidden_dim=c["embed_dim"],
            intermediate_dim=4 * c["embed_dim"], dropout=0.0,
            max_sequence_length=c["context_length"])
        token_ids = keras.Input((None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
        hidden = backbone({"token_ids": token_ids, "padding_mask": padding_mask})
        logits = backbone.token_embedding(hidden, reverse=True)  # tied, as GPT2CausalLM
        model = keras.Model([token_ids, padding_mask], logits)
        inputs = [x, tf.ones_like(x)]
    else:  # tfllm's model in keras-hub's harness
        model = build_gpt(config)
        inputs = x
    optimizer = keras.optimizers.AdamW(LR, weight_decay=WEIGHT_DECAY, beta_1=0.9,
                                       beta_2=0.95, global_clipnorm=CLIP)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=name != "keras-hub")
    return lambda: model.train_on_batch(inputs, y)


def matmul_peak(size=2048, repeats=20):
    """Measured fp32 matmul FLOP/s (XLA), the best of a few tries."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)), jit_compile=True)
    float(matmul(a, b))
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            result = matmul(a, b)
        float(result)
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start))
    return best


def peak_memory_mb(name, config_name, warm_steps=3):
    """Peak memory of training `name` in a fresh process (see the module docstring)."""
    code = (f"import sys; sys.argv = ['x']; sys.path.insert(0, {os.path.dirname(__file__)!r});"
            f"import train_throughput as t; print('MEMORY', t._memory({name!r}, "
            f"{config_name!r}, {warm_steps}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=900)
    for line in result.stdout.splitlines():
        if line.startswith("MEMORY "):
            return float(line.split()[1])
    return float("nan")


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory(name, config_name, warm_steps):
    import threading

    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    baseline, peak, done = _rss_mb(), [0.0], threading.Event()

    def sample():  # resident memory, sampled every 2 ms while building and training
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    step = make_step(name, CONFIGS[config_name])
    for _ in range(warm_steps):
        float(step())
    done.set()
    sampler.join()
    if gpus:
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return peak[0] - baseline


def bench_config(config_name, rounds, steps, contenders, memory):
    c = CONFIGS[config_name]
    tokens = c["batch"] * c["context_length"]
    steps_fns = {}
    for name in contenders:
        start = time.perf_counter()
        steps_fns[name] = make_step(name, c)
        for _ in range(2):  # compile and warm up
            float(steps_fns[name]())
        print(f"  {config_name}: {name} ready [{time.perf_counter() - start:.1f}s]",
              file=sys.stderr, flush=True)
    rates = {name: [] for name in contenders}
    cpu_rates = {name: [] for name in contenders}
    for _ in range(rounds):
        for name in contenders:  # alternating: drifts in machine load hit everyone alike
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(steps):
                result = steps_fns[name]()
            float(result)  # wait for the last step (and so for all of them)
            rates[name].append(tokens * steps / (time.perf_counter() - start))
            cpu_rates[name].append(tokens * steps / (time.process_time() - cpu_start))
    rows = {}
    for name in contenders:
        # Ratios within a round cancel most of the machine's load drift (a shared CPU).
        ratios = [a / b for a, b in zip(rates[name], rates.get(BASELINE, rates[name]))]
        cpu_ratios = [a / b for a, b in zip(cpu_rates[name],
                                            cpu_rates.get(BASELINE, cpu_rates[name]))]
        rows[name] = {"tokens_per_s": statistics.median(rates[name]),
                      "spread": (min(rates[name]), max(rates[name])),
                      "vs_baseline": statistics.median(ratios),
                      "tokens_per_cpu_s": statistics.median(cpu_rates[name]),
                      "cpu_vs_baseline": statistics.median(cpu_ratios),
                      "peak_mb": peak_memory_mb(name, config_name) if memory else None}
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: "
                   + ", ".join(CONFIGS))
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="steps per contender per round")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    import tensorflow as tf

    device = "GPU" if tf.config.list_logical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"
    peak = matmul_peak()
    print(f"device: {device}; measured fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    contenders = [c.strip() for c in args.contenders.split(",")]
    results = {}
    for config_name in args.configs.split(","):
        c = CONFIGS[config_name]
        flops, params = flops_per_token(c)
        rows = bench_config(config_name, args.rounds, args.steps, contenders,
                            not args.no_memory)
        results[config_name] = rows
        print(f"\n{config_name}: {c['num_layers']} layers x {c['embed_dim']} wide, "
              f"{c['num_heads']} heads, vocab {c['vocab_size']}, batch {c['batch']} x "
              f"{c['context_length']} tokens; {params / 1e6:.2f}M parameters, "
              f"{flops / 1e6:.1f} MFLOP/token; median of {args.rounds} rounds x "
              f"{args.steps} steps (the ratio: median of the per-round ratios)")
        print(f"| {'contender':<16} | {'tokens/s':>9} | {'range':>15} | {'ms/step':>8} | "
              f"{'peak MB':>8} | {'MFU':>6} | {'vs ' + BASELINE:>17} | {'tok/CPU-s':>9} | "
              f"{'vs (CPU time)':>13} |")
        print(f"|{'-' * 18}|{'-' * 11}|{'-' * 17}|{'-' * 10}|{'-' * 10}|{'-' * 8}|{'-' * 19}|"
              f"{'-' * 11}|{'-' * 15}|")
        for name, row in rows.items():
            rate = row["tokens_per_s"]
            ms = 1000 * c["batch"] * c["context_length"] / rate
            mem = "-" if row["peak_mb"] is None else f"{row['peak_mb']:.0f}"
            ratio = f"{row['vs_baseline']:.2f}x" if BASELINE in rows else "-"
            cpu_ratio = f"{row['cpu_vs_baseline']:.2f}x" if BASELINE in rows else "-"
            lo, hi = row["spread"]
            print(f"| {name:<16} | {rate:>9,.0f} | {lo:>7,.0f}-{hi:<7,.0f} | {ms:>8.1f} | "
                  f"{mem:>8} | {rate * flops / peak:>6.1%} | {ratio:>17} | "
                  f"{row['tokens_per_cpu_s']:>9,.0f} | {cpu_ratio:>13} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "matmul_peak_flops": peak, "results": results}, f,
                      indent=2)


if __name__ == "__main__":
    main()
