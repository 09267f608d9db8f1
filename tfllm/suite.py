"""The report card (`evaluate.py MODEL [MODEL ...] --suite`): the same rows for every model,
a column each (base and fine-tuned side by side), in report.json, report.md and
suite.png.

Rows, each where it applies to a model:

    text       bits per byte (and loss) on held-out text                  GPT
    translate  BLEU and chrF of English -> Chinese translations (sacrebleu)  chat model, seq2seq
    math       exact match of GSM8K's final number                        chat model
    sentiment  accuracy and macro-F1 of the model's one-word answers      chat model
    chat       assistant-token loss and end-of-turn rate                   chat run directory
    continue   chrF and verse form of a piece's continuation from its first half   GPT

A chat model answers an instruction (the prompts of tfllm.tasks.sft.mixture, so a model
fine-tuned on such a mixture is asked as it learnt) greedily; a translator translates its
own direction. A plain language model continues a piece as it is; a chat model is asked
to. Each row reads a file or a dataset name (`--suite-data ROW=SPEC`) and scores
`--suite-size` of its examples (a seeded choice, the same for every model).
"""

import json
import os
import re

import numpy as np

from tfllm.atomic import save_figure, write_atomic, write_json
from tfllm.datasets import resolve_data
from tfllm.tasks import task_of

ROWS = ("text", "translate", "math", "sentiment", "chat", "continue")
DEFAULT_DATA = {"translate": "cmn-eng:test", "math": "gsm8k:test", "sentiment": "sst2:test",
                "chat": "personality_chat:valid", "continue": "tang_poetry:valid"}
SENTIMENT_WORDS = {"en": ["negative", "positive"], "zh": ["负面", "正面"]}
MAX_NEW_TOKENS = {"translate": 48, "math": 128, "sentiment": 8, "continue": 48}
CLAUSE = re.compile(r"[^，。？！；,.?!;\n]*[，。？！；,.?!;]")
SAMPLES = 3


