"""What the classification tests share: a made-up Chinese headline dataset (three
topics, keywords mixed with filler, so a tiny model learns it in a few dozen steps) and
the flags of a tiny classifier. (Not a conftest.py: tests/conftest.py is imported as
`conftest` by other tests, and a second one would replace it.)"""

import random

TOPICS = {
    "体育": ["比赛", "球队", "冠军", "进球", "联赛", "教练", "球员", "决赛"],
    "财经": ["股市", "银行", "利率", "投资", "基金", "上涨", "央行", "债券"],
    "科技": ["手机", "芯片", "人工智能", "软件", "互联网", "发布", "电脑", "机器人"],
}
FILLER = ["今日", "消息", "记者报道", "最新", "昨天", "本周", "全国", "引发关注", "专家表示",
          "据悉", "正式", "首次", "我们", "新的", "一个", "重要"]
# Tiny-model flags: 2 layers, 64 wide; XLA off (compiling costs more than it saves here).
CLASSIFY_FLAGS = ["--vocab-size", "400", "--num-layers", "2", "--embed-dim", "64",
                  "--num-heads", "2", "--steps", "40", "--batch-size", "16", "--lr", "3e-3",
                  "--warmup-steps", "5", "--eval-every", "20", "--log-every", "20",
                  "--checkpoint-every", "20", "--dropout", "0", "--no-xla"]


def headline(rng, label):
    words = rng.sample(FILLER, 3) + rng.sample(TOPICS[label], 2)
    rng.shuffle(words)
    return "".join(words) + rng.choice(["", "！", "？", "。"])


def write_dataset(directory, sizes=(("train", 150), ("valid", 45), ("test", 45)), seed=0):
    rng = random.Random(seed)
    paths = {}
    for split, n in sizes:
        rows = []
        for i in range(n):
            label = list(TOPICS)[i % len(TOPICS)]
            rows.append(f"{label}\t{headline(rng, label)}")
        rng.shuffle(rows)
        paths[split] = directory / f"{split}.tsv"
        paths[split].write_text("\n".join(rows) + "\n", encoding="utf-8")
    return paths
