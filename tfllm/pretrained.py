"""Pretrained GPT-2 weights in tfllm's GPT, offline.

Two kinds of directory load, with no network:

- a Hugging Face GPT-2 checkpoint: `config.json` (n_layer, n_head, n_embd, n_positions,
  vocab_size, ...), `model.safetensors` (GPT-2's tensor names, with or without the
  "transformer." prefix), `vocab.json` and `merges.txt`, or, as `tfllm.hf_format` exports
  a model with a trained tokenizer, its `tokenizer.json`;
- a keras-hub GPT2 preset (what `GPT2Backbone.save_to_preset` or
  `GPT2CausalLM.save_to_preset` writes), loaded with keras-hub.

    from tfllm.pretrained import load_gpt2
    from tfllm.generation import Generator

    model, tokenizer, config = load_gpt2("checkpoints/gpt2")
    Generator(model, tokenizer, config.context_length)(["The meaning of life is"])

Padding. tfllm's GPT treats `config.pad_id` as padding (masked keys, positions counted
over real tokens, no loss), but GPT-2 has no pad token and its id 0 is "!". So the
imported embedding table gets extra rows, up to a multiple of 64 (50257 -> 50304, as
nanoGPT does; faster matrix products), and `pad_id` is the first of them (50257).
`real_vocab_size` (50257) makes the model give those rows -1e9 logits: they are never
predicted and take no share of the softmax, so the loss and the probabilities of the real
tokens are exactly GPT-2's. Every real id, "!" included, is an ordinary token, and EOS is
GPT-2's <|endoftext|> (50256). A config.json whose `pad_token_id` is a token of its own
(not EOS or BOS: tfllm's exported `<pad>`, id 0) keeps its table unpadded, with that id.

Layout. Hugging Face's Conv1D weights are (in, out), as Keras kernels are; the fused
`c_attn` columns are q, k, v with heads contiguous, which is what tfllm's attention
reshapes to `(3, heads, head_dim)`. keras-hub keeps query/key/value kernels of shape
(hidden, heads, head_dim): they are flattened and concatenated in that order.
"""

import json
import os
import struct
import tempfile

import numpy as np

from tfllm.atomic import open_atomic
from tfllm.models import GPTConfig, build_gpt
from tfllm.tokenizers import load_hf_tokenizer

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
KERAS_HUB_WEIGHTS = "model.weights.h5"
PAD_MULTIPLE = 64  # the embedding table is padded to a multiple of this
# Buffers some GPT-2 checkpoints carry (the causal mask): not weights.
_BUFFERS = (".attn.bias", ".attn.masked_bias")
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
_OVERRIDABLE = ("dropout", "context_length")
TOKEN_TABLE = "embedding/token_embeddings"  # the weight path of the token embedding table
# (tfllm weight path in block_N/, Hugging Face tensor name in h.N.): the same layout both ways.
BLOCK_WEIGHTS = (
    ("attention_norm/gamma", "ln_1.weight"), ("attention_norm/beta", "ln_1.bias"),
    ("attention/qkv/kernel", "attn.c_attn.weight"), ("attention/qkv/bias", "attn.c_attn.bias"),
    ("attention/output/kernel", "attn.c_proj.weight"),
    ("attention/output/bias", "attn.c_proj.bias"),
    ("ffn_norm/gamma", "ln_2.weight"), ("ffn_norm/beta", "ln_2.bias"),
    ("ffn_in/kernel", "mlp.c_fc.weight"), ("ffn_in/bias", "mlp.c_fc.bias"),
    ("ffn_out/kernel", "mlp.c_proj.weight"), ("ffn_out/bias", "mlp.c_proj.bias"))


def load_gpt2(path, **overrides):
    """(model from `build_gpt`, tokenizer, `GPTConfig`) from a GPT-2 directory (its
    tokenizer: `GPT2Tokenizer`, or what `tfllm.hf_format` exported with the model).

    `overrides` may set `dropout` (default 0) and a shorter `context_length` (the position
    table is cut); the rest of the shape comes from the checkpoint.
    """
    config = gpt2_config(path, **overrides)
    model = build_gpt(config)
    set_gpt2_weights(model, path, config)
    return model, load_hf_tokenizer(path), config


