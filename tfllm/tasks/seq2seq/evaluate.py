"""evaluate.py for a seq2seq model (run directory or SavedModel): greedy translations of
held-out pairs, their BLEU and chrF (sacrebleu), the token loss where the weights are at
hand, and samples, in report.json."""

import os

import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops a SavedModel runs)

from tfllm.evaluation import write_report
from tfllm.quiet import quiet_stderr
from tfllm.tasks.seq2seq.data import read_pairs, split_pairs
from tfllm.tasks.seq2seq.metrics import translation_scores
from tfllm.tasks.seq2seq.model import Translator, load_seq2seq_run, sources_and_references
from tfllm.training.run_dir import recorded_options

SAMPLES = 5


class SavedTranslator:
    """A seq2seq SavedModel, through its `serving_default` signature."""

    def __init__(self, path):
        with quiet_stderr():  # TF Text's SentencePiece logs a line as the model loads
            self._serve = tf.saved_model.load(path).signatures["serving_default"]

    def __call__(self, texts, batch_size=64):
        out = []
        for i in range(0, len(texts), batch_size):
            chunk = self._serve(sources=tf.constant(texts[i:i + batch_size]))["targets"]
            out += [s.decode("utf-8", errors="replace") for s in chunk.numpy()]
        return out


def heldout_pairs(options, data=""):
    """(pairs, where they came from): `data` whole, else the run's validation pairs."""
    reverse = bool(options.get("reverse"))
    if data:
        return read_pairs(data, reverse), data
    if options.get("val"):
        return read_pairs(options["val"], reverse), options["val"]
    if not options.get("data"):
        raise ValueError("no held-out pairs to translate: pass --data FILE (source<TAB>target)")
    fraction = options.get("val_fraction", 0.1)
    pairs = split_pairs(read_pairs(options["data"], reverse), fraction,
                        options.get("seed", 0))[1]
    return pairs, f"{fraction:.0%} of {options['data']} held out"


def score_translator(translator, pairs, limit=None):
    """Scores and samples of `translator` on the first `limit` pairs."""
    sources, references = sources_and_references(pairs, limit)
    hypotheses = translator(sources)
    scores = translation_scores(hypotheses, references)
    samples = [{"source": s, "reference": r, "translation": h}
               for s, r, h in list(zip(sources, references, hypotheses))[:SAMPLES]]
    return scores, samples


def evaluate(args):
    """evaluate.py's work on a seq2seq model: translate, score, print, write report.json."""
    if args.prompt:
        raise ValueError(f"'{args.model}' is a translator (task seq2seq): --prompt applies "
                         "to language models; pass --data pairs.tsv to translate")
    saved = os.path.exists(os.path.join(args.model, "saved_model.pb"))
    options = recorded_options(args.model)
    translator = (SavedTranslator(args.model) if saved else
                  Translator(*load_seq2seq_run(args.model)))
    pairs, source = heldout_pairs(options, args.data)
    scores, samples = score_translator(translator, pairs)
    report = {"model": args.model, "task": "seq2seq", "data": source, "metrics": scores,
              "samples": samples}
    path = write_report(report, args.out or ("." if saved else args.model))
    print(f"model         {args.model}\npairs         {source} ({scores['pairs']})\n"
          f"BLEU          {scores['bleu']:.2f} (tokenize {scores['bleu_tokenize']})\n"
          f"chrF          {scores['chrf']:.2f}")
    for sample in samples:
        print(f"--- {sample['source']!r} -> {sample['translation']!r} "
              f"(reference {sample['reference']!r})")
    print(f"report: {path}")
