"""Turn downloaded originals into the normalized files (the cache's layout).

Every function here takes `{source name: bytes}` and returns `{file name: bytes}`, in memory
and without side effects, so the caller can check every result before it writes anything.
The rules: UTF-8 with `\\n` line endings and no BOM;
classification rows are `label<TAB>text` without a header; chat rows are JSONL; where the
source has no split of its own, an md5 bucket of a key picks the split, so a row's split
depends on its text only, never on file order.
"""

import csv
import hashlib
import io
import json
import re


def bucket(key):
    """The split bucket of a key: md5 of its UTF-8 bytes, modulo 10.

    Args:
        key: the text that decides the split (usually the cleaned text field).

    Returns:
        An int in 0..9.
    """
    return int(hashlib.md5(key.encode("utf-8")).hexdigest(), 16) % 10


def split3(key):
    """'test' for bucket 0, 'valid' for bucket 1, else 'train' (sources with no split)."""
    b = bucket(key)
    return "test" if b == 0 else "valid" if b == 1 else "train"


def split2(key):
    """'valid' for bucket 1, else 'train' (sources with an official test split only)."""
    return "valid" if bucket(key) == 1 else "train"


def clean(text):
    """One line of text: runs of tabs, CR and LF become one space, ends stripped."""
    return re.sub(r"[\t\r\n]+", " ", text).strip()


def _text(data):
    """Bytes as text, without a UTF-8 BOM and with `\\n` line endings."""
    return data.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n")


def _split(text):
    """The lines of a text, split on `\n` only (str.splitlines also splits on U+2028 and
    other separators that may sit inside a JSON string); a last empty line is dropped."""
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def _lines(rows):
    """Rows joined as one UTF-8 file, each row ending in a newline."""
    return "".join(row + "\n" for row in rows).encode("utf-8")


def _jsonl(records):
    """Records as JSONL bytes, non-ASCII kept as is (json.dumps' default separators)."""
    return _lines(json.dumps(r, ensure_ascii=False) for r in records)


def _by_split(rows, names):
    """`{name: bytes}` from (split, row) pairs; `names` maps a split to its file name."""
    out = {split: [] for split in names}
    for split, row in rows:
        out[split].append(row)
    return {names[split]: _lines(rows) for split, rows in out.items()}


TSV3 = {"train": "train.tsv", "valid": "valid.tsv", "test": "test.tsv"}


def copy(*names):
    """A preparer that keeps the sources `names` byte for byte."""
    def prepare(sources):
        return {name: sources[name] for name in names}
    return prepare


def normalize_text(name):
    """A preparer for one plain-text source: the BOM dropped, CRLF made LF."""
    def prepare(sources):
        return {name: _text(sources[name]).encode("utf-8")}
    return prepare


def space_labelled(prefix):
    """SST from harvardnlp: `label<SPACE>sentence` files `{prefix}.{train,dev,test}`."""
    def prepare(sources):
        out = {}
        for split, original in (("train", "train"), ("valid", "dev"), ("test", "test")):
            rows = []
            for line in _split(_text(sources[f"{prefix}.{original}"])):
                label, sentence = line.split(" ", 1)
                rows.append(f"{label}\t{clean(sentence)}")
            out[TSV3[split]] = _lines(rows)
        return out
    return prepare


def trec(sources):
    """TREC: `COARSE:fine question` lines; the train set split 2-way on the question.

    One byte of TREC.train is not UTF-8 (`sister\\xF0city`); it becomes a space.
    """
    def rows(name):
        data = sources[name].replace(b"sister\xf0city", b"sister city")
        for line in _split(_text(data)):
            fine, question = line.split(" ", 1)
            yield fine, clean(question)

    out = {}
    train = [(split2(q), (fine, q)) for fine, q in rows("TREC.train")]
    test = [("test", (fine, q)) for fine, q in rows("TREC.test")]
    for fine_labels, suffix in ((False, ""), (True, "_fine")):
        labelled = [(split, f"{fine if fine_labels else fine.split(':')[0]}\t{q}")
                    for split, (fine, q) in train + test]
        out.update(_by_split(labelled, {s: f"{s}{suffix}.tsv" for s in TSV3}))
    return out


def ag_news(sources):
    """AG News' official test CSV (`class,title,description`), split 3-way on the text.

    text = title + " " + description (as HF `ag_news`); labels are the class index minus 1.
    """
    rows = []
    for label, title, description in csv.reader(io.StringIO(_text(sources["test.csv"]))):
        text = clean(f"{title} {description}")
        rows.append((split3(text), f"{int(label) - 1}\t{text}"))
    return {**_by_split(rows, TSV3), "labels.txt": sources["classes.txt"]}


def thucnews(sources):
    """THUCNews titles (`title<TAB>label_id`): dev split 2-way into train/valid, test kept."""
    def rows(name, split):
        for line in _split(_text(sources[name])):
            title, label = line.rsplit("\t", 1)
            title = clean(title)
            yield split(title), f"{label}\t{title}"

    out = _by_split([*rows("dev.txt", split2), *rows("test.txt", lambda _: "test")], TSV3)
    out["labels.txt"] = _lines(_split(_text(sources["class.txt"])))
    return out


def csv_reviews(name):
    """SophonPlus review CSVs (`label,review` header): empty reviews dropped, split 3-way."""
    def prepare(sources):
        rows = []
        for record in csv.DictReader(io.StringIO(_text(sources[name]))):
            review = clean(record["review"])
            if review:
                rows.append((split3(review), f"{record['label']}\t{review}"))
        return _by_split(rows, TSV3)
    return prepare


