"""Export a tfllm GPT as a Hugging Face GPT-2 directory (transformers, vLLM, llama.cpp).

    python -m tfllm.export runs/NAME --format hf exported/NAME

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("exported/NAME")
    tokenizer = AutoTokenizer.from_pretrained("exported/NAME")

The directory holds `config.json` (a GPT2LMHeadModel), `model.safetensors` (float32, GPT-2's
tensor names), `generation_config.json` and the tokenizer: `tokenizer.json` for the
tokenizers train.py trains, GPT-2's `vocab.json` + `merges.txt` for an imported GPT-2, and
`tokenizer_config.json` with the special tokens and a chat template. `tfllm.pretrained.
load_gpt2` (and `train.py --init DIR`) reads it back into the same model and tokenizer.

What carries over exactly:
- the blocks: GPT-2's are tfllm's (pre-norm, fused q/k/v with heads contiguous, Conv1D
  weights (in, out) as Keras kernels, attention scaled by 1/sqrt(head_dim)); the GELU is
  the tanh approximation, `activation_function: gelu_new`; the layer-norm epsilon is copied.
- padding: a table padded past the vocabulary (an imported GPT-2: 50257 tokens in 50304
  rows) is cut to the real tokens, so Hugging Face's logits are tfllm's over every id it
  knows; tfllm's -1e9 pad rows are simply absent. A trained tokenizer's own `<pad>` (id 0)
  is an ordinary row, written as `pad_token_id`; it never occurs in tokenized text, so
  tfllm's padding mask never applies to real input.
- ids: tfllm's bos/eos/pad ids (<s> 2, </s> 3, <pad> 0; GPT-2: <|endoftext|> for both and
  no pad token). Generation stops at EOS and, where the tokenizer has it, <|end|>.
- the chat markers are special tokens (matched whole in text, as a chat template needs).

Refused, in one line naming the option: sinusoidal positions (GPT-2 learns its position
table). Untied output embeddings are written as `lm_head.weight` with
`tie_word_embeddings: false`; `use_bias=False` models get zero biases (GPT-2 always has them).
"""

import os
import shutil
from pathlib import Path

import numpy as np

from tfllm.atomic import fsync_dir, fsync_tree, write_json
from tfllm.chat_format import END_TOKEN, ROLE_TOKENS
from tfllm.pretrained import BLOCK_WEIGHTS, CONFIG_FILE, SAFETENSORS_FILE, TOKEN_TABLE, \
    write_safetensors
from tfllm.tokenizers import _RESERVED_PIECES
from tfllm.training.run_dir import load_run, recorded_task

GENERATION_CONFIG = "generation_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
HF_TOKENIZER = "tokenizer.json"
_SPACE = "\u2581"  # SentencePiece's visible space "▁"
# The chat layout of tfllm.chat_format as a Jinja template: EOS, then each message between
# its role marker and <|end|>, markers typed inside a message defused to "<end>" etc.
_CHAT_TEMPLATE = (
    "{{ eos_token }}{% for message in messages %}{{ '<|' + message['role'] + '|>' }}"
    "{{ message['content'] | replace('<|system|>', '<system>') | replace('<|user|>', '<user>')"
    " | replace('<|assistant|>', '<assistant>') | replace('<|end|>', '<end>') }}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def export_hf(run_dir, out_dir):
    """Write the latest checkpoint of train.py run `run_dir` as a Hugging Face GPT-2
    directory `out_dir` (which must not exist, or be empty); returns its path."""
    _check_free(out_dir)
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"no run directory '{run_dir}': give a directory written by "
                                "train.py (runs/NAME)")
    task = recorded_task(run_dir)
    if task not in ("lm", "sft"):  # the GPT tasks (a classifier's head is no GPT-2's)
        raise ValueError(f"'{run_dir}' is a {task} run: only language models (train.py "
                         "--task lm or sft) export to the GPT-2 format")
    model, tokenizer, config = load_run(run_dir)
    return write_hf(model, tokenizer, config, out_dir)


