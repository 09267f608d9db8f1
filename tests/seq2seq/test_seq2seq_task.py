"""train.py --task seq2seq end to end on a small made-up translation (English number
words -> Chinese numerals): it learns, scores its translations with sacrebleu, exports a
SavedModel that a fresh process with only TensorFlow + TF Text runs to the same
translations, and evaluate.py gives the same card for the run and the SavedModel. Bad
input: one line, exit 2, nothing written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import refused

pytest.importorskip("sacrebleu", reason="sacrebleu (requirements.txt) scores translations")

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NUMERALS = "〇一二三四五六七八九"
FLAGS = ["--task", "seq2seq", "--tokenizer", "char", "--num-layers", "1", "--embed-dim", "64",
         "--num-heads", "2", "--context-length", "32", "--dropout", "0", "--steps", "300",
         "--batch-size", "32", "--lr", "1e-3", "--warmup-steps", "20", "--eval-every", "100",
         "--checkpoint-every", "100", "--eval-pairs", "100"]


def number_pairs(count, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        digits = rng.integers(0, 10, rng.integers(2, 6))
        rows.append((" ".join(WORDS[d] for d in digits), "".join(NUMERALS[d] for d in digits)))
    return rows


def write_pairs(path, pairs):
    path.write_text("".join(f"{s}\t{t}\tCC-BY attribution\n" for s, t in pairs),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def seq2seq_run(tmp_path_factory):
    import train

    work = tmp_path_factory.mktemp("seq2seq")
    data = write_pairs(work / "pairs.tsv", number_pairs(1200, seed=0))
    val = write_pairs(work / "valid.tsv", number_pairs(100, seed=1))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        assert train.main([*FLAGS, "--data", str(data), "--val", str(val), "--name", "num"]) == 0
    finally:
        os.chdir(cwd)
    return work, work / "runs" / "num", work / "saved_models" / "num" / "1", val


def test_pairs_files_are_read_and_encoded_for_the_decoder(tmp_path):
    from tfllm.tasks.seq2seq.data import encode_pairs, read_pairs
    from tfllm.tokenizers import CharTokenizer

    path = write_pairs(tmp_path / "p.tsv", [("one two", "一二"), ("nine", "九")])
    assert read_pairs(path) == [("one two", "一二"), ("nine", "九")]
    assert read_pairs(path, reverse=True)[1] == ("九", "nine")
    tokenizer = CharTokenizer.from_texts(["one two nine", "一二九"])
    (sources, inputs), targets = encode_pairs(tokenizer, read_pairs(path), seq_len=6)
    eos, pad = tokenizer.eos_id, tokenizer.pad_id
    expected = tokenizer.encode("一二")
    assert targets[0].tolist() == expected + [eos] + [pad] * (5 - len(expected))
    # The decoder reads the start token and the target, and predicts one step ahead.
    assert inputs[0].tolist() == [eos] + expected + [pad] * (5 - len(expected))
    assert sources[1].tolist()[:2] == tokenizer.encode("nine")[:2]
    assert sources.shape == inputs.shape == targets.shape == (2, 6)


@pytest.mark.parametrize("rows, message", [
    ("one\t一\ntwo 二\n", "p.tsv:2: no tab in this row: write each row as source<TAB>target"),
    ("one\t一\n\t二\n", "p.tsv:2: the source is empty"),
    ("one\t \n", "p.tsv:1: the target is empty"),
])
def test_bad_pair_files_are_refused_in_one_line(tmp_path, monkeypatch, capsys, rows, message):
    import train

    (tmp_path / "p.tsv").write_text(rows, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    line = refused(train.main, "--task", "seq2seq", "--data", "p.tsv", capsys=capsys)
    assert message in line
    assert sorted(os.listdir(tmp_path)) == ["p.tsv"]


def test_seq2seq_flags_belong_to_their_task(tmp_path, monkeypatch, capsys):
    import train

    monkeypatch.chdir(tmp_path)
    assert refused(train.main, "--reverse", capsys=capsys) == \
        "error: --reverse applies to --task seq2seq only: drop it"
    assert "drop --init" in refused(train.main, "--task", "seq2seq", "--data", "x.tsv",
                                    "--init", "runs/x", capsys=capsys)


def test_scores_agree_with_sacrebleu_itself():
    import sacrebleu

    from tfllm.tasks.seq2seq.metrics import translation_scores

    hypotheses, references = ["我 爱 你", "今天天气很好"], ["我爱你", "今天天气不错"]
    scores = translation_scores(hypotheses, references)
    assert scores["bleu_tokenize"] == "zh"
    assert scores["bleu"] == sacrebleu.corpus_bleu(hypotheses, [references], tokenize="zh").score
    assert scores["chrf"] == sacrebleu.corpus_chrf(hypotheses, [references]).score
    english = translation_scores(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert english["bleu_tokenize"] == "13a" and english["bleu"] == pytest.approx(100.0)


def test_the_translator_learns_and_reports(seq2seq_run):
    work, run_dir, saved_model, _ = seq2seq_run
    report = json.loads((run_dir / "seq2seq_report.json").read_text(encoding="utf-8"))
    assert report["scores"]["bleu_tokenize"] == "zh" and report["scores"]["pairs"] == 100
    assert report["scores"]["chrf"] > 80, report  # a mapping learnt, not memorised
    assert report["val_loss"] < 0.5
    assert "### source:" in (run_dir / "samples.txt").read_text(encoding="utf-8")
    assert json.loads((run_dir / "train_config.json").read_text())["task"] == "seq2seq"
    metadata = json.loads((saved_model / "assets.extra" / "tfllm.json").read_text())
    assert metadata["task"] == "seq2seq" and metadata["signatures"] == ["serving_default"]


# Only what pip installed (cwd /, no PYTHONPATH): the SavedModel alone, signature and
# session loader, and the op types of every function.
FRESH = r"""
import json, sys
import tensorflow as tf, tensorflow_text
from tensorflow.core.protobuf import saved_model_pb2
path, sources = sys.argv[1], json.loads(sys.argv[2])
out = {"tfllm": sorted(m for m in sys.modules if m.startswith("tfllm"))}
serve = tf.saved_model.load(path).signatures["serving_default"]
out["signature"] = [s.decode() for s in serve(sources=tf.constant(sources))["targets"].numpy()]
tf1 = tf.compat.v1
with tf1.Session(graph=tf.Graph()) as sess:
    sig = tf1.saved_model.loader.load(sess, ["serve"], path).signature_def["serving_default"]
    got = sess.run(sig.outputs["targets"].name, {sig.inputs["sources"].name: sources})
    out["session"] = [s.decode() for s in got]