def add_chat_markers(model, tokenizer, config, seed=0):
    """(model, tokenizer, config) of a GPT-2 given the four chat markers, for SFT.

    The markers take the ids after GPT-2's own (50257-50260) and padding moves past them
    (50261); `real_vocab_size` grows to cover them, and the table grows if it has no room.
    Each marker's embedding row starts at the mean of the real rows plus a little noise:
    a zero row (the padded table's) would give a logit of 0, far above GPT-2's usual
    ones, and identical rows could not be told apart. Everything else is copied unchanged.
    A tokenizer that has the markers already is returned as it is.
    """
    import dataclasses

    from tfllm.chat_format import END_TOKEN, ROLE_TOKENS

    markers = (*ROLE_TOKENS.values(), END_TOKEN)
    new = [m for m in markers if m not in tokenizer.added]
    if not new:
        return model, tokenizer, config
    tokenizer = tokenizer.with_added(new)
    real = tokenizer.vocab_size
    config = dataclasses.replace(
        config, vocab_size=max(config.vocab_size, padded_vocab_size(real)),
        pad_id=tokenizer.pad_id, real_vocab_size=real)
    values = {v.path: np.asarray(v.numpy()) for v in model.weights}
    old = values[TOKEN_TABLE]
    known = real - len(new)  # rows that hold trained tokens
    table = np.zeros((config.vocab_size, old.shape[1]), old.dtype)
    table[:known] = old[:known]
    noise = np.random.default_rng(seed).standard_normal((len(new), old.shape[1]))
    table[known:real] = old[:known].mean(0) + 0.1 * old[:known].std() * noise
    values[TOKEN_TABLE] = table
    grown = build_gpt(config)
    for variable in grown.weights:
        variable.assign(values[variable.path].astype(variable.dtype))
    return grown, tokenizer, config


def gpt2_config(path, **overrides):
    """The `GPTConfig` of the GPT-2 in directory `path` (reads only its config.json)."""
    kind, hparams = _read_config(path)
    unknown = set(overrides) - set(_OVERRIDABLE)
    if unknown:
        raise ValueError(
            f"cannot override {sorted(unknown)} of a pretrained GPT-2: its shape comes from "
            f"'{path}'; only {list(_OVERRIDABLE)} can be changed")
    context = overrides.get("context_length") or hparams["n_positions"]
    if context > hparams["n_positions"]:
        raise ValueError(
            f"context_length={context} is longer than the checkpoint's {hparams['n_positions']} "
            "positions: use at most that many")
    vocab, pad = hparams["vocab_size"], hparams["pad_token_id"]
    # A pad token of its own (tfllm's trained tokenizers: <pad>, id 0) keeps the table as
    # it is; otherwise padding is a row past the vocabulary, as for GPT-2 (see above).
    padding = (dict(vocab_size=vocab, pad_id=pad, real_vocab_size=0) if pad is not None else
               dict(vocab_size=padded_vocab_size(vocab), pad_id=vocab, real_vocab_size=vocab))
    return GPTConfig(
        context_length=context, num_layers=hparams["n_layer"], num_heads=hparams["n_head"],
        embed_dim=hparams["n_embd"], intermediate_dim=hparams["n_inner"],
        dropout=overrides.get("dropout", 0.0), layer_norm_epsilon=hparams["layer_norm_epsilon"],
        tie_embeddings=hparams["tie_word_embeddings"], **padding)