class ChatAnswers:
    """Greedy replies of a chat model (run directory or SavedModel) to single messages.
    A reply is at most half the context long; a message that leaves it no room gets the
    empty reply (scored as wrong)."""

    def __init__(self, path):
        import tensorflow as tf

        self._tf = tf
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            loaded = tf.saved_model.load(path)
            self._chat, self._tokenize = (loaded.signatures["chat"],
                                          loaded.signatures["tokenize"])
            with open(os.path.join(path, "assets.extra", "tfllm.json"), encoding="utf-8") as f:
                self.context_length = json.load(f)["config"]["context_length"]
            self.model = None
            return
        from tfllm.chat_format import ChatTokens
        from tfllm.generation import Generator
        from tfllm.training.run_dir import load_run

        self.model, self.tokenizer, config = load_run(path)
        self.context_length = config.context_length
        self.tokens = ChatTokens(self.tokenizer)
        self._generator = Generator(self.model, self.tokenizer, self.context_length)

    def _lengths(self, messages):
        if self.model is None:
            return self._tokenize(texts=self._tf.constant(messages))["lengths"].numpy()
        return [len(self.tokenizer.encode(m)) for m in messages]

    def __call__(self, messages, max_new_tokens, batch_size=16):
        max_new_tokens = min(max_new_tokens, self.context_length // 2)
        # The prompt adds EOS, <|user|>, <|end|> and <|assistant|> around the message.
        fits = [n + 4 <= self.context_length - max_new_tokens
                for n in self._lengths(messages)]
        return answered_where_fits(messages, fits,
                                   lambda fitting: self._answer(fitting, max_new_tokens,
                                                                batch_size))

    def _answer(self, messages, max_new_tokens, batch_size):
        from tfllm.chat_format import render_ids

        out = []
        for i in range(0, len(messages), batch_size):
            chunk = messages[i:i + batch_size]
            if self.model is None:
                conversations = [json.dumps([{"role": "user", "content": m}]) for m in chunk]
                tf = self._tf
                replies = self._chat(
                    conversations=tf.constant(conversations),
                    max_new_tokens=tf.constant(max_new_tokens, tf.int32),
                    temperature=tf.constant(0.0), top_k=tf.constant(0),
                    top_p=tf.constant(1.0), seed=tf.constant(0))
                out += [r.decode("utf-8", "replace") for r in replies["replies"].numpy()]
            else:
                prompts = [render_ids(self.tokenizer, [{"role": "user", "content": m}],
                                      add_reply_prompt=True, tokens=self.tokens)[0].tolist()
                           for m in chunk]
                out += self._generator(prompts, max_new_tokens=max_new_tokens,
                                       stop_token_ids=[self.tokens.end_id,
                                                       self.tokenizer.eos_id])
        return out


def answered_where_fits(items, fits, answer):
    """`answer(items that fit)` (a list, in order) put back in place, with the empty
    output (scored as wrong) for each item that does not fit."""
    outputs = iter(answer([item for item, ok in zip(items, fits) if ok]))
    return [next(outputs) if ok else "" for ok in fits]


def chosen(items, size):
    """`size` of `items` in their order: all when there are no more, else a seeded random
    choice (data files are often sorted, by label or by length, so the first ones would
    not do); every model is scored on the same ones."""
    if len(items) <= size:
        return list(items)
    keep = np.sort(np.random.default_rng(0).choice(len(items), size, replace=False))
    return [items[i] for i in keep]


def final_number(text):
    """The answer of a GSM8K-style text: after '####' if present, else its last number."""
    tail = text.split("####")[-1] if "####" in text else text
    numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", tail)
    return numbers[-1].replace(",", "").rstrip(".") if numbers else None


def sentiment_answer(reply, words):
    """The label id whose word the reply names first, or -1."""
    found = [(reply.lower().find(w.lower()), i) for i, w in enumerate(words)]
    found = [(at, i) for at, i in found if at >= 0]
    return min(found)[1] if found else -1


def macro_f1(y_true, y_pred, labels):
    """Macro-F1 over `labels` (an unparsed answer, -1, counts as wrong for every class)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


# --- the rows --------------------------------------------------------------------------


def suite_texts(model_paths, tasks, spec):
    """(texts, where from) of the text row: `spec`'s, else the held-out text of the first
    language-model run given; (None, None) when neither exists."""
    from tfllm.data import read_texts
    from tfllm.evaluation import heldout_texts
    from tfllm.training.run_dir import recorded_options

    if spec:
        return read_texts(resolve_data(spec)), spec
    for path, task in zip(model_paths, tasks):
        if task.name == "lm":
            return heldout_texts(recorded_options(path)), f"held-out text of {path}"
    return None, None


def row_text(model, texts):
    from tfllm.evaluation import score_texts

    metrics = score_texts(model, texts, model.context_length)
    return {"bits_per_byte": metrics["bits_per_byte"], "loss": metrics["loss"],
            "tokens": metrics["tokens"]}, []


def row_translate(model_path, task, data, size, answers):
    from tfllm.tasks.seq2seq.data import read_pairs
    from tfllm.tasks.seq2seq.metrics import translation_scores
    from tfllm.tasks.sft.mixture import PROMPTS

    if task.name == "seq2seq":
        from tfllm.tasks.seq2seq.evaluate import SavedTranslator
        from tfllm.tasks.seq2seq.model import Translator, load_seq2seq_run
        from tfllm.training.run_dir import recorded_options

        saved = os.path.exists(os.path.join(model_path, "saved_model.pb"))
        reverse = bool(recorded_options(model_path).get("reverse"))
        pairs = chosen(read_pairs(data, reverse), size)
        translate = SavedTranslator(model_path) if saved else \
            Translator(*load_seq2seq_run(model_path))
        hypotheses = translate([s for s, _ in pairs])
    else:
        pairs = chosen(read_pairs(data), size)
        hypotheses = answers([PROMPTS["en-zh"].format(text=s) for s, _ in pairs],
                             MAX_NEW_TOKENS["translate"])
    scores = translation_scores(hypotheses, [t for _, t in pairs])
    samples = [{"input": s, "reference": t, "output": h}
               for (s, t), h in list(zip(pairs, hypotheses))[:SAMPLES]]
    return {"bleu": scores["bleu"], "chrf": scores["chrf"], "pairs": scores["pairs"]}, samples


def row_math(data, size, answers):
    from tfllm.tasks.sft.data import read_conversations

    conversations = chosen(read_conversations(data), size)
    questions = [c[0]["content"] for c in conversations]
    references = [final_number(c[-1]["content"]) for c in conversations]
    replies = answers(questions, MAX_NEW_TOKENS["math"])
    hits = [final_number(r) == ref for r, ref in zip(replies, references)]
    samples = [{"input": q, "reference": ref, "output": r}
               for q, ref, r in list(zip(questions, references, replies))[:SAMPLES]]
    return {"exact_match": float(np.mean(hits)), "questions": len(hits)}, samples


def row_sentiment(data, size, answers, language):
    from tfllm.tasks.classify.data import read_examples
    from tfllm.tasks.sft.mixture import PROMPTS

    words = SENTIMENT_WORDS[language]
    examples = chosen([e for e in read_examples(data) if e.label in ("0", "1")], size)
    replies = answers([PROMPTS["sentiment/" + language].format(text=e.text)
                       for e in examples], MAX_NEW_TOKENS["sentiment"])
    y_true = [int(e.label) for e in examples]
    y_pred = [sentiment_answer(r, words) for r in replies]
    samples = [{"input": e.text, "reference": words[t], "output": r}
               for e, t, r in list(zip(examples, y_true, replies))[:SAMPLES]]
    return {"accuracy": float(np.mean(np.equal(y_true, y_pred))),
            "macro_f1": macro_f1(y_true, y_pred, [0, 1]),
            "answered": float(np.mean(np.not_equal(y_pred, -1))),
            "examples": len(examples)}, samples


def row_chat(model_path, data, size):
    from tfllm.tasks.sft.data import read_conversations
    from tfllm.tasks.sft.evaluate import evaluate_sft
    from tfllm.training.run_dir import load_run

    model, tokenizer, config = load_run(model_path)
    result = evaluate_sft(model, tokenizer, chosen(read_conversations(data), size),
                          context_length=config.context_length)
    samples = [{"input": s["prompt"], "reference": s["reference"], "output": s["reply"]}
               for s in result["samples"][:SAMPLES]]
    return {"assistant_loss": result["val_loss"], "end_rate": result["end_rate"],
            "conversations": result["replies"]}, samples


def clauses(text):
    """The punctuation-closed clauses of a text (a line of verse each)."""
    return CLAUSE.findall(text)


def cut_continuation(output, reference):
    """The first line of `output`, cut to as many clauses as `reference` has (the whole
    line when it has no clause)."""
    line = output.split("\n")[0].strip()
    return "".join(clauses(line)[:len(clauses(reference))]) or line


def row_continue(model, data, size, answers, language):
    """The continuation of each piece's first half (by `answers` to the instruction, or
    by the language model `model` itself), cut to as many clauses as the real second half
    has: chrF against it (sacrebleu), and the share whose clause lengths are the real
    ones (for verse: the form, 5 or 7 characters a line)."""
    import sacrebleu

    from tfllm.tasks.sft.mixture import PROMPTS, continuation_pairs, read_pieces

    pairs = chosen(continuation_pairs(read_pieces(data)), size)
    heads = [head for head, _ in pairs]
    if answers is not None:
        outputs = answers([PROMPTS["continue/" + language].format(text=h) for h in heads],
                          MAX_NEW_TOKENS["continue"])
    else:  # a piece whose first half leaves no room to continue gets the empty output
        new_tokens = min(MAX_NEW_TOKENS["continue"], model.context_length // 2)
        lengths = model.tokenize(heads).row_lengths().numpy() if heads else []
        fits = [n + 1 + new_tokens <= model.context_length for n in lengths]  # + EOS
        outputs = answered_where_fits(heads, fits, lambda fitting: [
            out for i in range(0, len(fitting), 16)
            for out in model.generate(fitting[i:i + 16], new_tokens)])
    references = [tail for _, tail in pairs]
    cut = [cut_continuation(out, tail) for out, tail in zip(outputs, references)]
    form = [[len(c) for c in clauses(o)] == [len(c) for c in clauses(r)]
            for o, r in zip(cut, references)]
    samples = [{"input": h, "reference": r, "output": o}
               for h, r, o in list(zip(heads, references, cut))[:SAMPLES]]
    return {"chrf": sacrebleu.corpus_chrf(cut, [references]).score,
            "form_match": float(np.mean(form)), "pieces": len(pairs)}, samples


# --- the card --------------------------------------------------------------------------


def applicable(row, task, path, has_chat):
    saved = os.path.exists(os.path.join(path, "saved_model.pb"))
    return {"text": task.name in ("lm", "sft"),
            "translate": has_chat or task.name == "seq2seq",
            "math": has_chat, "sentiment": has_chat,
            "chat": has_chat and not saved,
            "continue": task.name in ("lm", "sft")}[row]


def has_chat_markers(path):
    """Whether a GPT run or SavedModel holds the chat format (its tokenizer's markers)."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        with open(os.path.join(path, "assets.extra", "tfllm.json"), encoding="utf-8") as f:
            return "chat" in json.load(f).get("signatures", [])
    from tfllm.chat_format import ChatTokens
    from tfllm.tokenizers import load_tokenizer

    try:
        ChatTokens(load_tokenizer(os.path.join(path, "tokenizer")))
    except ValueError:
        return False
    return True


def parse_suite_data(specs, language="en"):
    """{row: file or dataset name} from ROW=SPEC strings over the defaults (Chinese
    sentiment from waimai_10k when the instructions are Chinese)."""
    data = dict(DEFAULT_DATA)
    if language == "zh":
        data["sentiment"] = "waimai_10k:test"
    for spec in specs:
        row, eq, value = spec.partition("=")
        if not eq or row not in ROWS or not value:
            raise ValueError(f"--suite-data {spec!r}: write ROW=FILE with ROW one of "
                             f"{', '.join(ROWS)}")
        data[row] = value
    return data


def chosen_rows(rows):
    """The rows named in a comma-separated string (every row when empty)."""
    names = [r.strip() for r in rows.split(",") if r.strip()] if rows else list(ROWS)
    unknown = [r for r in names if r not in ROWS]
    if unknown or not names:
        raise ValueError(f"--suite-rows {rows!r}: name rows among {', '.join(ROWS)}")
    return set(names)


def run_suite(model_paths, data_specs=(), size=100, out=".", language="en",
              log=print, rows=""):
    """Score every model on every row that applies (of `rows`, comma-separated; all when
    empty); write report.json, report.md and suite.png into `out`; returns the report."""
    selected = chosen_rows(rows)
    if size < 1:
        raise ValueError(f"--suite-size must be 1 or more, got {size}")
    if language not in SENTIMENT_WORDS:
        raise ValueError(f"--suite-language {language!r}: use en or zh")
    tasks = [task_of(path) for path in model_paths]  # refuse unknown paths first
    wanted = parse_suite_data(data_specs, language)
    needed = {row for row in ROWS for path, task in zip(model_paths, tasks)
              if row in selected and
              applicable(row, task, path, task.generates and has_chat_markers(path))}
    texts, text_source = (suite_texts(model_paths, tasks, wanted.get("text"))
                          if "text" in needed else (None, None))
    if texts is None and "text" in needed:
        needed.discard("text")
        log("text row left out: no language-model run to take held-out text from; give "
            "--suite-data text=FILE")
    data = {row: resolve_data(wanted[row], log=log) for row in needed if row != "text"}
    if texts is not None:
        data["text"] = text_source
    report = {"models": list(model_paths), "data": data, "size": size, "rows": {},
              "samples": {}}
    from tfllm.evaluation import load_for_evaluation

    for path, task in zip(model_paths, tasks):
        chat = task.generates and has_chat_markers(path)
        answers = ChatAnswers(path) if chat else None
        # The model as evaluate.py scores it, loaded once for the rows that read it.
        scored = (load_for_evaluation(path) if task.name in ("lm", "sft") and
                  needed & {"text", "continue"} else None)
        for row in ROWS:
            if row not in needed or not applicable(row, task, path, chat):
                continue
            log(f"{path}: {row}")
            if row == "text":
                metrics, samples = row_text(scored, texts)
            elif row == "translate":
                metrics, samples = row_translate(path, task, data[row], size, answers)
            elif row == "math":
                metrics, samples = row_math(data[row], size, answers)
            elif row == "sentiment":
                metrics, samples = row_sentiment(data[row], size, answers, language)
            elif row == "chat":
                metrics, samples = row_chat(path, data[row], size)
            else:
                # A chat model is asked to continue; a plain language model just does.
                metrics, samples = row_continue(scored, data[row], size,
                                                answers if task.chats else None, language)
            report["rows"].setdefault(row, {})[path] = metrics
            report["samples"].setdefault(row, {})[path] = samples
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "report.json"), report)
    write_atomic(os.path.join(out, "report.md"), format_markdown(report))
    plot_card(report, os.path.join(out, "suite.png"))
    return report