proto = saved_model_pb2.SavedModel.FromString(open(path + "/saved_model.pb", "rb").read())
out["xla"] = [n.name for g in proto.meta_graphs for f in g.graph_def.library.function
              for n in f.node_def if any(k in n.attr and n.attr[k].b
                                         for k in ("_XlaMustCompile", "_XlaCompile"))]
out["xla_ops"] = sorted({n.op for g in proto.meta_graphs for f in g.graph_def.library.function
                         for n in f.node_def if "Xla" in n.op})
print(json.dumps(out, ensure_ascii=False))
"""


def test_the_saved_model_translates_as_the_run_in_a_fresh_process(seq2seq_run):
    from tfllm.tasks.seq2seq.model import Translator, load_seq2seq_run

    _, run_dir, saved_model, _ = seq2seq_run
    sources = ["three one four", "nine two", "five five five five"]
    expected = Translator(*load_seq2seq_run(str(run_dir)))(sources)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", FRESH, str(saved_model), json.dumps(sources)],
                            capture_output=True, text=True, env=env, cwd="/", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["tfllm"] == [] and out["xla"] == [] and out["xla_ops"] == []
    assert out["signature"] == out["session"] == expected
    assert expected[0] == "三一四"


def test_evaluate_gives_the_same_card_for_the_run_and_its_saved_model(seq2seq_run, tmp_path):
    import evaluate

    _, run_dir, saved_model, val = seq2seq_run
    cards = []
    for target in (run_dir, saved_model):
        out = tmp_path / target.name
        assert evaluate.main([str(target), "--data", str(val), "--out", str(out)]) == 0
        cards.append(json.loads((out / "report.json").read_text(encoding="utf-8")))
    assert cards[0]["metrics"] == cards[1]["metrics"]
    assert cards[0]["samples"] == cards[1]["samples"]
    assert cards[0]["metrics"]["pairs"] == 100


def test_chat_on_a_translator_is_refused(seq2seq_run, capsys):
    from tfllm import chat

    _, run_dir, _, _ = seq2seq_run
    assert "it is a translator (encoder-decoder) (task seq2seq)" in refused(
        chat.main, run_dir, "--prompt", "hi", capsys=capsys)
