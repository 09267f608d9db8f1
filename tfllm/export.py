"""SavedModels that TF Serving loads as they are: tokenizer + model + sampler in one graph.

Layout: `saved_models/<name>/<version>/` with integer versions, as TF Serving watches.
A version is written to a hidden sibling and renamed into place only when complete, so a
crash never leaves a half-written version where the server looks; an existing version
is never overwritten. Serving functions are plain graph functions (`jit_compile=False`):
the stock model server cannot run XLA-compiled functions on every build.

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

    python -m tfllm.export RUN_DIR [--name NAME] [--version N] [--output-dir saved_models]
                           [--models-config [--serving-root /models] [--version-policy P]]
    python -m tfllm.export --models-config [--output-dir saved_models] ...
    python -m tfllm.export RUN_DIR --format hf OUT_DIR    (Hugging Face: tfllm.hf_format)
"""

import argparse
import glob
import json
import os
import shutil
import sys

if __name__ == "__main__":  # run as a CLI: pick the backend before Keras loads
    from tfllm.cli import import_tensorflow_quietly

    import_tensorflow_quietly()

import keras
import tensorflow as tf

from tfllm.chat_format import ROLES, ChatTokens, render_prompt
from tfllm.chat_json import check_roles, parse_conversation
from tfllm.generation import encode_prompts, generate_ids

METADATA = "assets.extra/tfllm.json"
WARMUP = "assets.extra/tf_serving_warmup_requests"
MODELS_CONFIG = "models.config"
SIGNATURES = ("serving_default", "greedy", "chat", "score", "tokenize", "logits")
GENERATION_DEFAULTS = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}
_PARAM_DTYPES = {"max_new_tokens": tf.int32, "temperature": tf.float32, "top_k": tf.int32,
                 "top_p": tf.float32, "seed": tf.int32}


def default_max_new_tokens(context_length):
    """What a request that leaves `max_new_tokens` out gets: 64, or half the context."""
    return max(1, min(64, context_length // 2))


def next_version(model_dir):
    """One more than the largest integer version under `model_dir` (1 if none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
    return max(versions, default=0) + 1


# --- the serving graph -------------------------------------------------------------------


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


def _generate(model, tokenizer, context, prompts, max_new_tokens, temperature, top_k, top_p,
              seed):
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
    new_ids = generate_ids(
        model, ids, max_new_tokens, context_length=context, eos_id=tokenizer.eos_id,
        pad_id=tokenizer.pad_id, temperature=temperature, top_k=top_k, top_p=top_p,
        seed=seed)
    return tokenizer.detokenize(new_ids)


def _chat(model, tokenizer, tokens, context, conversations, max_new_tokens, temperature,
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
    new_ids = generate_ids(
        model, prompts, max_new_tokens, context_length=context, eos_id=tokenizer.eos_id,
        pad_id=tokenizer.pad_id, temperature=temperature, top_k=top_k, top_p=top_p,
        seed=seed, stop_ids=[tokens.end_id, tokenizer.eos_id])
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

    def serving_default(prompts, max_new_tokens=d["max_new_tokens"],
                        temperature=d["temperature"], top_k=d["top_k"], top_p=d["top_p"],
                        seed=d["seed"]):
        return {"outputs": _generate(model, tokenizer, context, prompts, max_new_tokens,
                                     temperature, top_k, top_p, seed)}

    def greedy(prompts, max_new_tokens=d["max_new_tokens"]):
        return {"outputs": _generate(model, tokenizer, context, prompts, max_new_tokens,
                                     *(d[k] for k in GENERATION_DEFAULTS))}

    def chat(conversations, max_new_tokens=d["max_new_tokens"], temperature=d["temperature"],
             top_k=d["top_k"], top_p=d["top_p"], seed=d["seed"]):
        return {"replies": _chat(model, tokenizer, chat_tokens, context, conversations,
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

    prompts = tf.TensorSpec([None], tf.string, name="prompts")
    params = [tf.TensorSpec(None, _PARAM_DTYPES[k], name=k)
              for k in ("max_new_tokens", *GENERATION_DEFAULTS)]
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
        archive.add_endpoint(name, tf.function(fn, jit_compile=False), signature)
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


# --- warm-up requests --------------------------------------------------------------------


def warmup_requests(model_name, max_new_tokens=4, chat=True):
    """PredictionLog records that call every signature once (TF Serving replays them
    from `assets.extra/tf_serving_warmup_requests` before the version is served)."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    def request(signature, **inputs):
        req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
            name=model_name, signature_name=signature))
        for key, (value, dtype) in inputs.items():
            req.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype))
        return prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=req))

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


