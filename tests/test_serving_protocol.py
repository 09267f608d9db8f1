"""The exported SavedModel as TF Serving and its clients see it, with tfllm absent.

The loaders run in fresh interpreters that have only TensorFlow and TensorFlow Text
(no PYTHONPATH, cwd "/"), and must give what in-process tfllm gives: greedy and seeded
generations identical, scores and logits to 1e-4.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

PROMPTS = ["The", "A list is", "你好 🙂"]
# Short, empty, and longer than the tiny model's 64-token context (scored in windows).
TEXTS = ["The list is sorted.", "", "Every object has an identity, a type and a value. " * 3]
SAMPLING = {"max_new_tokens": 12, "temperature": 0.8, "top_k": 20, "top_p": 0.9, "seed": 7}
# A bad request must fail with this message, and the model must keep serving.
BAD_REQUESTS = {
    "max_new_tokens": ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    "top_p_high": ({"top_p": 1.5}, "top_p must be in (0, 1]"),
    "top_p_zero": ({"top_p": 0.0}, "top_p must be in (0, 1]"),
    "top_k": ({"top_k": -1}, "top_k must be >= 0"),
    "temperature": ({"temperature": -1.0}, "temperature must be >= 0"),
    "too_long": ({"max_new_tokens": 60}, "exceeds the context of 64 tokens"),
    "mixed_values": ({"seed": [1, 2, 1]}, "seed must be one value for the whole request"),
}
DTYPES = {"max_new_tokens": "int32", "temperature": "float32", "top_k": "int32",
          "top_p": "float32", "seed": "int32"}

# Both loaders run in one fresh interpreter, one after the other: the TF2 one loads into
# the eager context, the session one into a graph and session of its own.
LOADERS_START = r"""
import json, sys
import tensorflow as tf, tensorflow_text
path, prompts, texts, sampling, bad, dtypes = sys.argv[1:2] + [json.loads(a) for a in sys.argv[2:]]
results = {}
"""

TF2_LOADER = r"""
m = tf.saved_model.load(path)
sig = m.signatures
strings = lambda t: [s.decode("utf-8", "replace") for s in t.numpy()]
params = lambda **kw: {k: tf.constant(v, dtypes[k]) for k, v in kw.items()}
GREEDY = dict(max_new_tokens=12, temperature=0.0, top_k=0, top_p=1.0, seed=0)
P = tf.constant(prompts)
out = {"signatures": sorted(sig)}
out["greedy"] = strings(sig["greedy"](prompts=P, **params(max_new_tokens=12))["outputs"])
out["all_inputs_greedy"] = strings(sig["serving_default"](prompts=P, **params(**GREEDY))["outputs"])
out["sampled"] = strings(sig["serving_default"](prompts=P, **params(**sampling))["outputs"])
# The restored functions (not the signatures) apply the defaults in Python.
out["defaults"] = strings(m.serving_default(P)["outputs"])
out["greedy_defaults"] = strings(m.greedy(P)["outputs"])
out["score"] = {k: v.numpy().tolist() for k, v in sig["score"](texts=tf.constant(texts)).items()}
tok = sig["tokenize"](texts=tf.constant(texts))
out["token_ids"] = tok["token_ids"].numpy().tolist()
out["lengths"] = tok["lengths"].numpy().tolist()
ids = tok["token_ids"][:1, :out["lengths"][0]]
out["logits"] = sig["logits"](token_ids=ids)["logits"].numpy().tolist()
out["errors"] = {}
for name, (change, _) in bad.items():
    try:
        sig["serving_default"](prompts=P, **params(**{**GREEDY, **change}))
        out["errors"][name] = None
    except tf.errors.InvalidArgumentError as e:
        out["errors"][name] = e.message
again = sig["greedy"](prompts=P, **params(max_new_tokens=12))
out["after_errors"] = strings(again["outputs"])
out["tfllm_imported"] = sorted(m for m in sys.modules if m.startswith("tfllm"))
results["tf2"] = out
"""

# The session-based loader is how tensorflow_model_server and `saved_model_cli run` load a
# SavedModel: signatures by tensor name, and inputs a request leaves out take the
# SignatureDef's defaults (placeholders with defaults).
SESSION_LOADER = r"""
from tensorflow_serving.apis import prediction_log_pb2
tf1 = tf.compat.v1
strings = lambda a: [s.decode("utf-8", "replace") for s in a]
warmup = [prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request
          for r in tf.data.TFRecordDataset(path + "/assets.extra/tf_serving_warmup_requests")]
