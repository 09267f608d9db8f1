"""How well a model answers held-out conversations: the assistant-token loss and the rate
of greedy replies that end with `<|end|>`, for any GPT and conversations file (the SFT
report's numbers, and evaluate.py's for a chat model)."""

import os

import numpy as np
import tensorflow as tf

from tfllm.chat_format import END_TOKEN, ChatTokens, render_ids, trim_to_fit
from tfllm.evaluation import write_report
from tfllm.generation import decode, left_pad
from tfllm.graph_function import graph_function
from tfllm.tasks.lm.evaluate import evaluate_lm
from tfllm.tasks.sft.data import (conversation_rows, encode_conversations,
                                  split_conversations)
from tfllm.tasks.sft.mixture import load_conversations
from tfllm.training.loop import token_losses
from tfllm.training.run_dir import load_run, train_options

MAX_NEW_TOKENS = 64  # the reply length limit of the end-of-turn rate
SAMPLE_COUNT = 5     # held-out conversations written to samples.txt and the report


def assistant_loss(model, inputs, targets, pad_id, batch_size=32, jit_compile=False):
    """(mean cross-entropy in nats, count) over the targets that are not `pad_id`: with
    SFT rows, the assistant's tokens and their end-of-turn."""

    @graph_function(jit_compile=jit_compile)
    def sums(x, y):
        return token_losses(model(x, training=False), y, pad_id)

    total, count = 0.0, 0
    for start in range(0, len(inputs), batch_size):
        x, y = _full_batch(inputs[start:start + batch_size], batch_size, pad_id), \
            _full_batch(targets[start:start + batch_size], batch_size, pad_id)
        loss_sum, n = sums(tf.constant(x), tf.constant(y))
        total += float(loss_sum)
        count += int(n)
    return total / max(count, 1), count


def _full_batch(rows, batch_size, pad_id):
    # Padding rows keep one batch shape, so the function compiles once.
    filler = np.full((batch_size - len(rows), rows.shape[1]), pad_id, rows.dtype)
    return np.concatenate([rows, filler])


def reply_prompts(tokenizer, conversations, budget, tokens=None):
    """For each conversation, (prompt ids, the reference reply): the messages before its
    last assistant turn, oldest turns dropped to fit `budget`, ending in `<|assistant|>`.
    A conversation whose last message before the reply alone exceeds `budget` gets None."""
    tokens = tokens or ChatTokens(tokenizer)
    found = []
    for messages in conversations:
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        history = messages[:last]
        try:
            kept = trim_to_fit(tokenizer, history, budget, tokens) if history else []
        except ValueError:
            found.append((None, messages[last]["content"]))
            continue
        ids = render_ids(tokenizer, kept, add_reply_prompt=True, tokens=tokens)[0]
        found.append((ids.tolist(), messages[last]["content"]))
    return found


def generate_replies(model, prompts, max_new_tokens, *, context_length, pad_id, stop_id,
                     batch_size=32, jit_compile=False):
    """Greedy replies `(n, max_new_tokens)` to prompt id lists, `pad_id` after `stop_id`."""
    width = max(len(p) for p in prompts)
    batch_size = min(batch_size, len(prompts))
    run = graph_function(lambda prompt: decode(
        model, prompt, max_new_tokens, context_length=context_length, stop_ids=[stop_id],
        pad_id=pad_id), jit_compile=jit_compile)
    replies = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        filled = chunk + [chunk[0]] * (batch_size - len(chunk))  # one shape: one compile
        prompt = left_pad(tf.ragged.constant(filled, dtype=tf.int32), pad_id, width)
        replies.append(run(prompt).numpy()[:len(chunk)])
    return np.concatenate(replies)


