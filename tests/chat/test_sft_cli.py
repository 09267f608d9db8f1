"""train.py --task sft end to end, through its main(argv): a tiny pretraining run fine-tuned on
made-up conversations (fully and with LoRA), its report, resume, export and load_run;
bad input as one line, exit code 2 and nothing written."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import refused, run_main
from test_sft_data import make_conversations, write_jsonl

SFT_FLAGS = ["--batch-size", "8", "--warmup-steps", "5", "--eval-every", "20",
             "--checkpoint-every", "20"]


def listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_sft_learns_the_replies_and_writes_a_run_directory(trained_run, tmp_path):
    from tfllm.tasks.sft.evaluate import compare_runs

    base_run = trained_run[1]
    data = write_jsonl(tmp_path / "chat.jsonl", make_conversations(48))
    val = write_jsonl(tmp_path / "val.jsonl", make_conversations(12, seed=1))
    # The export of an SFT run is checked by the LoRA test below.
    result = run_main("train.py", "--task", "sft", "--init", base_run, "--data", data,
                      "--val", val, "--steps", "30", "--lr", "3e-3", "--no-export", *SFT_FLAGS,
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "t-sft"  # the default name: <init>-sft
    for name in ("config.json", "train_config.json", "tokenizer/tokenizer.json",
                 "checkpoints/checkpoint", "metrics.csv", "loss.png", "samples.txt",
                 "sft_report.json"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    report = json.loads((run_dir / "sft_report.json").read_text(encoding="utf-8"))
    base, tuned = report["base"], report["sft"]
    assert tuned["val_loss"] < base["val_loss"] - 1.0, report
    assert tuned["val_tokens"] == base["val_tokens"] > 0
    assert 0.0 <= base["end_rate"] <= 1.0 and 0.0 <= tuned["end_rate"] <= 1.0
    assert tuned["replies"] + tuned["prompts_too_long"] == 12
    assert "assistant-token validation loss: base" in result.stdout
    assert "### prompt:" in (run_dir / "samples.txt").read_text(encoding="utf-8")

    # load_run gives the fine-tuned model: compare_runs (the report's numbers, for any
    # two runs) finds the same losses and end-of-turn rates.
    again = compare_runs(str(base_run), str(run_dir), str(val))
    for key in ("base", "sft"):
        assert abs(again[key]["val_loss"] - report[key]["val_loss"]) < 1e-4
        assert again[key]["end_rate"] == report[key]["end_rate"]

    # evaluate.py asks the registry: an SFT run is scored on its validation conversations
    # (not its JSONL read as prose), with the report's numbers.
    import evaluate

    assert evaluate.main([str(run_dir), "--out", str(tmp_path / "eval")]) == 0
    card = json.loads((tmp_path / "eval" / "report.json").read_text(encoding="utf-8"))
    assert card["task"] == "sft" and card["data"] == str(val)
    assert abs(card["metrics"]["val_loss"] - tuned["val_loss"]) < 1e-4
    assert card["metrics"]["end_rate"] == tuned["end_rate"]


def test_lora_sft_resumes_and_exports_the_merged_model(trained_run, tmp_path):
    from tfllm.chat_format import render_ids
    from tfllm.lora import enable_lora
    from tfllm.models import build_gpt
    from tfllm.training.checkpoints import restore_latest
    from tfllm.training.run_dir import load_run

    base_run = trained_run[1]
    data = write_jsonl(tmp_path / "chat.jsonl", make_conversations(48))
    flags = ["--task", "sft", "--init", base_run, "--data", data, "--lora-rank", "2",
             "--lr", "1e-2", "--name", "lora", *SFT_FLAGS]
    first = run_main("train.py", *flags, "--steps", "20", "--no-export", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "training 4,096 of" in first.stdout  # 2 blocks x 4 projections x (a + b)
    second = run_main("train.py", *flags, "--steps", "40", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "at step 20" in second.stdout and "resumed from" in second.stdout

    run_dir = tmp_path / "runs" / "lora"
    report = json.loads((run_dir / "sft_report.json").read_text(encoding="utf-8"))
    assert report["steps"] == 40 and report["lora_rank"] == 2
    assert report["validation"].startswith("10% of --data")  # no --val: held out
    assert report["sft"]["val_loss"] < report["base"]["val_loss"] - 0.2, report

    # The adapted model as trained: the base kernels and the adapters beside them.
    merged, tokenizer, config = load_run(str(run_dir))
    adapted = build_gpt(config)
    enable_lora(adapted, 2)
    restore_latest(tf.train.Checkpoint(model=adapted), str(run_dir / "checkpoints"),
                   partial=True)
    assert not any("lora" in v.path for v in merged.weights)
    messages = [{"role": "user", "content": "What colour is the sky?"},
                {"role": "assistant", "content": "The sky is blue."}]
    ids = render_ids(tokenizer, messages)[0][None]
    expected = np.asarray(adapted(ids))
    np.testing.assert_allclose(np.asarray(merged(ids)), expected, atol=1e-5, rtol=0)
    assert "exported SavedModel" in second.stdout
    served = tf.saved_model.load(str(tmp_path / "saved_models" / "lora" / "1"))
    logits = served.signatures["logits"](token_ids=tf.constant(ids))["logits"].numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)
    base = np.asarray(load_run(str(base_run))[0](ids))
    assert np.abs(base - expected).max() > 1e-3  # the adapters changed the model


@pytest.mark.parametrize("case", ["bad_json", "unknown_role", "no_assistant",
                                  "other_tokenizer", "not_a_run"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(trained_run, tmp_path, monkeypatch,
                                                        capsys, case):
    import train
    from tfllm.tokenizers import CharTokenizer

    init = trained_run[1]
    good = [json.dumps(r) for r in make_conversations(6)]
    lines = list(good)
    if case == "bad_json":
        lines[3] = '{"messages": [{"role": "user"'
    elif case == "unknown_role":
        lines[3] = json.dumps({"messages": [{"role": "bot", "content": "hi"}]})
    elif case == "no_assistant":
        lines[3] = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    elif case == "other_tokenizer":  # an SFT run to resume, with another tokenizer
        existing = tmp_path / "runs" / "t-sft"
        CharTokenizer.from_texts(["some other text"]).save(existing / "tokenizer")
        (existing / "train_config.json").write_text(json.dumps({"task": "sft"}))
    else:
        init = tmp_path / "notarun"
        init.mkdir()
        (init / "notes.txt").write_text("not a run")
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = listing(tmp_path)
    monkeypatch.chdir(tmp_path)
    message = refused(train.main, "--task", "sft", "--init", init, "--data", data,
                      "--steps", "2", capsys=capsys)
    expected = {"bad_json": "chat.jsonl line 4: not valid JSON",
                "unknown_role": "chat.jsonl line 4: message 0 has unknown role 'bot'",
                "no_assistant": "chat.jsonl line 4: the conversation has no assistant turn",
                "other_tokenizer": "whose tokenizer differs from --init",
                "not_a_run": "is not a train.py run directory"}[case]
    assert expected in message
    assert listing(tmp_path) == before