def padded_vocab_size(vocab_size):
    """Rows of the embedding table: the vocabulary plus a pad row, up to a multiple of 64."""
    return -(-(vocab_size + 1) // PAD_MULTIPLE) * PAD_MULTIPLE


def set_gpt2_weights(model, path, config):
    """Copy the GPT-2 weights in directory `path` into `model` (built from `config`, e.g.
    under a strategy scope or a mixed-precision policy). Raises one ValueError that names
    every missing or mis-shaped tensor with the shape it should have."""
    kind, hparams = _read_config(path)
    if kind == "keras_hub":
        tensors, source = _keras_hub_tensors(path, hparams), f"keras-hub preset '{path}'"
    else:
        weights_path = os.path.join(path, SAFETENSORS_FILE)
        if not os.path.isfile(weights_path):
            raise FileNotFoundError(
                f"no {SAFETENSORS_FILE} in '{path}': download the checkpoint's safetensors "
                "file (pytorch_model.bin is not read)")
        tensors, source = read_safetensors(weights_path), f"'{weights_path}'"
    values = _tfllm_weights(_strip_prefix(tensors), hparams, config, source)
    for variable in model.weights:
        value = values.get(variable.path)
        if value is None or value.shape != tuple(variable.shape):
            raise ValueError(
                f"the model's weight '{variable.path}' {tuple(variable.shape)} has no GPT-2 "
                f"counterpart of that shape in '{path}': build the model from "
                "gpt2_config(path)")
        variable.assign(value.astype(variable.dtype))


def _read_config(path):
    """('hf' or 'keras_hub', GPT-2 hyper-parameters in Hugging Face's names)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"no directory '{path}': give a Hugging Face GPT-2 directory (config.json + "
            "model.safetensors) or a keras-hub GPT2 preset")
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"no {CONFIG_FILE} in '{path}': give a Hugging Face GPT-2 directory (config.json + "
            "model.safetensors) or a keras-hub GPT2 preset")
    with open(config_path, encoding="utf-8") as f:
        raw = json.load(f)
    if "class_name" in raw:  # keras-hub: the backbone's serialized config
        if raw["class_name"] != "GPT2Backbone":
            raise ValueError(f"'{config_path}' is a keras-hub {raw['class_name']}, not a "
                             "GPT2Backbone: only GPT-2 presets load")
        c = raw["config"]
        return "keras_hub", dict(
            n_layer=c["num_layers"], n_head=c["num_heads"], n_embd=c["hidden_dim"],
            n_inner=c["intermediate_dim"], n_positions=c["max_sequence_length"],
            vocab_size=c["vocabulary_size"], layer_norm_epsilon=1e-5, pad_token_id=None,
            tie_word_embeddings=True)
    if raw.get("model_type", "gpt2") != "gpt2" or "n_embd" not in raw:
        raise ValueError(f"'{config_path}' is not a GPT-2 config (model_type "
                         f"{raw.get('model_type')!r}): only GPT-2 checkpoints load")
    activation = raw.get("activation_function", "gelu_new")
    if activation not in _TANH_GELUS:
        raise ValueError(f"'{config_path}' uses activation {activation!r}; tfllm's blocks use "
                         f"GPT-2's tanh GELU ({', '.join(_TANH_GELUS)})")
    for flag, want in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False)):
        if raw.get(flag, want) != want:
            raise ValueError(f"'{config_path}' sets {flag}={raw[flag]}, which tfllm's "
                             "attention does not implement")
    # Hub checkpoints often set pad_token_id to EOS: that is a token, not padding.
    pad = raw.get("pad_token_id")
    if pad in (raw.get("eos_token_id"), raw.get("bos_token_id")) or not (
            isinstance(pad, int) and 0 <= pad < raw["vocab_size"]):
        pad = None
    return "hf", dict(
        n_layer=raw["n_layer"], n_head=raw["n_head"], n_embd=raw["n_embd"],
        n_inner=raw.get("n_inner") or 4 * raw["n_embd"],
        n_positions=raw.get("n_positions") or raw["n_ctx"], vocab_size=raw["vocab_size"],
        layer_norm_epsilon=raw.get("layer_norm_epsilon", 1e-5), pad_token_id=pad,
        tie_word_embeddings=raw.get("tie_word_embeddings", True))


def _keras_hub_tensors(path, hparams):
    """The weights of a keras-hub GPT2 preset, under Hugging Face's GPT-2 names."""
    import keras_hub

    weights_file = os.path.join(path, KERAS_HUB_WEIGHTS)
    if not os.path.isfile(weights_file):
        raise FileNotFoundError(f"no {KERAS_HUB_WEIGHTS} in the keras-hub preset '{path}': "
                                "save it again with save_to_preset")
    try:
        backbone = keras_hub.models.GPT2Backbone.from_preset(os.fspath(path))
    except ValueError as error:
        problems = _keras_hub_problems(path)
        if not problems:
            raise ValueError(f"could not load the keras-hub GPT-2 preset '{path}' ({error}): "
                             "save it again with save_to_preset") from None
        _raise_problems(f"'{weights_file}'", hparams, problems)
    w = {v.path: v.numpy() for v in backbone.weights}
    e = hparams["n_embd"]
    t = {"wte.weight": w["token_embedding/embeddings"],
         "wpe.weight": w["position_embedding/embeddings"],
         "ln_f.weight": w["layer_norm/gamma"], "ln_f.bias": w["layer_norm/beta"]}
    for i in range(hparams["n_layer"]):
        k, h = f"transformer_layer_{i}/", f"h.{i}."
        attn = k + "self_attention/"
        # (hidden, heads, head_dim) -> (hidden, hidden); q, k, v side by side.
        t[h + "attn.c_attn.weight"] = np.concatenate(
            [w[attn + f"{p}/kernel"].reshape(e, e) for p in ("query", "key", "value")], axis=1)
        t[h + "attn.c_attn.bias"] = np.concatenate(
            [w[attn + f"{p}/bias"].reshape(e) for p in ("query", "key", "value")])
        t[h + "attn.c_proj.weight"] = w[attn + "attention_output/kernel"].reshape(e, e)
        t[h + "attn.c_proj.bias"] = w[attn + "attention_output/bias"]
        for ours, theirs in (("ln_1", "self_attention_layer_norm"),
                             ("ln_2", "feedforward_layer_norm")):
            t[h + ours + ".weight"] = w[k + theirs + "/gamma"]
            t[h + ours + ".bias"] = w[k + theirs + "/beta"]
        for ours, theirs in (("c_fc", "feedforward_intermediate_dense"),
                             ("c_proj", "feedforward_output_dense")):
            t[h + f"mlp.{ours}.weight"] = w[k + theirs + "/kernel"]
            t[h + f"mlp.{ours}.bias"] = w[k + theirs + "/bias"]
    return t


def _keras_hub_problems(path):
    """Missing, mis-shaped or unexpected weights of a preset that keras-hub refused, named
    by weight path: its file is compared with one saved from a fresh backbone of the same
    config whose k-th weight is filled with k."""
    import h5py
    import keras_hub

    fresh = keras_hub.models.GPT2Backbone.from_preset(os.fspath(path), load_weights=False)
    for k, variable in enumerate(fresh.weights):
        variable.assign(np.full(variable.shape, k, variable.dtype))
    with tempfile.TemporaryDirectory() as tmp:
        reference = os.path.join(tmp, "fresh.weights.h5")
        fresh.save_weights(reference)
        with h5py.File(reference, "r") as f:
            expected = {name: fresh.weights[int(d[(0,) * d.ndim])]
                        for name, d in _h5_datasets(f).items()}
    with h5py.File(os.path.join(path, KERAS_HUB_WEIGHTS), "r") as f:
        found = {name: d.shape for name, d in _h5_datasets(f).items()}
    problems = []
    for name, variable in expected.items():
        shape = tuple(variable.shape)
        if name not in found:
            problems.append(f"tensor '{variable.path}' ({name}) is missing "
                            f"(expected shape {shape})")
        elif found[name] != shape:
            problems.append(f"tensor '{variable.path}' ({name}) has shape {found[name]}, "
                            f"expected {shape}")
    problems += [f"unexpected tensor '{name}'" for name in sorted(set(found) - set(expected))]
    return problems


def _h5_datasets(group):
    found = {}
    group.visititems(lambda name, item: found.update({name: item})
                     if hasattr(item, "shape") else None)
    return found


def _strip_prefix(tensors):
    """GPT2LMHeadModel files name the weights "transformer.h.0..."; the tied
    "lm_head.weight", when it is the one kept, is the token embedding."""
    tensors = {(k[len("transformer."):] if k.startswith("transformer.") else k): v
               for k, v in tensors.items()}
    if "wte.weight" not in tensors and "lm_head.weight" in tensors:
        tensors["wte.weight"] = tensors["lm_head.weight"]
    return tensors


def gpt2_tensor_shapes(hparams):
    """{Hugging Face tensor name: shape} of a GPT-2 with these hyper-parameters."""
    e, i = hparams["n_embd"], hparams["n_inner"]
    shapes = {"wte.weight": (hparams["vocab_size"], e), "wpe.weight": (hparams["n_positions"], e),
              "ln_f.weight": (e,), "ln_f.bias": (e,)}
    for n in range(hparams["n_layer"]):
        h = f"h.{n}."
        shapes.update({
            h + "ln_1.weight": (e,), h + "ln_1.bias": (e,),
            h + "attn.c_attn.weight": (e, 3 * e), h + "attn.c_attn.bias": (3 * e,),
            h + "attn.c_proj.weight": (e, e), h + "attn.c_proj.bias": (e,),
            h + "ln_2.weight": (e,), h + "ln_2.bias": (e,),
            h + "mlp.c_fc.weight": (e, i), h + "mlp.c_fc.bias": (i,),
            h + "mlp.c_proj.weight": (i, e), h + "mlp.c_proj.bias": (e,)})
    return shapes


def _tfllm_weights(tensors, hparams, config, source):
    """{tfllm weight path: float32 array}, after checking every tensor's name and shape."""
    expected = gpt2_tensor_shapes(hparams)
    problems = []
    for name, shape in expected.items():
        if name not in tensors:
            problems.append(f"tensor '{name}' is missing (expected shape {shape})")
        elif tuple(tensors[name].shape) != shape:
            problems.append(f"tensor '{name}' has shape {tuple(tensors[name].shape)}, "
                            f"expected {shape}")
    extra = sorted(k for k in tensors if k not in expected and k != "lm_head.weight"
                   and not k.endswith(_BUFFERS))
    problems += [f"unexpected tensor '{name}'" for name in extra]
    lm_head = tensors.get("lm_head.weight")
    if not hparams["tie_word_embeddings"]:
        if lm_head is None or lm_head.shape != expected["wte.weight"]:
            problems.append(f"tensor 'lm_head.weight' (expected shape {expected['wte.weight']}, "
                            "as config.json sets tie_word_embeddings=false) is missing or "
                            "mis-shaped")
    elif (not problems and lm_head is not None and lm_head is not tensors["wte.weight"]
            and not np.array_equal(lm_head, tensors["wte.weight"])):
        problems.append("'lm_head.weight' differs from 'wte.weight', but config.json does "
                        "not set tie_word_embeddings=false")
    if problems:
        _raise_problems(source, hparams, problems)

    def f32(name):
        return np.asarray(tensors[name], dtype=np.float32)

    def padded(table):  # the pad rows stay 0 (never predicted)
        rows = np.zeros((config.vocab_size, config.embed_dim), np.float32)
        rows[: hparams["vocab_size"]] = table
        return rows

    values = {TOKEN_TABLE: padded(f32("wte.weight")),
              "embedding/position_embeddings": f32("wpe.weight")[: config.context_length],
              "final_norm/gamma": f32("ln_f.weight"), "final_norm/beta": f32("ln_f.bias")}
    if not hparams["tie_word_embeddings"]:  # (vocab, embed) -> a Dense kernel (embed, vocab)
        values["lm_head/kernel"] = padded(f32("lm_head.weight")).T
    for n in range(hparams["n_layer"]):
        for ours, theirs in BLOCK_WEIGHTS:
            values[f"block_{n}/{ours}"] = f32(f"h.{n}.{theirs}")
    return values


def _raise_problems(source, hparams, problems):
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                       if len(problems) > 5 else "")
    raise ValueError(
        f"{source} does not hold the GPT-2 its config.json describes ({hparams['n_layer']} "
        f"layers, width {hparams['n_embd']}, vocabulary {hparams['vocab_size']}): {shown}. "
        "Use the complete checkpoint with its own config.json")


