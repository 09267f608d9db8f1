"""The SavedModel of a GPT (language model or chat model): tokenizer + model + sampler in
one graph, published as a version with `tfllm.savedmodel.publish`. Serving functions are
plain graph functions (`jit_compile=False`): the stock model server cannot run
XLA-compiled functions on every build.

Signatures (every generation parameter may be a scalar, or one equal value per prompt as
REST's `instances` form sends it):

    serving_default  prompts [batch] string, max_new_tokens,
                     temperature, top_k, top_p, seed              -> outputs [batch] string
    greedy           prompts [batch] string, max_new_tokens       -> outputs [batch] string
    chat             conversations [batch] string (JSON messages),
                     max_new_tokens, temperature, top_k, top_p,
                     seed                                          -> replies [batch] string
    score            texts [batch] string -> log_prob, num_tokens, perplexity [batch]
    tokenize         texts [batch] string -> token_ids [batch, len], lengths [batch]
    logits           token_ids [batch, len] int32 -> logits [batch, len, vocab] float32

Generation parameters carry defaults in the SignatureDef (greedy, `max_new_tokens` from
the export): gRPC Predict and the session loader fill in any that a request leaves out.
TF Serving's REST front end and `tf.saved_model.load(...).signatures` need every input
(hence `greedy`, two inputs, for short REST requests);
`tf.saved_model.load(...).serving_default(prompts)` (the function, not the signature)
applies the defaults in Python.

`score` reads each text as [EOS] + tokens + [EOS] and sums the natural-log probability of
every token after the first (non-overlapping context-sized windows, as evaluate.py does):
`tfllm.evaluation.score_texts([text], context_length)` is its in-process equivalent
(loss = -log_prob / num_tokens).
"""

import dataclasses
import glob
import json
import os

import keras
import tensorflow as tf

from tfllm.chat_format import ROLES, ChatTokens, render_prompt
from tfllm.chat_json import check_roles, parse_conversation
from tfllm.generation import encode_prompts, generate_ids
from tfllm.savedmodel.archive import serving_function, write_archive
from tfllm.savedmodel.publish import METADATA, WARMUP, publish_version, version_path
from tfllm.savedmodel.warmup import predict_log, write_warmup
from tfllm.training.run_dir import CHECKPOINTS, CONFIG, load_run, train_options

SIGNATURES = ("serving_default", "greedy", "chat", "score", "tokenize", "logits")
GENERATION_DEFAULTS = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}
_PARAM_DTYPES = {"max_new_tokens": tf.int32, "temperature": tf.float32, "top_k": tf.int32,
                 "top_p": tf.float32, "seed": tf.int32}