HEADLINES = [("text", "bits_per_byte", "bits per byte (lower is better)"),
             ("translate", "bleu", "translation BLEU"), ("translate", "chrf", "translation chrF"),
             ("math", "exact_match", "GSM8K exact match"),
             ("sentiment", "accuracy", "sentiment accuracy"),
             ("sentiment", "macro_f1", "sentiment macro-F1"),
             ("chat", "assistant_loss", "chat assistant-token loss"),
             ("chat", "end_rate", "chat end-of-turn rate"),
             ("continue", "chrf", "continuation chrF"),
             ("continue", "form_match", "continuation form match")]


def format_markdown(report):
    models = report["models"]
    lines = ["# Report card", "", "| metric | " + " | ".join(f"`{m}`" for m in models) + " |",
             "| --- |" + " --- |" * len(models)]
    for row, key, name in HEADLINES:
        if row not in report["rows"]:
            continue
        cells = []
        for m in models:
            value = report["rows"][row].get(m, {}).get(key)
            cells.append("n/a" if value is None else f"{value:.4g}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Data: " + ", ".join(f"{k}: `{v}`" for k, v in report["data"].items()
                                         if v) + f"; at most {report['size']} examples a row.",
              "", "## Samples", ""]
    for row, by_model in report["samples"].items():
        for m, samples in by_model.items():
            for s in samples:
                lines.append(f"- {row}, `{m}`: {s['input'][:80]!r} -> {s['output'][:80]!r} "
                             f"(reference {str(s['reference'])[:60]!r})")
    return "\n".join(lines) + "\n"


def plot_card(report, path):
    """A bar chart per headline metric, a bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(row, key, name) for row, key, name in HEADLINES if row in report["rows"]]
    fig, axes = plt.subplots(1, max(len(shown), 1), figsize=(3.2 * max(len(shown), 1), 3.2),
                             squeeze=False)
    names = [os.path.basename(os.path.normpath(m)) for m in report["models"]]
    for ax, (row, key, name) in zip(axes[0], shown):
        values = [report["rows"][row].get(m, {}).get(key, np.nan) for m in report["models"]]
        ax.bar(range(len(values)), values, color=[f"C{i}" for i in range(len(values))])
        ax.set_xticks(range(len(values)), names, rotation=30, ha="right")
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
