"""evaluate.py --suite: one report card with a column per model; a SavedModel's card equals
its run directory's; the metrics agree with their reference implementations."""

import json

import numpy as np
import pytest

from conftest import refused


def test_answers_are_read_as_people_write_them():
    from tfllm.suite import final_number, sentiment_answer

    assert final_number("She has 3 + 4 = 7 apples.\n#### 7") == "7"
    assert final_number("so the total is 1,250.") == "1250"
    assert final_number("no idea") is None
    assert sentiment_answer("Positive, mostly.", ["negative", "positive"]) == 1
    assert sentiment_answer("这是负面的", ["负面", "正面"]) == 0
    assert sentiment_answer("neutral", ["negative", "positive"]) == -1


def test_continuations_are_cut_to_the_reference_clauses_and_scored_by_sacrebleu():
    import sacrebleu

    from tfllm.suite import clauses

    assert clauses("欲窮千里目，更上一層樓。後") == ["欲窮千里目，", "更上一層樓。"]
    assert clauses("One, two. Three") == ["One,", " two."]
    # chrF is sacrebleu's own (the row calls corpus_chrf on the cut continuations).
    assert sacrebleu.corpus_chrf(["更上一層樓。"], [["更上一層樓。"]]).score == 100.0


def test_rows_score_a_seeded_choice_of_a_sorted_file_in_its_order():
    from tfllm.suite import chosen

    rows = [("1", i) for i in range(50)] + [("0", i) for i in range(50)]  # sorted by label
    picked = chosen(rows, 20)
    assert picked == chosen(rows, 20) and picked == sorted(picked, key=rows.index)
    assert {label for label, _ in picked} == {"0", "1"}  # not the first 20 (all "1")
    assert chosen(rows[:5], 20) == rows[:5]


def test_f1_agrees_with_scikit_learn():
    from sklearn.metrics import f1_score

    from tfllm.suite import macro_f1
    from tfllm.tasks.classify.report import classification_metrics

    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    assert classification_metrics(y_true, y_pred, 3)["macro_f1"] == pytest.approx(
        f1_score(y_true, y_pred, average="macro"), abs=1e-12)
    unparsed = np.where(rng.random(200) < 0.2, -1, y_pred % 2)
    assert macro_f1(y_true % 2, unparsed, [0, 1]) == pytest.approx(
        f1_score(y_true % 2, unparsed, labels=[0, 1], average="macro", zero_division=0))


@pytest.fixture
def suite_files(tmp_path, corpus_file):
    (tmp_path / "pairs.tsv").write_text("I like tea.\t我喜欢茶。\nIt is raining.\t下雨了。\n"
                                        "Where is the list?\t列表在哪里？\n", encoding="utf-8")
    (tmp_path / "math.jsonl").write_text("".join(json.dumps(
        {"prompt": f"What is {i} plus {i}?", "response": f"{i}+{i}=<<{i}+{i}={2 * i}>>"
         f"{2 * i}\n#### {2 * i}"}) + "\n" for i in range(3)), encoding="utf-8")
    (tmp_path / "reviews.tsv").write_text("1\ta fine film\n0\tdull and long\n1\tgreat fun\n",
                                          encoding="utf-8")
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(
        {"prompt": q, "response": a}) + "\n" for q, a in [("What is a list?", "A sequence."),
                                                          ("Hi", "Hello!")]), encoding="utf-8")
    (tmp_path / "poems.txt").write_text("白日依山盡，黃河入海流。欲窮千里目，更上一層樓。\n"
                                        "A list is a sequence. It holds items.\n",
                                        encoding="utf-8")
    return [f"translate={tmp_path / 'pairs.tsv'}", f"math={tmp_path / 'math.jsonl'}",
            f"sentiment={tmp_path / 'reviews.tsv'}", f"chat={tmp_path / 'chat.jsonl'}",
            f"continue={tmp_path / 'poems.txt'}", f"text={corpus_file}"]


def test_the_card_has_a_column_per_model_and_the_saved_model_matches_its_run(
        trained_run, suite_files, tmp_path, capsys):
    import evaluate

    _, run_dir, saved_model, _ = trained_run
    data = [flag for spec in suite_files for flag in ("--suite-data", spec)]
    out = tmp_path / "card"
    assert evaluate.main([str(run_dir), str(saved_model), "--suite", "--suite-size", "3",
                          *data, "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    run, saved = str(run_dir), str(saved_model)
    assert set(report["rows"]) == {"text", "translate", "math", "sentiment", "chat",
                                   "continue"}
    assert set(report["rows"]["chat"]) == {run}  # needs the weights: run directories only
    for row in ("text", "translate", "math", "sentiment", "continue"):
        assert set(report["rows"][row]) == {run, saved}
    assert report["rows"]["text"][run]["bits_per_byte"] == pytest.approx(
        report["rows"]["text"][saved]["bits_per_byte"], rel=1e-4)
    # A language model continues the first half of each piece as it is.
    assert report["rows"]["continue"][run]["pieces"] == 2
    assert [s["input"] for s in report["samples"]["continue"][run]] == [
        "白日依山盡，黃河入海流。", "A list is a sequence."]
    for row in ("translate", "math", "sentiment", "continue"):  # greedy: the same replies
        assert report["rows"][row][run] == report["rows"][row][saved], row
        assert report["samples"][row][run] == report["samples"][row][saved], row
    assert 0.0 <= report["rows"]["sentiment"][run]["accuracy"] <= 1.0
    assert 0.0 <= report["rows"]["chat"][run]["end_rate"] <= 1.0
    table = (out / "report.md").read_text(encoding="utf-8")
    assert f"| metric | `{run}` | `{saved}` |" in table and "| bits per byte" in table
    assert (out / "suite.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "report card:" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--suite-data", "poems=x.txt"], "--suite-data 'poems=x.txt': write ROW=FILE"),
    (["--suite-size", "0"], "--suite-size must be 1 or more"),
    (["--suite-rows", "text,poems"], "--suite-rows 'text,poems': name rows among"),
])
def test_bad_suite_flags_are_refused(trained_run, tmp_path, capsys, flags, message):
    import evaluate

    line = refused(evaluate.main, trained_run[1], "--suite", *flags, "--out", tmp_path / "o",
                   capsys=capsys)
    assert message in line
    assert not (tmp_path / "o").exists()
