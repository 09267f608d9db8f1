"""The real THUCNews headlines (../shared/data): every row reads, and the tokenizer machinery
(byte-fallback SentencePiece) carries Chinese exactly. Skipped, with the reason, where the
shared data is absent."""

import pytest

from conftest import ROOT

THUCNEWS = ROOT.parent / "shared" / "data" / "zh" / "thucnews_titles"


@pytest.fixture(scope="module")
def thucnews():
    if not (THUCNEWS / "train.tsv").exists():
        pytest.skip(f"shared data not found at {THUCNEWS}: the THUCNews check needs "
                    "../shared/data (see its README)")
    from tfllm.tasks.classify.data import read_examples

    return {split: read_examples(str(THUCNEWS / f"{split}.tsv"))
            for split in ("train", "valid", "test")}


def test_every_thucnews_row_reads_with_the_ten_labels(thucnews):
    from tfllm.tasks.classify.data import label_ids, label_vocabulary

    assert {k: len(v) for k, v in thucnews.items()} == {"train": 8998, "valid": 1002,
                                                        "test": 10000}
    labels = label_vocabulary(thucnews["train"])
    assert labels == [str(i) for i in range(10)]
    assert len(label_ids(thucnews["test"], labels)) == 10000


def test_sentencepiece_encodes_chinese_headlines_exactly(thucnews):
    import numpy as np
    import tensorflow as tf

    from tfllm.data.rows import encode_texts
    from tfllm.tokenizers import SentencePieceTokenizer

    tokenizer = SentencePieceTokenizer.train([e.text for e in thucnews["train"]],
                                             vocab_size=6000)
    texts = [e.text for e in thucnews["test"][:500]]
    ids = encode_texts(tokenizer, tf.constant(texts), max_length=64).numpy()
    assert (ids == tokenizer.eos_id).sum() == len(texts)  # one EOS each, nothing cut
    decoded = tokenizer.detokenize(ids)  # pad and EOS dropped
    assert [s.decode("utf-8") for s in decoded.numpy()] == texts
    # Characters never seen in training fall back to bytes, not to <unk>.
    rare = "龘靐齉"
    assert tokenizer.decode(tokenizer.encode(rare)) == rare
    assert tokenizer.unk_id not in tokenizer.encode(rare)
    # Headlines are short: mostly pieces longer than one character were learned.
    assert np.mean([len(tokenizer.encode(t)) for t in texts[:100]]) < \
        np.mean([len(t) for t in texts[:100]])