PERSONAS = ("the_friend", "the_professional", "the_comic")


def personality_chat(sources):
    """Personality Chat TSVs (`Question Answer Source Metadata`) -> prompt/response/persona
    JSONL, split 2-way on persona + question."""
    rows = []
    for persona in PERSONAS:
        text = _text(sources[f"qna_chitchat_{persona}.tsv"])
        for record in csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE):
            prompt, response = clean(record["Question"]), clean(record["Answer"])
            row = json.dumps({"prompt": prompt, "response": response, "persona": persona},
                             ensure_ascii=False)
            rows.append((split2(persona + prompt), row))
    return _by_split(rows, {"train": "train.jsonl", "valid": "valid.jsonl"})


def self_instruct(sources):
    """Self-Instruct's human-written tasks: one prompt/response row per instance."""
    records = []
    for name, tag in (("seed_tasks.jsonl", "seed_tasks"),
                      ("user_oriented_instructions.jsonl", "user_oriented")):
        for line in _split(_text(sources[name])):
            task = json.loads(line)
            for instance in task["instances"]:
                prompt = task["instruction"]
                if instance["input"]:
                    prompt += "\n\n" + instance["input"]
                records.append({"prompt": prompt, "response": instance["output"],
                                "source": f"{tag}:{task['id']}"})
    return {"human_written.jsonl": _jsonl(records)}


def tatoeba_pairs(sources):
    """Tatoeba/Anki `English<TAB>Chinese<TAB>attribution` -> `english<TAB>chinese`,
    split 3-way on the English sentence so that all its translations share a split."""
    rows = []
    for line in _split(_text(sources["cmn.txt"])):
        if line:
            english, chinese = (clean(field) for field in line.split("\t")[:2])
            rows.append((split3(english), f"{english}\t{chinese}"))
    return _by_split(rows, TSV3)


def gsm8k(sources):
    """GSM8K `{"question", "answer"}` JSONL -> `{"prompt", "response"}`, both verbatim;
    the official train split 2-way on the question, the official test kept."""
    def rows(name, split):
        for line in _split(_text(sources[name])):
            record = json.loads(line)
            row = {"prompt": record["question"], "response": record["answer"]}
            yield split(record["question"]), json.dumps(row, ensure_ascii=False)

    rows = [*rows("train.jsonl", split2), *rows("test.jsonl", lambda _: "test")]
    return _by_split(rows, {s: f"{s}.jsonl" for s in TSV3})


def chatterbot(language, categories):
    """chatterbot-corpus YAML files (`conversations: [[turn, ...], ...]`) of one language ->
    `{"messages": [...], "category": file stem}` JSONL; the turns alternate user/assistant."""
    def prepare(sources):
        try:
            import yaml
        except ImportError as e:
            raise ValueError("preparing chatterbot needs PyYAML: pip install pyyaml") from e
        records = []
        for category in categories:
            try:
                corpus = yaml.safe_load(sources[f"{language}/{category}.yml"].decode("utf-8"))
            except yaml.YAMLError as e:
                raise ValueError(f"{language}/{category}.yml is not valid YAML: {e}") from e
            for turns in corpus.get("conversations") or []:
                turns = [str(turn).strip() for turn in turns]
                messages = [{"role": "assistant" if i % 2 else "user", "content": turn}
                            for i, turn in enumerate(turns)]
                records.append({"messages": messages, "category": category})
        return {f"chatterbot_{'en' if language == 'english' else 'zh'}.jsonl": _jsonl(records)}
    return prepare


def poetry_300(sources):
    """唐诗三百首 and 宋词三百首 from chinese-poetry: one JSON record per poem, its
    paragraphs joined with the punctuation kept."""
    tang = []
    for group in json.loads(sources["tangshisanbaishou.json"])["content"]:
        for poem in group["content"]:
            tang.append({"form": group["type"], "title": poem["chapter"],
                         "subtitle": poem["subchapter"], "author": poem["author"],
                         "text": "".join(poem["paragraphs"])})
    song = [{"tune": ci["rhythmic"], "author": ci["author"], "text": "".join(ci["paragraphs"])}
            for ci in json.loads(sources["songci_300.json"])]
    return {"tangshi_300.jsonl": _jsonl(tang), "songci_300.jsonl": _jsonl(song)}


VERSE_PUNCTUATION = "，。？！；"


def is_regular_verse(text):
    """Whether a poem is a quatrain or regulated verse: 4 or 8 segments, each closed by one
    of ，。？！； and all 5 or all 7 characters long."""
    segments = re.findall(f"[^{VERSE_PUNCTUATION}]*[{VERSE_PUNCTUATION}]", text)
    if "".join(segments) != text or len(segments) not in (4, 8):
        return False
    return {len(s) - 1 for s in segments} in ({5}, {7})


def tang_verse(sources):
    """全唐诗's quatrains and regulated verse (Traditional characters, as chinese-poetry
    keeps them), one poem per line, its paragraphs joined with the punctuation kept; the
    files in the order of their first poem's number, split by the md5 bucket of the text."""
    rows = []
    for name in sorted(sources, key=lambda n: int(n.split(".")[2])):
        for poem in json.loads(_text(sources[name])):
            text = "".join(poem["paragraphs"])
            if is_regular_verse(text):
                rows.append((split2(text), text))
    return _by_split(rows, {"train": "tang_5_7_train.txt", "valid": "tang_5_7_valid.txt"})