def write_hf(model, tokenizer, config, out_dir):
    """Write `model` (from `build_gpt(config)`) and `tokenizer` as a Hugging Face GPT-2
    directory `out_dir`, atomically: files go to a hidden sibling that is renamed into
    place when complete. Returns `out_dir`.

    Raises:
        ValueError: `config` has a structure GPT-2 cannot express, or `out_dir` is not empty.
    """
    if config.position_type != "learned":
        raise ValueError(f"position_type={config.position_type!r} cannot be exported: GPT-2 "
                         "has a learned position table; train with position_type='learned'")
    _check_free(out_dir)
    out_dir = os.path.abspath(out_dir)
    parent, name = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        vocab = config.real_vocab_size or config.vocab_size
        write_safetensors(os.path.join(staging, SAFETENSORS_FILE),
                          hf_tensors(model, config, vocab), {"format": "pt"})
        write_json(os.path.join(staging, CONFIG_FILE), hf_config(config, tokenizer, vocab))
        write_json(os.path.join(staging, GENERATION_CONFIG), _generation_config(tokenizer))
        _write_tokenizer(tokenizer, staging, config.context_length)
        fsync_tree(staging)
        try:
            os.rename(staging, out_dir)  # atomic; replaces only an empty directory
        except OSError:
            raise ValueError(f"'{out_dir}' was filled by someone else during the export: "
                             "export to a new directory") from None
        fsync_dir(parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def hf_config(config, tokenizer, vocab):
    """config.json of a GPT2LMHeadModel with `config`'s shape and `vocab` tokens."""
    pad = tokenizer.pad_id if tokenizer.pad_id < vocab else None  # GPT-2: none
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": vocab, "n_positions": config.context_length,
        "n_ctx": config.context_length, "n_embd": config.embed_dim,
        "n_layer": config.num_layers, "n_head": config.num_heads,
        "n_inner": config.intermediate_dim, "activation_function": "gelu_new",
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout, "initializer_range": 0.02,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "tie_word_embeddings": config.tie_embeddings,
        "use_cache": True, "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
        "pad_token_id": pad, "dtype": "float32",
    }


def hf_tensors(model, config, vocab):
    """{GPT2LMHeadModel tensor name: float32 array} of `model`, the tables cut to `vocab`
    rows (the inverse of `tfllm.pretrained`'s mapping)."""
    weights = {v.path: np.asarray(v.numpy(), np.float32) for v in model.weights}
    t = "transformer."
    tensors = {t + "wte.weight": weights[TOKEN_TABLE][:vocab],
               t + "wpe.weight": weights["embedding/position_embeddings"],
               t + "ln_f.weight": weights["final_norm/gamma"],
               t + "ln_f.bias": weights["final_norm/beta"]}
    if not config.tie_embeddings:
        tensors["lm_head.weight"] = weights["lm_head/kernel"].T[:vocab]  # (vocab, embed)
    for n in range(config.num_layers):
        for ours, theirs in BLOCK_WEIGHTS:
            value = weights.get(f"block_{n}/{ours}")
            if value is None:  # use_bias=False: GPT-2's biases are zero
                kernel = weights[f"block_{n}/{ours.replace('/bias', '/kernel')}"]
                value = np.zeros(kernel.shape[-1], np.float32)
            tensors[f"{t}h.{n}.{theirs}"] = value
    return {k: np.ascontiguousarray(v) for k, v in tensors.items()}


def _generation_config(tokenizer):
    eos = [tokenizer.eos_id]
    if END_TOKEN in tokenizer._pieces:  # a chat model's turn ends at <|end|>
        eos.append(tokenizer.token_id(END_TOKEN))
    pad = tokenizer.pad_id if tokenizer.pad_id < tokenizer.vocab_size else tokenizer.eos_id
    return {"bos_token_id": tokenizer.bos_id, "eos_token_id": eos if len(eos) > 1 else eos[0],
            "pad_token_id": pad}


# --- tokenizer ---------------------------------------------------------------------------