out = {}
with tf1.Session(graph=tf.Graph()) as sess:
    meta = tf1.saved_model.loader.load(sess, ["serve"], path)
    sigs = meta.signature_def
    def call(name, **feeds):
        sig = sigs[name]
        return sess.run({k: v.name for k, v in sig.outputs.items()},
                        {sig.inputs[k].name: v for k, v in feeds.items()})
    out["signatures"] = sorted(k for k in sigs if not k.startswith("__"))
    out["greedy"] = strings(call("greedy", prompts=prompts, max_new_tokens=12)["outputs"])
    out["greedy_defaults"] = strings(call("greedy", prompts=prompts)["outputs"])
    out["defaults"] = strings(call("serving_default", prompts=prompts)["outputs"])
    out["sampled"] = strings(call("serving_default", prompts=prompts, **sampling)["outputs"])
    # What TF Serving's REST `instances` form sends: every input batched, one row per prompt.
    rows = {k: [v] * len(prompts) for k, v in sampling.items()}
    out["sampled_rows"] = strings(call("serving_default", prompts=prompts, **rows)["outputs"])
    s = call("score", texts=texts)
    out["score"] = {k: v.tolist() for k, v in s.items()}
    tok = call("tokenize", texts=texts)
    out["token_ids"], out["lengths"] = tok["token_ids"].tolist(), tok["lengths"].tolist()
    first = tok["token_ids"][:1, :out["lengths"][0]]
    out["logits"] = call("logits", token_ids=first)["logits"].tolist()
    out["errors"] = {}
    for name, (change, _) in bad.items():
        try:
            call("serving_default", prompts=prompts, **change)
            out["errors"][name] = None
        except tf.errors.InvalidArgumentError as e:
            out["errors"][name] = e.message
    again = call("greedy", prompts=prompts, max_new_tokens=12)
    out["after_errors"] = strings(again["outputs"])
    # Replay the warm-up file as TF Serving does before serving the version.
    out["warmup"] = []
    for request in warmup:
        feeds = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        result = call(request.model_spec.signature_name, **feeds)
        out["warmup"].append([request.model_spec.signature_name, sorted(result)])
