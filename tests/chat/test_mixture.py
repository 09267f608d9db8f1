"""Instruction mixtures: translation pairs, math answers, labelled sentiment and chat
turned into conversations of the one chat format and mixed by weight."""

import json
from collections import Counter

import pytest

from conftest import refused


@pytest.fixture
def sources(tmp_path):
    (tmp_path / "pairs.tsv").write_text(
        "".join(f"sentence {i}\t句子{i}\tattribution\n" for i in range(10)), encoding="utf-8")
    (tmp_path / "math.jsonl").write_text("".join(json.dumps(
        {"prompt": f"What is {i} + 1?", "response": f"{i} + 1 = <<{i}+1={i + 1}>>{i + 1}\n"
         f"#### {i + 1}"}) + "\n" for i in range(4)), encoding="utf-8")
    (tmp_path / "reviews.tsv").write_text("1\t很好吃\n0\t太慢了\n1\t不错\n", encoding="utf-8")
    (tmp_path / "poems.txt").write_text(
        "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。\n\n單句而已。\n"
        "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。空山新雨後，天氣晚來秋。明月松間照，清泉石上流。\n",
        encoding="utf-8")
    (tmp_path / "chat.jsonl").write_text(json.dumps(
        {"messages": [{"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello!"}]}) + "\n", encoding="utf-8")
    return tmp_path


def write_mixture(folder, sources, **extra):
    path = folder / "mix.json"
    path.write_text(json.dumps({"sources": sources, **extra}, ensure_ascii=False),
                    encoding="utf-8")
    return path


def kind_of(conversation):
    prompt = conversation[0]["content"]
    return ("en-zh" if prompt.startswith("Translate") else
            "zh-en" if prompt.startswith("把这句话") else
            "sentiment" if prompt.startswith("这段文字") else
            "math" if prompt.startswith("What is") else
            "continue" if prompt.startswith("续写") else "chat")


def test_sources_become_conversations_mixed_by_weight(sources):
    from tfllm.tasks.sft.mixture import load_conversations

    path = write_mixture(sources, [
        {"data": "pairs.tsv", "kind": "translate", "direction": "en-zh", "weight": 2},
        {"data": "pairs.tsv", "kind": "translate", "direction": "zh-en"},
        {"data": "math.jsonl", "kind": "math"},
        {"data": "reviews.tsv", "kind": "sentiment", "labels": ["负面", "正面"],
         "language": "zh"},
        {"data": "chat.jsonl", "kind": "chat", "weight": 1},
        {"data": "poems.txt", "kind": "continue", "language": "zh"}], examples=70, seed=3)
    mixed = load_conversations(str(path))
    assert Counter(map(kind_of, mixed)) == {"en-zh": 20, "zh-en": 10, "math": 10,
                                            "sentiment": 10, "chat": 10, "continue": 10}
    by_kind = {kind_of(c): c for c in mixed}
    assert by_kind["en-zh"][0]["content"].endswith("\nsentence " +
                                                   by_kind["en-zh"][1]["content"][2:])
    assert by_kind["zh-en"][1]["content"].startswith("sentence ")
    assert "<<" not in by_kind["math"][1]["content"] and "####" in by_kind["math"][1]["content"]
    assert by_kind["sentiment"][1]["content"] in ("正面", "负面")
    # A piece's first half of sentences asks for the rest; a one-sentence piece is left out.
    assert {tuple(m["content"] for m in c) for c in mixed if kind_of(c) == "continue"} == {
        ("续写下文：\n白日依山盡，黃河入海流。", "欲窮千里目，更上一層樓。"),
        ("续写下文：\n春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。",
         "空山新雨後，天氣晚來秋。明月松間照，清泉石上流。")}
    assert all(c[-1]["role"] == "assistant" for c in mixed)
    assert load_conversations(str(path)) == mixed  # seeded
    # Without "examples": every row once (weights still scale the shares).
    once = write_mixture(sources, [{"data": "reviews.tsv", "kind": "sentiment",
                                    "labels": {"0": "neg", "1": "pos"}}])
    assert sorted(c[1]["content"] for c in load_conversations(str(once))) == \
        ["neg", "pos", "pos"]


@pytest.mark.parametrize("source, message", [
    ({"data": "pairs.tsv", "kind": "poems"}, "unknown kind 'poems'"),
    ({"data": "reviews.tsv", "kind": "sentiment"}, 'needs "labels"'),
    ({"data": "reviews.tsv", "kind": "sentiment", "labels": ["neg"]}, "label '1' has no word"),
    ({"data": "pairs.tsv", "kind": "translate", "direction": "fr-en"}, "direction 'fr-en'"),
    ({"data": "pairs.tsv", "kind": "translate", "weight": 0}, "every weight must be positive"),
    ({"data": "pairs.tsv", "kind": "continue", "language": "fr"}, "language 'fr'"),
])
def test_bad_mixtures_are_refused_in_one_line(sources, monkeypatch, capsys, source, message):
    import train

    path = write_mixture(sources, [source])
    monkeypatch.chdir(sources)
    line = refused(train.main, "--task", "sft", "--init", "runs/none", "--data", path,
                   capsys=capsys)
    assert message in line
    assert not (sources / "runs").exists()
