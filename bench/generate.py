#!/usr/bin/env python3
"""Generation speed: tfllm's KV-cache engine against keras-hub's GPT2CausalLM and a
no-cache loop, on the `small` preset with random weights, in one run.

    python bench/generate.py [--repeats 3] [--new-tokens 256] [--prompt-tokens 32]

Each engine greedily continues the same prompts; runs alternate between engines and the
median is reported. Prints a table of tokens/s and the ratios.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfllm.cli import import_tensorflow_quietly  # noqa: E402


def tfllm_engine(model, tokenizer, context):
    from tfllm.generation import Generator

    generator = Generator(model, tokenizer, context)

    def run(prompts, new_tokens):
        # No stop token: every engine generates exactly `new_tokens`.
        generator.generate_ids(prompts, new_tokens, stop_token_ids=())
    return run


def keras_hub_engine(config, prompt_ids):
    import keras_hub
    import numpy as np

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=config.vocab_size, num_layers=config.num_layers,
        num_heads=config.num_heads, hidden_dim=config.embed_dim,
        intermediate_dim=config.intermediate_dim, dropout=0.0,
        max_sequence_length=config.context_length)
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    lm.compile(sampler="greedy")

    def run(batch, new_tokens):
        ids = prompt_ids[:batch]
        length = ids.shape[1] + new_tokens
        token_ids = np.zeros((batch, length), np.int32)
        token_ids[:, :ids.shape[1]] = ids
        mask = np.zeros((batch, length), bool)
        mask[:, :ids.shape[1]] = True
        lm.generate({"token_ids": token_ids, "padding_mask": mask}, stop_token_ids=None)
    return run, backbone.count_params()


def no_cache_engine(model):
    import tensorflow as tf

    forward = tf.function(lambda ids: model(ids, training=False)[:, -1],
                          input_signature=[tf.TensorSpec([None, None], tf.int32)])

    def run(prompt_ids, new_tokens):
        ids = tf.constant(prompt_ids)
        for _ in range(new_tokens):  # the whole sequence again for every token
            next_token = tf.argmax(forward(ids), axis=-1, output_type=tf.int32)
            ids = tf.concat([ids, next_token[:, None]], axis=1)
    return run


def timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--no-cache-batch", type=int, default=1,
                        help="batch for the no-cache floor (0 skips it)")
    args = parser.parse_args()
    import_tensorflow_quietly()
    import keras
    import numpy as np

    from tfllm.models import GPTConfig, build_gpt
    from tfllm.tokenizers import CharTokenizer

    keras.utils.set_random_seed(0)
    config = GPTConfig.from_preset("small", dropout=0.0)
    # One character per token, so a prompt of N characters is exactly N tokens (+ EOS).
    chars = [chr(0x4E00 + i) for i in range(config.vocab_size - 8)]
    tokenizer = CharTokenizer(chars)
    model = build_gpt(config)
    rng = np.random.default_rng(0)
    batches = [int(b) for b in args.batches.split(",")]
    prompt_ids = rng.integers(8, config.vocab_size, (max(batches), args.prompt_tokens)).astype(np.int32)
    prompts = ["".join(tokenizer.decode([int(t)]) for t in row) for row in prompt_ids]
    # tfllm starts each prompt with EOS (the document boundary): give the others the same ids.
    prompt_ids = np.concatenate([np.full((len(prompt_ids), 1), tokenizer.eos_id, np.int32),
                                 prompt_ids], axis=1)

    ours = tfllm_engine(model, tokenizer, config.context_length)
    hub, hub_params = keras_hub_engine(config, prompt_ids)
    floor = no_cache_engine(model)
    print(f"small preset: tfllm {model.count_params():,} parameters, keras-hub GPT2 "
          f"{hub_params:,}; prompt {prompt_ids.shape[1]} tokens, {args.new_tokens} new, "
          f"median of {args.repeats}", flush=True)

    rows = []
    for batch in batches:
        engines = {"tfllm (KV cache, XLA)": lambda b=batch: ours(prompts[:b], args.new_tokens),
                   "keras-hub GPT2CausalLM": lambda b=batch: hub(b, args.new_tokens)}
        if batch == args.no_cache_batch:
            engines["no-cache recompute loop"] = \
                lambda b=batch: floor(prompt_ids[:b], args.new_tokens)
        for fn in engines.values():  # warm-up: compile outside the timing
            fn()
        times = {name: [] for name in engines}
        for _ in range(args.repeats):  # alternate engines, so drift hits all alike
            for name, fn in engines.items():
                times[name].append(timed(fn))
        for name, ts in times.items():
            rows.append((batch, name, batch * args.new_tokens / statistics.median(ts)))
        print(f"batch {batch} done", flush=True)

    print(f"\n{'batch':>5}  {'engine':<26} {'tokens/s':>10}  {'tfllm is':>10}")
    for batch, name, rate in rows:
        ours_rate = next(r for b, n, r in rows if b == batch and n.startswith("tfllm"))
        ratio = "" if name.startswith("tfllm") else f"{ours_rate / rate:.2f}x"
        print(f"{batch:>5}  {name:<26} {rate:>10.1f}  {ratio:>10}")


if __name__ == "__main__":
    main()