def evaluate_sft(model, tokenizer, conversations, *, context_length, seq_len=None,
                 max_new_tokens=MAX_NEW_TOKENS, batch_size=32, samples=SAMPLE_COUNT,
                 jit_compile=False):
    """How well `model` answers held-out `conversations` (lists of messages).

    Returns a dict:
        val_loss, val_tokens: mean cross-entropy (nats) over the assistant tokens and their
            end-of-turn, each conversation scored alone (cut to `seq_len` + 1 tokens,
            default the context, as training cuts them);
        end_rate, ended, replies: the share of greedy replies to the prompt before each
            conversation's last assistant turn that end with `<|end|>` within
            `max_new_tokens` (capped at half the context);
        samples: the first `samples` (prompt, reference, reply, ended) for reading.

    jit_compile: XLA for the loss and the decoding loop; off by default, since compiling
    costs more than it saves on a few hundred conversations of a small model.
    """
    tokens = ChatTokens(tokenizer)
    seq_len = seq_len or context_length
    examples, stats = encode_conversations(tokenizer, conversations, seq_len + 1, tokens)
    if not examples:
        raise ValueError(f"none of the {len(conversations)} conversations has an assistant "
                         f"token within {seq_len} tokens: use a longer sequence length")
    inputs, targets = conversation_rows(examples, tokenizer.pad_id)
    val_loss, val_tokens = assistant_loss(model, inputs, targets, tokenizer.pad_id, batch_size,
                                          jit_compile)

    max_new_tokens = max(1, min(int(max_new_tokens), context_length // 2))
    prompts = reply_prompts(tokenizer, conversations, context_length - max_new_tokens, tokens)
    usable = [(p, ref) for p, ref in prompts if p is not None]
    ended, shown = 0, []
    if usable:
        replies = generate_replies(model, [p for p, _ in usable], max_new_tokens,
                                   context_length=context_length, pad_id=tokenizer.pad_id,
                                   stop_id=tokens.end_id, batch_size=batch_size,
                                   jit_compile=jit_compile)
        for (prompt, reference), row in zip(usable, replies):
            stop = np.flatnonzero(row == tokens.end_id)
            ended += bool(len(stop))
            if len(shown) < samples:
                reply = row[:stop[0]] if len(stop) else row
                shown.append({"prompt": tokenizer.decode(prompt), "reference": reference,
                              "reply": tokenizer.decode(reply.tolist()),
                              "ended": bool(len(stop))})
    return {"val_loss": val_loss, "val_tokens": val_tokens,
            "end_rate": ended / max(len(usable), 1), "ended": ended, "replies": len(usable),
            "prompts_too_long": len(prompts) - len(usable), "max_new_tokens": max_new_tokens,
            "conversations": len(conversations), "truncated": stats["truncated"],
            "left_out": stats["left_out"], "samples": shown}


def compare_runs(base_run, sft_run, data, max_new_tokens=MAX_NEW_TOKENS, seq_len=None):
    """{"base": evaluate_sft(...), "sft": evaluate_sft(...)} of two run directories on the
    conversations of the JSONL file `data` (e.g. a held-out split)."""
    conversations = load_conversations(data, flag="data")
    results = {}
    for key, run in (("base", base_run), ("sft", sft_run)):
        model, tokenizer, config = load_run(run)
        results[key] = evaluate_sft(model, tokenizer, conversations,
                                    context_length=config.context_length, seq_len=seq_len,
                                    max_new_tokens=max_new_tokens)
    return results


def summary(base, tuned):
    """Two lines comparing the base model's evaluation with the fine-tuned one's."""
    return (f"assistant-token validation loss: base {base['val_loss']:.4f} -> SFT "
            f"{tuned['val_loss']:.4f} nats/token ({tuned['val_tokens']} tokens)\n"
            f"replies ending with {END_TOKEN} within {tuned['max_new_tokens']} tokens: base "
            f"{base['end_rate']:.1%} -> SFT {tuned['end_rate']:.1%} "
            f"(of {tuned['replies']} held-out conversations)")




# --- evaluate.py for a chat model --------------------------------------------------------


def heldout_conversations(train_options, data=""):
    """(conversations, where they came from): `data` whole, else the run's validation
    conversations (its --val, or the share of its --data held out, as training did)."""
    if data:
        return load_conversations(data, flag="--data"), data
    if train_options.get("val"):
        return load_conversations(train_options["val"], flag="--val"), train_options["val"]
    if not train_options.get("data"):
        raise ValueError("no held-out conversations to score: pass --data FILE (JSONL)")
    fraction = train_options.get("val_fraction", 0.1)
    conversations = load_conversations(train_options["data"], flag="--data")
    return (split_conversations(conversations, fraction)[1],
            f"{fraction:.0%} of {train_options['data']} held out")


def evaluate_chat_model(args):
    """evaluate.py on an SFT run directory: the assistant-token loss and end-of-turn rate
    on held-out conversations (JSONL), with samples, in report.json. A SavedModel of a
    chat model is scored as a language model on the text given with --data."""
    if os.path.exists(os.path.join(args.model, "saved_model.pb")):
        if not args.data:
            raise ValueError(f"'{args.model}' is a chat model's SavedModel: score its "
                             "conversations from the run directory (runs/NAME), or pass "
                             "--data TEXT to score text with it")
        return evaluate_lm(args)
    if args.prompt:
        raise ValueError(f"'{args.model}' is a chat model: --prompt applies to language "
                         "models; talk to it with python -m tfllm.chat")
    options = train_options(args.model)
    conversations, source = heldout_conversations(options, args.data)
    model, tokenizer, config = load_run(args.model)
    seq_len = args.seq_len or config.context_length
    if seq_len > config.context_length:
        raise ValueError(f"--seq-len {seq_len} is above the model's context of "
                         f"{config.context_length}: lower it")
    metrics = evaluate_sft(model, tokenizer, conversations, seq_len=seq_len,
                           context_length=config.context_length,
                           max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    report = {"model": args.model, "task": "sft", "data": source, "seq_len": seq_len,
              "metrics": metrics}
    path = write_report(report, args.out or args.model)
    rows = [("model", args.model), ("conversations", source),
            ("assistant-token loss", f"{metrics['val_loss']:.4f} nats/token "
                                     f"({metrics['val_tokens']:,} tokens)"),
            (f"replies ending {END_TOKEN}", f"{metrics['end_rate']:.1%} of "
                                            f"{metrics['replies']} within "
                                            f"{metrics['max_new_tokens']} tokens")]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    for sample in metrics["samples"]:
        print(f"--- {sample['prompt']!r} -> {sample['reply']!r}")
    print(f"report: {path}")