def default_max_new_tokens(context_length):
    """What a request that leaves `max_new_tokens` out gets: 64, or half the context."""
    return max(1, min(64, context_length // 2))


def _one_value(x, name):
    """A generation parameter: a scalar, or `[batch]` equal values (REST `instances`)."""
    flat = tf.reshape(x, [-1])
    check = tf.debugging.Assert(
        tf.logical_and(tf.rank(x) <= 1, tf.logical_and(
            tf.size(flat) > 0, tf.reduce_min(flat) == tf.reduce_max(flat))),
        [(f"{name} must be one value for the whole request (a scalar, or the same value "
          "for every prompt), got"), x])
    with tf.control_dependencies([check]):
        return tf.identity(flat[0])


def _sampling_params(max_new_tokens, temperature, top_k, top_p, seed):
    """The request's generation parameters, each one checked value."""
    values = [_one_value(v, name) for v, name in zip(
        (max_new_tokens, temperature, top_k, top_p, seed),
        ("max_new_tokens", "temperature", "top_k", "top_p", "seed"))]
    max_new_tokens, temperature, top_k, top_p, _ = values
    checks = [
        tf.debugging.Assert(max_new_tokens >= 1, ["max_new_tokens must be >= 1, got",
                                                  max_new_tokens]),
        tf.debugging.Assert(temperature >= 0.0, [
            "temperature must be >= 0 (0 is greedy), got", temperature]),
        tf.debugging.Assert(top_k >= 0, ["top_k must be >= 0 (0 keeps every token), got",
                                         top_k]),
        tf.debugging.Assert(tf.logical_and(top_p > 0.0, top_p <= 1.0), [
            "top_p must be in (0, 1], got", top_p]),
    ]
    with tf.control_dependencies(checks):
        return [tf.identity(v) for v in values]


def _generate(decode_ids, tokenizer, context, prompts, max_new_tokens, temperature, top_k,
              top_p, seed):
    """Checked generation: a bad request fails with a message, before any model op runs."""
    max_new_tokens, temperature, top_k, top_p, seed = _sampling_params(
        max_new_tokens, temperature, top_k, top_p, seed)
    ids = encode_prompts(tokenizer, prompts)  # EOS + prompt, ragged (batch, None)
    longest = tf.reduce_max(tf.concat([tf.cast(ids.row_lengths(), tf.int32), [0]], 0))
    checks = [
        tf.debugging.Assert(tf.size(prompts) > 0, ["prompts is empty: send at least one"]),
        tf.debugging.Assert(longest + max_new_tokens <= context, [
            "a prompt of", longest, "tokens (with the start marker) plus max_new_tokens =",
            max_new_tokens, (f"exceeds the context of {context} tokens of this model: "
                             "shorten the prompt or lower max_new_tokens")]),
    ]
    with tf.control_dependencies(checks):
        ids = ids.with_flat_values(tf.identity(ids.flat_values))
    new_ids = decode_ids(ids, max_new_tokens, temperature, top_k, top_p, seed,
                         tf.constant([tokenizer.eos_id], tf.int32))
    return tokenizer.detokenize(new_ids)


def _chat(decode_ids, tokenizer, tokens, context, conversations, max_new_tokens, temperature,
          top_k, top_p, seed):
    """Each conversation (a JSON string of messages) -> the assistant's reply, with the
    oldest turns dropped when the conversation outgrows the context."""
    max_new_tokens, temperature, top_k, top_p, seed = _sampling_params(
        max_new_tokens, temperature, top_k, top_p, seed)
    check = tf.debugging.Assert(
        tf.logical_and(tf.size(conversations) > 0, max_new_tokens < context - 2), [
            "send at least one conversation, with max_new_tokens below the context of "
            f"{context} tokens less 2, got max_new_tokens", max_new_tokens])
    with tf.control_dependencies([check]):
        budget = tf.identity(context - max_new_tokens)

    def render(conversation):
        roles, contents = parse_conversation(conversation)
        with tf.control_dependencies([check_roles(roles, ROLES)]):
            return render_prompt(tokenizer, tokens, roles, contents, budget)

    prompts = tf.map_fn(render, conversations, fn_output_signature=tf.RaggedTensorSpec(
        [None], tf.int32, ragged_rank=0))
    new_ids = decode_ids(prompts, max_new_tokens, temperature, top_k, top_p, seed,
                         tf.constant([tokens.end_id, tokenizer.eos_id], tf.int32))
    # The end-of-turn marker that stopped a reply is not part of it.
    return tokenizer.detokenize(tf.where(new_ids == tokens.end_id, tokenizer.pad_id, new_ids))


def _score(model, tokenizer, context, texts):
    """Per text, the scoring of `tfllm.evaluation.score_texts([text], context)`: the text
    is [EOS] + tokens + [EOS] and every token after the first is scored (natural log),
    in non-overlapping windows of the context."""
    ids = tokenizer.tokenize(texts)
    eos = tf.RaggedTensor.from_tensor(tf.fill([ids.nrows(), 1], tf.constant(
        tokenizer.eos_id, tf.int32)))
    sequence = tf.concat([eos, ids, eos], axis=1)
    counts = tf.cast(sequence.row_lengths(), tf.int32) - 1  # targets per text
    batch = tf.shape(counts)[0]
    windows = tf.maximum((tf.reduce_max(tf.concat([counts, [1]], 0)) + context - 1)
                         // context, 1)
    width = windows * context

    def dense(ragged):  # (batch, None) -> (batch * windows, context), right-padded
        x = ragged.to_tensor(default_value=tokenizer.pad_id)
        x = tf.pad(x, [[0, 0], [0, width - tf.shape(x)[1]]], constant_values=tokenizer.pad_id)
        return tf.reshape(x, [batch * windows, context])

    inputs, targets = dense(sequence[:, :-1]), dense(sequence[:, 1:])
    log_probs = tf.nn.log_softmax(tf.cast(model(inputs, training=False), tf.float32))
    token_log_probs = tf.gather(log_probs, targets, batch_dims=2)  # (batch * windows, ctx)
    token_log_probs = tf.reshape(token_log_probs, [batch, width])
    real = tf.range(width)[None, :] < counts[:, None]
    total = tf.reduce_sum(tf.where(real, tf.cast(token_log_probs, tf.float64), 0.0), axis=1)
    perplexity = tf.exp(-total / tf.cast(tf.maximum(counts, 1), tf.float64))
    return {"log_prob": tf.cast(total, tf.float32), "num_tokens": counts,
            "perplexity": tf.cast(perplexity, tf.float32)}


def build_archive(model, tokenizer, config, max_new_tokens=None):
    """A `keras.export.ExportArchive` with tfllm's serving signatures.

    ExportArchive tracks the Keras variables itself, which the session-based loader
    (TF Serving, `saved_model_cli run`) needs to find them. Python default arguments
    that are tensors become the SignatureDef's `defaults` (placeholders with defaults).
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tokenizer)
    context = config.context_length
    vocab = config.vocab_size
    d = {name: tf.constant(value, _PARAM_DTYPES[name])
         for name, value in GENERATION_DEFAULTS.items()}
    d["max_new_tokens"] = tf.constant(
        max_new_tokens or default_max_new_tokens(context), tf.int32)

    prompts = tf.TensorSpec([None], tf.string, name="prompts")
    params = [tf.TensorSpec(None, _PARAM_DTYPES[k], name=k)
              for k in ("max_new_tokens", *GENERATION_DEFAULTS)]
    # One decoding loop for every signature that generates (traced once, stored once),
    # and one prompt-to-text graph for the two that take prompts.
    decode_ids = serving_function(
        lambda ids, max_new_tokens, temperature, top_k, top_p, seed, stop_ids: generate_ids(
            model, ids, max_new_tokens, context_length=context, eos_id=tokenizer.eos_id,
            pad_id=tokenizer.pad_id, temperature=temperature, top_k=top_k, top_p=top_p,
            seed=seed, stop_ids=stop_ids),
        input_signature=[tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1),
                         *(tf.TensorSpec([], spec.dtype) for spec in params),
                         tf.TensorSpec([None], tf.int32)])
    generate = serving_function(lambda *args: _generate(decode_ids, tokenizer, context, *args),
                                input_signature=[prompts, *params])

    def serving_default(prompts, max_new_tokens=d["max_new_tokens"],
                        temperature=d["temperature"], top_k=d["top_k"], top_p=d["top_p"],
                        seed=d["seed"]):
        return {"outputs": generate(prompts, max_new_tokens, temperature, top_k, top_p,
                                    seed)}

    def greedy(prompts, max_new_tokens=d["max_new_tokens"]):
        return {"outputs": generate(prompts, max_new_tokens,
                                    *(d[k] for k in GENERATION_DEFAULTS))}

    def chat(conversations, max_new_tokens=d["max_new_tokens"], temperature=d["temperature"],
             top_k=d["top_k"], top_p=d["top_p"], seed=d["seed"]):
        return {"replies": _chat(decode_ids, tokenizer, chat_tokens, context, conversations,
                                 max_new_tokens, temperature, top_k, top_p, seed)}

    def score(texts):
        return _score(model, tokenizer, context, texts)

    def tokenize(texts):
        ids = tokenizer.tokenize(texts)
        return {"token_ids": ids.to_tensor(default_value=tokenizer.pad_id),
                "lengths": tf.cast(ids.row_lengths(), tf.int32)}

    def logits(token_ids):
        check = tf.debugging.Assert(
            tf.logical_and(tf.shape(token_ids)[1] <= context, tf.logical_and(
                tf.reduce_min(tf.concat([tf.reshape(token_ids, [-1]), [0]], 0)) >= 0,
                tf.reduce_max(tf.concat([tf.reshape(token_ids, [-1]), [0]], 0)) < vocab)),
            [f"token_ids must be in [0, {vocab}) with at most {context} per row, got shape",
             tf.shape(token_ids)])
        with tf.control_dependencies([check]):
            token_ids = tf.identity(token_ids)
        return {"logits": tf.cast(model(token_ids, training=False), tf.float32)}

    texts = tf.TensorSpec([None], tf.string, name="texts")
    conversations = tf.TensorSpec([None], tf.string, name="conversations")
    endpoints = [
        ("serving_default", serving_default, [prompts, *params]),
        ("greedy", greedy, [prompts, params[0]]),
        ("chat", chat, [conversations, *params]),
        ("score", score, [texts]),
        ("tokenize", tokenize, [texts]),
        ("logits", logits, [tf.TensorSpec([None, None], tf.int32, name="token_ids")]),
    ]
    chat_tokens = chat_markers(tokenizer)
    for name, fn, signature in endpoints:
        if name == "chat" and chat_tokens is None:
            continue
        archive.add_endpoint(name, serving_function(fn), signature)
    return archive


def chat_markers(tokenizer):
    """The tokenizer's chat marker ids, or None when it has none (an imported GPT-2's
    vocabulary), in which case the export has no `chat` signature."""
    try:
        return ChatTokens(tokenizer)
    except ValueError:
        return None


def signatures_of(tokenizer):
    return [s for s in SIGNATURES if s != "chat" or chat_markers(tokenizer) is not None]


def warmup_requests(model_name, max_new_tokens=4, chat=True):
    """PredictionLog records that call every signature once (TF Serving replays them
    from `assets.extra/tf_serving_warmup_requests` before the version is served)."""
    def request(signature, **inputs):
        return predict_log(model_name, signature, **inputs)

    prompts = (["The", "A list is"], tf.string)
    n = (max_new_tokens, tf.int32)
    return [
        request("serving_default", prompts=prompts, max_new_tokens=n,
                temperature=(0.8, tf.float32), top_k=(20, tf.int32), top_p=(0.9, tf.float32),
                seed=(1, tf.int32)),
        request("greedy", prompts=prompts, max_new_tokens=n),
        *([request("chat", conversations=(
            ['[{"role": "user", "content": "Hello!"}]'], tf.string), max_new_tokens=n)]
          if chat else []),
        request("score", texts=(["Warm-up text."], tf.string)),
        request("tokenize", texts=(["Warm-up text."], tf.string)),
        request("logits", token_ids=([[3, 8, 9]], tf.int32)),
    ]


def export_model(model, tokenizer, config, model_dir, version=None, train_options=None,
                 max_new_tokens=None):
    """Write a new version under `model_dir` (the next free one if `version` is None);
    returns its path."""
    max_new_tokens = max_new_tokens or default_max_new_tokens(config.context_length)

    def write(staging):
        write_archive(build_archive(model, tokenizer, config, max_new_tokens), staging)
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        write_warmup(os.path.join(staging, WARMUP), warmup_requests(
            os.path.basename(os.path.normpath(model_dir)),
            chat=chat_markers(tokenizer) is not None))
        with open(os.path.join(staging, METADATA), "w", encoding="utf-8") as f:
            json.dump({"format": "tfllm", "config": config.to_dict(),
                       "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                                     "pad_id": tokenizer.pad_id, "eos_id": tokenizer.eos_id},
                       "signatures": signatures_of(tokenizer),
                       "generation_defaults": {"max_new_tokens": max_new_tokens,
                                               **GENERATION_DEFAULTS},
                       "train_options": train_options or {}}, f, indent=2)

    return publish_version(model_dir, version, write)


def export_final(model, tokenizer, config, options, log=print):
    """Export a trained GPT to `options.export_dir/options.name` (the next version), with
    the run's options in its metadata; returns its path."""
    path = export_model(model, tokenizer, config, os.path.join(options.export_dir, options.name),
                        train_options=dataclasses.asdict(options))
    log(f"exported SavedModel: {path}")
    return path


def export_run(run_dir, output_dir="saved_models", name=None, version=None):
    """Export the latest checkpoint of a GPT run directory (language model or chat)."""
    name = name or os.path.basename(os.path.normpath(run_dir))
    version_path(os.path.join(output_dir, name), version)  # refuse before the slow part
    if (os.path.exists(os.path.join(run_dir, CONFIG))
            and not glob.glob(os.path.join(run_dir, CHECKPOINTS, "*.index"))):
        raise FileNotFoundError(  # before the tokenizer loads (its op logs a line)
            f"'{run_dir}' has no checkpoint: train it first (train.py --name ...)")
    model, tokenizer, config = load_run(run_dir)
    return export_model(model, tokenizer, config, os.path.join(output_dir, name), version,
                        train_options=train_options(run_dir))