results["session"] = out
print(json.dumps(results))
"""

SIGNATURES = ["chat", "greedy", "logits", "score", "serving_default", "tokenize"]


def run_fresh(script, *args, timeout=300):
    """Python with only what pip installed: tfllm is not importable (cwd /, no PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)],
                            check=False, capture_output=True, text=True, env=env, cwd="/",
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def loaded(trained_run):
    """What each loader got: {"tf2": ..., "session": ...}."""
    args = [json.dumps(a) for a in (PROMPTS, TEXTS, SAMPLING, BAD_REQUESTS, DTYPES)]
    script = LOADERS_START + TF2_LOADER + SESSION_LOADER
    return json.loads(run_fresh(script, trained_run[2], *args).stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def in_process(trained_run):
    """What tfllm gives in this process, from the run directory (not the SavedModel)."""
    import tensorflow as tf

    from tfllm.evaluation import RunModel, score_texts
    from tfllm.generation import Generator

    _, run_dir, saved_model, _ = trained_run
    run = RunModel(str(run_dir))
    metadata = json.loads((saved_model / "assets.extra" / "tfllm.json").read_text())
    generator = Generator(run.model, run.tokenizer, run.context_length)
    scores = [score_texts(run, [t], run.context_length) for t in TEXTS]
    ids = run.tokenizer.tokenize(tf.constant(TEXTS))
    return {
        "greedy": generator(PROMPTS, max_new_tokens=12),
        "sampled": generator(PROMPTS, **SAMPLING),
        "score": {"num_tokens": [s["tokens"] for s in scores],
                  "log_prob": [-s["loss"] * s["tokens"] for s in scores],
                  "perplexity": [s["perplexity"] for s in scores]},
        "token_ids": ids.to_list(),
        "logits": run.logits(ids[:1].to_tensor()).numpy(),
        "default_max_new_tokens": metadata["generation_defaults"]["max_new_tokens"],
        "generator": generator,
    }


def check_against_in_process(got, ref):
    assert got["signatures"] == SIGNATURES
    assert got["greedy"] == ref["greedy"]
    assert any(got["greedy"])
    assert got["sampled"] == ref["sampled"]
    assert got["sampled"] != got["greedy"]
    score = got["score"]
    assert score["num_tokens"] == ref["score"]["num_tokens"]
    np.testing.assert_allclose(score["log_prob"], ref["score"]["log_prob"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(score["perplexity"], ref["score"]["perplexity"], rtol=1e-5)
    assert [row[:n] for row, n in zip(got["token_ids"], got["lengths"])] == ref["token_ids"]
    np.testing.assert_allclose(got["logits"], ref["logits"], rtol=0, atol=1e-4)
    for name, (_, message) in BAD_REQUESTS.items():
        assert got["errors"][name] is not None and message in got["errors"][name], name
    assert got["after_errors"] == ref["greedy"]  # a failed request leaves the model serving


def test_tf2_loader_gives_what_tfllm_gives(loaded, in_process):
    got = loaded["tf2"]
    assert got["tfllm_imported"] == []
    check_against_in_process(got, in_process)
    assert got["all_inputs_greedy"] == in_process["greedy"]
    # Defaults: greedy, the exported max_new_tokens.
    assert got["defaults"] == got["greedy_defaults"]
    n = in_process["default_max_new_tokens"]
    assert got["defaults"] == in_process["generator"](PROMPTS, max_new_tokens=n)


def test_session_loader_gives_the_same_and_fills_defaults(loaded, in_process):
    got = loaded["session"]
    check_against_in_process(got, in_process)
    assert got["sampled_rows"] == got["sampled"]
    assert got["defaults"] == got["greedy_defaults"]
    n = in_process["default_max_new_tokens"]
    assert got["defaults"] == in_process["generator"](PROMPTS, max_new_tokens=n)
    # The warm-up file replays cleanly through the session, one request per signature.
    assert sorted(name for name, _ in got["warmup"]) == SIGNATURES


def test_signature_defaults_are_in_the_signature_def(trained_run):
    """TF Serving's Predict fills inputs a request leaves out from SignatureDef.defaults."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString(
        (trained_run[2] / "saved_model.pb").read_bytes())
    signatures = proto.meta_graphs[0].signature_def
    assert set(signatures["serving_default"].defaults) == set(DTYPES)
    assert set(signatures["serving_default"].inputs) == {"prompts", *DTYPES}
    assert set(signatures["greedy"].defaults) == {"max_new_tokens"}
    assert set(signatures["greedy"].inputs) == {"prompts", "max_new_tokens"}
    assert not signatures["score"].defaults and not signatures["logits"].defaults


SAVED_MODEL_CLI = ("import sys, tensorflow_text; "
                   "from tensorflow.python.tools.saved_model_cli import main; sys.exit(main())")


def test_saved_model_cli_shows_and_runs_the_signatures(trained_run):
    saved_model = str(trained_run[2])
    shown = run_fresh(SAVED_MODEL_CLI, "show", "--dir", saved_model, "--all").stdout
    for name in SIGNATURES:
        assert f"signature_def['{name}']" in shown
    for name, dtype in [("prompts", "DT_STRING"), ("texts", "DT_STRING"),
                        ("token_ids", "DT_INT32"), ("outputs", "DT_STRING"),
                        ("log_prob", "DT_FLOAT"), ("num_tokens", "DT_INT32"),
                        ("perplexity", "DT_FLOAT"), ("logits", "DT_FLOAT")]:
        section = shown.split(f"['{name}'] tensor_info:")[1]
        assert section.split("dtype: ")[1].startswith(dtype), name
    # `--input_exprs` takes Python literals; the generation parameters left out take their
    # SignatureDef defaults.
    ran = run_fresh(SAVED_MODEL_CLI, "run", "--dir", saved_model, "--tag_set", "serve",
                    "--signature_def", "serving_default", "--input_exprs", 'prompts=["The"]')
    assert "Result for output key outputs:" in ran.stdout
    value = ran.stdout.split("Result for output key outputs:")[1].strip()
    assert value.startswith("[b'") and len(value) > len("[b'']")


def test_warmup_file_is_prediction_logs_naming_existing_signatures(trained_run):
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import prediction_log_pb2

    saved_model = trained_run[2]
    signatures = saved_model_pb2.SavedModel.FromString(
        (saved_model / "saved_model.pb").read_bytes()).meta_graphs[0].signature_def
    path = saved_model / "assets.extra" / "tf_serving_warmup_requests"
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(path))]
    assert sorted(log.predict_log.request.model_spec.signature_name for log in logs) == SIGNATURES
    for log in logs:
        request = log.predict_log.request
        signature = signatures[request.model_spec.signature_name]
        assert request.model_spec.name == "t"
        assert set(request.inputs) <= set(signature.inputs)
        for key, tensor in request.inputs.items():
            assert tensor.dtype == signature.inputs[key].dtype, key