def write_warmup(path, model_name, max_new_tokens=4, chat=True):
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_requests(model_name, max_new_tokens, chat):
            writer.write(log.SerializeToString())


# --- versioned, atomic export ------------------------------------------------------------


def version_path(model_dir, version=None):
    """Where a new version goes: `model_dir/<version>`, refused if it exists."""
    version = next_version(model_dir) if version is None else int(version)
    if version <= 0:
        raise ValueError(f"version must be a positive integer, got {version}")
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise ValueError(
            f"'{final}' already exists: versions are never overwritten, pick another --version")
    return final, version


def _staging_dirs(model_dir):
    """(path, pid) of the hidden `.tmp-<version>-<pid>` directories under `model_dir`."""
    found = []
    for entry in os.listdir(model_dir):
        parts = entry.split("-")
        if entry.startswith(".tmp-") and len(parts) == 3 and parts[2].isdigit():
            found.append((os.path.join(model_dir, entry), int(parts[2])))
    return found


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_tree(root):
    """Flush every file and directory under `root` to disk (so a rename publishes whole
    files even after a power loss, not only after a crash of this process)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(dirpath)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_version(model_dir, version, write):
    """Publish a new version under `model_dir` (the next free one if `version` is None):
    `write(staging)` fills a hidden sibling directory, which is then renamed into place.
    Returns the version's path."""
    chosen = version
    final, version = version_path(model_dir, version)
    os.makedirs(model_dir, exist_ok=True)
    for path, pid in _staging_dirs(model_dir):  # left by an export that was killed
        if not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)
    # Hidden, non-numeric name: TF Serving ignores it until the rename.
    staging = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write(staging)
        _fsync_tree(staging)
        while True:
            try:
                os.rename(staging, final)  # atomic; fails if `final` exists (non-empty)
                break
            except OSError:  # another export published this version meanwhile
                if chosen is not None or not os.path.exists(final):
                    raise ValueError(f"'{final}' already exists: versions are never "
                                     "overwritten, pick another --version") from None
                final, version = version_path(model_dir)
        _fsync_dir(model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def export_model(model, tokenizer, config, model_dir, version=None, train_options=None,
                 max_new_tokens=None):
    """Write a new version under `model_dir` (the next free one if `version` is None);
    returns its path."""
    max_new_tokens = max_new_tokens or default_max_new_tokens(config.context_length)

    def write(staging):
        build_archive(model, tokenizer, config, max_new_tokens).write_out(
            staging, verbose=False)
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        write_warmup(os.path.join(staging, WARMUP), os.path.basename(
            os.path.normpath(model_dir)), chat=chat_markers(tokenizer) is not None)
        with open(os.path.join(staging, METADATA), "w", encoding="utf-8") as f:
            json.dump({"format": "tfllm", "config": config.to_dict(),
                       "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                                     "pad_id": tokenizer.pad_id, "eos_id": tokenizer.eos_id},
                       "signatures": signatures_of(tokenizer),
                       "generation_defaults": {"max_new_tokens": max_new_tokens,
                                               **GENERATION_DEFAULTS},
                       "train_options": train_options or {}}, f, indent=2)

    return publish_version(model_dir, version, write)


def export_run(run_dir, output_dir="saved_models", name=None, version=None):
    """Export the latest checkpoint of a train.py run directory."""
    from tfllm.training.run_dir import CHECKPOINTS, CONFIG, load_run, train_options

    from tfllm.training.classify import is_classifier_run

    if is_classifier_run(run_dir):
        from tfllm import classification_export

        return classification_export.export_run(run_dir, output_dir, name, version)
    name = name or os.path.basename(os.path.normpath(run_dir))
    version_path(os.path.join(output_dir, name), version)  # refuse before the slow part
    if (os.path.exists(os.path.join(run_dir, CONFIG))
            and not glob.glob(os.path.join(run_dir, CHECKPOINTS, "*.index"))):
        raise FileNotFoundError(  # before the tokenizer loads (its op logs a line)
            f"'{run_dir}' has no checkpoint: train it first (train.py --name ...)")
    model, tokenizer, config = load_run(run_dir)
    return export_model(model, tokenizer, config, os.path.join(output_dir, name), version,
                        train_options=train_options(run_dir))


# --- TF Serving's models.config ----------------------------------------------------------


def parse_version_policy(policy):
    """'latest', 'latest:N', 'all' or 'specific:V1,V2' -> (kind, numbers)."""
    kind, _, rest = str(policy).partition(":")
    try:
        numbers = [int(v) for v in rest.split(",")] if rest else []
    except ValueError:
        numbers = None
    if kind == "latest" and numbers is not None and len(numbers) <= 1 and all(
            n >= 1 for n in numbers):
        return kind, numbers or [1]
    if kind == "all" and not rest:
        return kind, []
    if kind == "specific" and numbers and all(n >= 1 for n in numbers):
        return kind, numbers
    raise ValueError(f"version policy {policy!r} is not valid: use 'latest', 'latest:N', "
                     "'all' or 'specific:1,2'")


def served_models(models_dir):
    """Names of the models under `models_dir` that have at least one complete version."""
    if not os.path.isdir(models_dir):
        raise FileNotFoundError(
            f"no models directory '{models_dir}': export a run first (python -m tfllm.export)")
    names = []
    for name in sorted(os.listdir(models_dir)):
        path = os.path.join(models_dir, name)
        if name.startswith(".") or not os.path.isdir(path):
            continue
        if any(v.isdigit() and os.path.exists(os.path.join(path, v, "saved_model.pb"))
               for v in os.listdir(path)):
            names.append(name)
    if not names:
        raise FileNotFoundError(
            f"'{models_dir}' holds no exported model (NAME/VERSION/saved_model.pb): "
            "export a run first (python -m tfllm.export RUN_DIR)")
    return names


def models_config_text(models_dir, serving_root=None, version_policy="latest"):
    """TF Serving's `--model_config_file` text: one `config` per model in `models_dir`,
    with `base_path` under `serving_root` (where the server sees `models_dir`, e.g.
    `/models` in the docker image; default: its absolute path here)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    kind, numbers = parse_version_policy(version_policy)
    root = serving_root or os.path.abspath(models_dir)
    server_config = model_server_config_pb2.ModelServerConfig()
    for name in served_models(models_dir):
        entry = server_config.model_config_list.config.add(
            name=name, base_path=f"{root.rstrip('/')}/{name}", model_platform="tensorflow")
        policy = entry.model_version_policy
        if kind == "latest":
            policy.latest.num_versions = numbers[0]
        elif kind == "all":
            policy.all.SetInParent()
        else:
            policy.specific.versions.extend(numbers)
    return text_format.MessageToString(server_config)


def write_models_config(models_dir, serving_root=None, version_policy="latest"):
    """Write `models_dir/models.config` atomically; returns its path."""
    text = models_config_text(models_dir, serving_root, version_policy)
    path = os.path.join(models_dir, MODELS_CONFIG)
    tmp = os.path.join(models_dir, f".{MODELS_CONFIG}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# --- command line ------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tfllm.export",
        description="Export a train.py run as a SavedModel version for TF Serving, and/or "
                    "write the models directory's models.config.")
    parser.add_argument("run_dir", nargs="?",
                        help="run directory written by train.py (runs/NAME)")
    parser.add_argument("--output-dir", default="saved_models",
                        help="models directory TF Serving watches (default: saved_models)")
    parser.add_argument("--name", help="model name (default: the run directory's name)")
    parser.add_argument("--version", type=int,
                        help="integer version (default: one more than the latest)")
    parser.add_argument("--models-config", action="store_true",
                        help="write OUTPUT_DIR/models.config listing every exported model")
    parser.add_argument("--serving-root",
                        help="where the server sees OUTPUT_DIR, for base_path (e.g. /models "
                             "in docker; default: its absolute path)")
    parser.add_argument("--version-policy", default="latest",
                        help="'latest', 'latest:N', 'all' or 'specific:1,2' (default: latest)")
    parser.add_argument("out_dir", nargs="?", help="--format hf: the directory to write")
    parser.add_argument("--format", choices=("savedmodel", "hf"), default="savedmodel",
                        help="savedmodel (TF Serving) or hf: a Hugging Face GPT-2 directory")
    args = parser.parse_intermixed_args(argv)  # RUN --format hf OUT: positionals apart
    from tfllm.cli import exit_code

    def run():
        if args.format == "hf":  # RUN --format hf OUT
            from tfllm.hf_format import export_hf

            if args.run_dir is None or args.out_dir is None:
                raise ValueError("--format hf takes a run directory and an output directory")
            return print(export_hf(args.run_dir, args.out_dir))
        if args.out_dir is not None:
            raise ValueError(f"a second directory ('{args.out_dir}') is for --format hf: "
                             "SavedModels go to --output-dir")
        if args.run_dir is None and not args.models_config:
            raise ValueError("give a run directory to export, or --models-config")
        parse_version_policy(args.version_policy)  # refuse before anything is written
        if args.run_dir is not None:
            print(export_run(args.run_dir, args.output_dir, args.name, args.version))
        if args.models_config:
            print(write_models_config(args.output_dir, args.serving_root, args.version_policy))

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