# --- safetensors: an 8-byte little-endian header length, a JSON header, raw data ---------

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U8": "u1", "BOOL": "?"}


def read_safetensors(path):
    """{name: NumPy array} of a .safetensors file (memory-mapped; BF16 becomes float32)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"'{path}' is not a safetensors file (it is {len(head)} bytes)")
        (header_size,) = struct.unpack("<Q", head)
        try:
            header = json.loads(f.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"'{path}' is not a safetensors file (no JSON header)") from None
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_size)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[start:end]
        if info["dtype"] == "BF16":  # the high half of a float32
            tensor = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in _DTYPES:
            tensor = raw.view(_DTYPES[info["dtype"]])
        else:
            raise ValueError(f"tensor '{name}' in '{path}' has dtype {info['dtype']}, "
                             f"which is not read: use one of {sorted(_DTYPES) + ['BF16']}")
        tensors[name] = tensor.reshape(info["shape"])
    return tensors


def write_safetensors(path, tensors, metadata=None):
    """Write {name: array} as a .safetensors file (names sorted, data 8-byte aligned)."""
    names = {np.dtype(v): k for k, v in _DTYPES.items()}
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        array = array.astype(array.dtype.newbyteorder("<"))
        blob = array.tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open_atomic(path) as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for blob in blobs:
            f.write(blob)