def _write_tokenizer(tokenizer, directory, context_length):
    """The tokenizer files AutoTokenizer loads, and tokenizer_config.json."""
    if tokenizer.kind == "gpt2":
        tokenizer._save_files(Path(directory))  # vocab.json + merges.txt
        special = [tokenizer.eos_id, *range(tokenizer.vocab_size - len(tokenizer.added),
                                            tokenizer.vocab_size)]
        tokens = {"bos_token": tokenizer._pieces[tokenizer.bos_id],
                  "eos_token": tokenizer._pieces[tokenizer.eos_id],
                  "unk_token": tokenizer._pieces[tokenizer.eos_id]}
        tokenizer_class = "GPT2Tokenizer"
    else:
        special = list(range(len(_RESERVED_PIECES)))
        write_json(os.path.join(directory, HF_TOKENIZER), hf_tokenizer_json(tokenizer))
        tokens = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                  "pad_token": "<pad>"}
        tokenizer_class = "PreTrainedTokenizerFast"
    markers = [p for p in (*ROLE_TOKENS.values(), END_TOKEN) if p in tokenizer._pieces]
    config = {
        "tokenizer_class": tokenizer_class, **tokens,
        "additional_special_tokens": markers,
        "added_tokens_decoder": {str(i): _added_token(tokenizer._pieces[i]) for i in special},
        "model_max_length": context_length, "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
    }
    if len(markers) == 4:
        config["chat_template"] = _CHAT_TEMPLATE
    write_json(os.path.join(directory, TOKENIZER_CONFIG), config)


def hf_tokenizer_json(tokenizer):
    """The Hugging Face `tokenizer.json` that tokenizes as a tfllm SentencePiece (BPE, byte
    fallback) or char tokenizer does.

    SentencePiece BPE here reads the text as one sequence (no pre-tokenizer; its pieces
    never span a space they do not start with), spaces spelled "▁", and repeatedly merges
    the adjacent pair that makes the best-scored piece; characters left without a piece
    become <0xNN> byte pieces. As a Hugging Face BPE, every split of a piece into two
    pieces is a merge, ranked by the piece's score (its order in the vocabulary).
    A char tokenizer is a BPE with no merges: one id per character, <unk> for the rest.
    The reserved pieces (<pad>, <unk>, <s>, </s>, chat markers) are special tokens.
    """
    pieces = tokenizer._pieces
    vocab = {p: i for i, p in enumerate(pieces)}
    sentencepiece = tokenizer.kind == "sentencepiece"
    if tokenizer.kind not in ("sentencepiece", "char"):
        raise ValueError(f"a {tokenizer.kind} tokenizer has no tokenizer.json here: use "
                         "GPT-2's vocab.json and merges.txt")
    if sentencepiece:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_proto=tokenizer.model_proto)
        normal = {p: i for i, p in enumerate(pieces) if not (
            sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i)
            or i < len(_RESERVED_PIECES))}
        merges = sorted((normal[p], normal[p[:k]], normal[p[k:]], p[:k], p[k:])
                        for p in normal for k in range(1, len(p))
                        if p[:k] in normal and p[k:] in normal)
        model = {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                 "continuing_subword_prefix": None, "end_of_word_suffix": None,
                 "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                 "vocab": vocab, "merges": [[a, b] for *_, a, b in merges]}
        normalizer = {"type": "Replace", "pattern": {"String": " "}, "content": _SPACE}
        decoder = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": _SPACE}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]}
    else:
        model = {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                 "continuing_subword_prefix": None, "end_of_word_suffix": None,
                 "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                 "vocab": vocab, "merges": []}
        normalizer, decoder = None, {"type": "Fuse"}
    added = [{"id": i, **_added_token(p)} for i, p in enumerate(_RESERVED_PIECES)]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": normalizer, "pre_tokenizer": None, "post_processor": None,
            "decoder": decoder, "model": model}


def _added_token(content):
    """A special token matched whole in raw text (before normalization)."""
    return {"content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


# --- files -------------------------------------------------------------------------------


def _check_free(out_dir):
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise ValueError(f"'{out_dir}' already exists and is not empty: export to a new "
                         "directory (an export never overwrites one)")
