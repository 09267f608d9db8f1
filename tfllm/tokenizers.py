"""Tokenizers: trained SentencePiece (BPE/unigram), a character fallback, and GPT-2's BPE.

All map text to int32 ids with TensorFlow / TensorFlow Text ops only, so the same object
tokenizes in tf.data, in eager Python and inside an exported SavedModel served by TF Serving.
The trained tokenizers share the first eight ids:

    0 <pad>   1 <unk>   2 <s> (BOS)   3 </s> (EOS)
    4 <|system|>   5 <|user|>   6 <|assistant|>   7 <|end|>   (chat format)

GPT2Tokenizer keeps a pretrained GPT-2's own ids instead: read `tokenizer.pad_id`,
`eos_id` and `bos_id` rather than assuming the constants below.

Example:

    tok = SentencePieceTokenizer.train(["some text\\n", "more text"], vocab_size=300)
    ids = tok.tokenize(tf.constant(["hello world"]))     # int32 RaggedTensor (1, None)
    tok.detokenize(ids)                                   # [b"hello world"]
    tok.save("runs/demo"); tok = load_tokenizer("runs/demo")
"""

import functools
import hashlib
import io
import json
import random
import re
from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece as spm
import tensorflow as tf

from tfllm.atomic import write_atomic
from tfllm.graph_function import graph_function
from tfllm.quiet import quiet_stderr

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
_RESERVED_PIECES = ("<pad>", "<unk>", "<s>", "</s>") + SPECIAL_TOKENS

# What an unknown id decodes to: the Unicode replacement character, in both tokenizers.
_UNK_SURFACE = "\ufffd"

# Documents are cut into chunks of at most this many characters for the SentencePiece trainer
# (it skips sentences over max_sentence_length bytes; 4 bytes per character at worst).
_CHUNK_CHARS = 1000
# Larger corpora are reduced to a seeded random sample of this many chunks (<= 100M characters),
# which bounds training time and memory; 20M characters train in about a second.
_MAX_TRAINING_CHUNKS = 100_000


def as_ragged_ids(ids):
    """Ids for detokenize: ragged as is; dense (batch, length) or (length,) made ragged."""
    if isinstance(ids, tf.RaggedTensor):
        return ids
    ids = tf.convert_to_tensor(ids)
    if ids.shape.rank == 1:
        ids = ids[tf.newaxis]
    elif ids.shape.rank != 2:
        raise ValueError(
            f"detokenize takes ids of shape (batch, length) or (length,), got {ids.shape}: "
            "reshape the ids first")
    return tf.RaggedTensor.from_tensor(ids)


class Tokenizer(tf.Module):
    """Common interface: text <-> int32 ids, graph-safe in both directions.

    Subclasses set `kind`, fill `self._pieces` (the piece of every id, reserved ids first) and
    implement `_tokenize` (1-D strings -> ragged ids) and `_detokenize` (ragged ids -> strings).
    """

    kind = None
    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    @property
    def vocab_size(self):
        return len(self._pieces)

    def token_id(self, piece):
        """The id of one vocabulary piece, e.g. `token_id("<|end|>") == 7`."""
        try:
            return self._pieces.index(piece)  # a tuple: tf.Module would wrap a dict for tracking
        except ValueError:
            raise ValueError(
                f"{piece!r} is not a piece of this {self.kind} tokenizer: use one of "
                f"{_RESERVED_PIECES} or a piece from its vocabulary"
            ) from None

    def tokenize(self, texts):
        """tf.string (batch,) or scalar -> int32 RaggedTensor (batch, None); no BOS/EOS added.

        A scalar is treated as a batch of one, so the result is always (batch, None).
        """
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        if texts.shape.rank == 0:
            texts = texts[tf.newaxis]
        elif texts.shape.rank is None:
            texts = tf.reshape(texts, [-1])
        elif texts.shape.rank != 1:
            raise ValueError(
                f"tokenize takes a scalar or a (batch,) string tensor, got shape {texts.shape}: "
                "flatten the texts first"
            )
        return self._tokenize(texts)

    def detokenize(self, ids):
        """int32 ids (batch, None), ragged or dense -> tf.string (batch,).

        pad, BOS and EOS ids are dropped, so right-padded dense ids decode cleanly; ids outside
        the vocabulary (e.g. from a model whose embedding table is padded) decode as unknown.
        A 1-D dense tensor is treated as a batch of one.
        """
        ids = as_ragged_ids(ids)
        ids = tf.cast(ids, tf.int32)
        flat = ids.flat_values
        flat = tf.where((flat >= 0) & (flat < self.vocab_size), flat, UNK_ID)
        keep = (flat != PAD_ID) & (flat != BOS_ID) & (flat != EOS_ID)
        ids = tf.ragged.boolean_mask(ids.with_flat_values(flat), ids.with_flat_values(keep))
        return self._detokenize(ids)

    def encode(self, text):
        """Eager convenience: one Python string -> list of ids."""
        return self.tokenize(tf.constant([text]))[0].numpy().tolist()

    def decode(self, ids):
        """Eager convenience: a sequence of ids -> one Python string."""
        ids = tf.reshape(tf.cast(tf.convert_to_tensor(ids), tf.int32), [1, -1])  # [] is float32
        return self.detokenize(ids)[0].numpy().decode("utf-8", errors="replace")

    def save(self, directory):
        """Write `directory/tokenizer.json` (+ the files it names), each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self._save_files(directory)
        text = json.dumps({"kind": self.kind, "vocab_size": self.vocab_size, **config}, indent=2)
        # Written last: a tokenizer.json on disk means every file it names is complete.
        write_atomic(directory / "tokenizer.json", (text + "\n").encode("utf-8"))


@functools.cache
def _shared_sentencepiece_model_class():
    from tensorflow_text.python.ops import sentencepiece_tokenizer as sentencepiece_ops

    class SharedSentencepieceModel(sentencepiece_ops._SentencepieceModelResource):
        """TF Text's SentencePiece model resource, kept by name in TensorFlow's resource
        manager.

        TF Text's own resource belongs to the op's cached kernel, and TensorFlow drops
        cached kernels whenever a global seed is set (`tf.random.set_seed`,
        keras.utils.set_random_seed): every tokenizer made before that then fails with
        "Resource ... SentencepieceOp ... does not exist". A name derived from the model's
        bytes keeps the resource past the kernel, and two tokenizers of the same model share
        one copy.
        """

        def _create_resource(self):
            name = "tfllm_sentencepiece_" + hashlib.sha256(self._model).hexdigest()[:32]
            return sentencepiece_ops.gen_sentencepiece_tokenizer.sentencepiece_op(
                model=self._model, shared_name=name)

    return SharedSentencepieceModel


class SentencePieceTokenizer(Tokenizer):
    """Byte-fallback SentencePiece: any UTF-8 string round-trips exactly.

    Args:
        model_proto: a serialized SentencePiece ModelProto whose first eight pieces are the
            reserved ones (what `train` produces).
    """

    kind = "sentencepiece"

    def __init__(self, model_proto):
        super().__init__(name="sentencepiece_tokenizer")
        self.model_proto = bytes(model_proto)
        processor = spm.SentencePieceProcessor(model_proto=self.model_proto)
        self._pieces = tuple(processor.id_to_piece(i) for i in range(processor.get_piece_size()))
        if self._pieces[: len(_RESERVED_PIECES)] != _RESERVED_PIECES:
            raise ValueError(
                f"this SentencePiece model starts with {self._pieces[:8]}, not the reserved "
                f"pieces {_RESERVED_PIECES}: train it with SentencePieceTokenizer.train"
            )
        # TF Text is imported where a tokenizer first needs its ops: the character
        # tokenizer never does, and the import takes a quarter of a second.
        import tensorflow_text as tf_text

        # A tracked child (tf.Module attribute), so SavedModels that hold us keep the model.
        with quiet_stderr():  # TF Text's SentencePiece logs an INFO line on every load
            self._sp = tf_text.SentencepieceTokenizer(model=self.model_proto, out_type=tf.int32)
            self._sp._model_resource = _shared_sentencepiece_model_class()(self.model_proto,
                                                                           None)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, model_type="bpe", seed=0):
        """Train in memory on `texts` (documents of any length).

        The same texts, vocab_size, model_type and seed give the same model, byte for byte;
        `seed` picks which chunks are kept when the corpus is larger than the training sample.
        """
        if model_type not in ("bpe", "unigram"):
            raise ValueError(f"model_type={model_type!r} is not supported: use 'bpe' or 'unigram'")
        # Sampled here, not by the trainer: its sampler ignores spm.set_random_generator_seed.
        chunks = _reservoir_sample(_training_chunks(texts), _MAX_TRAINING_CHUNKS, seed)
        if not chunks:
            raise ValueError("no text to train the tokenizer on: pass at least one non-empty text")
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(chunks),
                model_writer=model,
                model_type=model_type,
                vocab_size=vocab_size,
                pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
                user_defined_symbols=list(SPECIAL_TOKENS),  # ids 4-7, matched whole in text
                # Exact round trip: characters outside the vocabulary become <0xNN> byte pieces,
                # and no normalization, whitespace squeezing or dummy leading space is applied.
                byte_fallback=True,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                unk_surface=_UNK_SURFACE,
                max_sentence_length=4 * _CHUNK_CHARS,
                num_threads=1,  # multi-threaded (unigram) training is not reproducible
                minloglevel=2,
            )
        except RuntimeError as error:
            raise _training_error(error, vocab_size) from None
        return cls(model.getvalue())

    def _tokenize(self, texts):
        return self._sp.tokenize(texts)

    def _detokenize(self, ids):
        return self._sp.detokenize(ids)

    def _save_files(self, directory):
        write_atomic(directory / "tokenizer.model", self.model_proto)
        return {"model_file": "tokenizer.model"}


class CharTokenizer(Tokenizer):
    """One id per Unicode code point; unseen characters map to `<unk>`.

    Args:
        chars: the non-reserved characters (single code points), given ids 8, 9, ... in order.
    """

    kind = "char"

    def __init__(self, chars: Sequence[str]):
        super().__init__(name="char_tokenizer")
        chars = tuple(chars)
        bad = [c for c in chars if len(c) != 1 or "\ud800" <= c <= "\udfff"]
        if bad or len(set(chars)) != len(chars):
            raise ValueError(
                f"chars must be distinct single Unicode code points, got {bad or 'duplicates'}: "
                "build the tokenizer with CharTokenizer.from_texts"
            )
        self.chars = chars
        self._pieces = _RESERVED_PIECES + chars
        ids = tf.range(len(_RESERVED_PIECES), self.vocab_size, dtype=tf.int32)
        # Keyed by code point: decoding the text to code points is ten times faster than
        # splitting it into one string per character (0.03 s against 0.3 s a megabyte).
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant([ord(c) for c in chars], tf.int32), ids),
            default_value=UNK_ID,
        )
        # What each id decodes to; pad/BOS/EOS never reach the gather (detokenize drops them).
        surfaces = ("", _UNK_SURFACE, "", "") + SPECIAL_TOKENS + chars
        self._surfaces = tf.constant(surfaces, tf.string)

    @classmethod
    def from_texts(cls, texts: Iterable[str]):
        """The sorted set of characters (code points) that occur in `texts`."""
        chars = set()
        for text in texts:
            chars.update(text)
        return cls(sorted(chars))

    def _tokenize(self, texts):
        # Invalid UTF-8 decodes to U+FFFD, which is <unk> unless the text had it.
        code_points = tf.strings.unicode_decode(texts, "UTF-8")  # (batch, None) int32
        return code_points.with_flat_values(self._table.lookup(code_points.flat_values))

    def _detokenize(self, ids):
        return tf.strings.reduce_join(tf.gather(self._surfaces, ids), axis=-1)

    def _save_files(self, directory):
        return {"chars": list(self.chars)}


def load_tokenizer(directory):
    """Rebuild the tokenizer that `Tokenizer.save` wrote into `directory`."""
    directory = Path(directory)
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no tokenizer in '{directory}' (expected tokenizer.json): "
            "point at a run directory written by train.py"
        )
    config = json.loads(path.read_text(encoding="utf-8"))
    kind = config.get("kind")
    if kind == "sentencepiece":
        model_path = directory / config["model_file"]
        if not model_path.is_file():
            raise FileNotFoundError(
                f"'{path}' names '{model_path}', which is missing: copy the whole run directory"
            )
        return SentencePieceTokenizer(model_path.read_bytes())
    if kind == "char":
        return CharTokenizer(config["chars"])
    if kind == "gpt2":
        return GPT2Tokenizer.from_files(directory / config["vocab_file"],
                                        directory / config["merges_file"],
                                        config.get("added_pieces", ()))
    raise ValueError(
        f"'{path}' has unknown kind {kind!r}: expected 'sentencepiece', 'char' or 'gpt2'")


def load_hf_tokenizer(directory):
    """The tokenizer of a Hugging Face GPT-2 directory (or keras-hub preset): GPT-2's
    byte-level BPE from `vocab.json` + `merges.txt`, or, without them, the `tokenizer.json`
    that `tfllm.hf_format` writes for a SentencePiece or char tokenizer."""
    directory = Path(directory)
    path = directory / "tokenizer.json"  # (a keras-hub preset's is its own config)
    gpt2_files = [directory / vocab for vocab, _ in _GPT2_FILES]
    if path.is_file() and not any(f.is_file() for f in gpt2_files):
        return _from_hf_json(path)
    return GPT2Tokenizer.from_directory(directory)


def _from_hf_json(path):
    """Rebuild a tfllm tokenizer from the Hugging Face `tokenizer.json` that
    `tfllm.hf_format` wrote: BPE with byte fallback is a SentencePiece BPE (merge
    priority is vocabulary order, as SentencePiece's piece scores are), BPE without
    merges a char tokenizer."""
    try:
        model = json.loads(Path(path).read_text(encoding="utf-8"))["model"]
        vocab = {str(k): int(v) for k, v in model["vocab"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
        raise ValueError(f"'{path}' is not a Hugging Face tokenizer.json with a vocabulary: "
                         "give the tokenizer file of an exported model") from None
    pieces = sorted(vocab, key=vocab.get)
    if (model.get("type") != "BPE" or [vocab[p] for p in pieces] != list(range(len(pieces)))
            or tuple(pieces[:len(_RESERVED_PIECES)]) != _RESERVED_PIECES):
        raise ValueError(
            f"'{path}' is not a tokenizer that tfllm exported (a BPE whose first ids are "
            f"{', '.join(_RESERVED_PIECES)}): only GPT-2 vocab.json/merges.txt or "
            "tfllm's own exports load")
    if model.get("byte_fallback"):
        return SentencePieceTokenizer(_sentencepiece_bpe_proto(pieces))
    if not model.get("merges"):
        return CharTokenizer(pieces[len(_RESERVED_PIECES):])
    raise ValueError(f"'{path}' is a BPE with merges but no byte fallback, which no tfllm "
                     "tokenizer is: export the model with tfllm again")


def _sentencepiece_bpe_proto(pieces):
    """The serialized SentencePiece model of `SentencePieceTokenizer.train` (BPE) with
    these pieces: reserved ids first, <0xNN> byte pieces, then merged pieces and single
    characters, each scored by its rank (BPE merges into the best-scored piece first)."""
    from sentencepiece import sentencepiece_model_pb2 as sp_pb

    proto = sp_pb.ModelProto()
    trainer = proto.trainer_spec
    trainer.model_type = sp_pb.TrainerSpec.BPE
    trainer.vocab_size = len(pieces)
    trainer.byte_fallback = True
    trainer.pad_id, trainer.unk_id, trainer.bos_id, trainer.eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID
    trainer.unk_surface = _UNK_SURFACE
    trainer.user_defined_symbols.extend(SPECIAL_TOKENS)
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = False
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    kinds = {UNK_ID: sp_pb.ModelProto.SentencePiece.UNKNOWN}
    kinds.update({i: sp_pb.ModelProto.SentencePiece.CONTROL for i in (PAD_ID, BOS_ID, EOS_ID)})
    kinds.update({_RESERVED_PIECES.index(p): sp_pb.ModelProto.SentencePiece.USER_DEFINED
                  for p in SPECIAL_TOKENS})
    rank = 0
    for i, text in enumerate(pieces):
        piece = proto.pieces.add(piece=text, score=0.0)
        if i in kinds:
            piece.type = kinds[i]
        elif re.fullmatch(r"<0x[0-9A-F]{2}>", text):
            piece.type = sp_pb.ModelProto.SentencePiece.BYTE
        else:
            piece.score, rank = -float(rank), rank + 1
    return proto.SerializeToString()


def _training_chunks(texts):
    """Cut documents into trainer "sentences" of at most _CHUNK_CHARS characters.

    The trainer strips a trailing "\\n" from every sentence but keeps leading and inner ones,
    so cuts go just *before* a newline (or else before a space): every newline stays in the
    training data and "\\n", "\\n\\n", ".\\n" can become pieces.
    """
    for text in texts:
        start = 0
        while start < len(text):
            end = min(start + _CHUNK_CHARS, len(text))
            if end < len(text):
                cut = text.rfind("\n", start + 1, end)
                if cut > start + 1 and text[cut - 1] == "\r":
                    cut -= 1  # "\r\n" stays together; a trailing "\r" would be stripped too
                if cut == -1:
                    cut = text.rfind(" ", start + 1, end)
                if cut != -1:
                    end = cut
            yield text[start:end]
            start = end


def _reservoir_sample(items, size, seed):
    """A uniform random sample of at most `size` items from a stream, in one pass."""
    rng, sample = random.Random(seed), []
    for seen, item in enumerate(items):
        if seen < size:
            sample.append(item)
        elif (slot := rng.randrange(seen + 1)) < size:
            sample[slot] = item
    return sample


def _training_error(error, vocab_size):
    """Turn SentencePiece's RuntimeError into a ValueError that says what to change."""
    message = str(error)
    too_high = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", message)
    if too_high:
        return ValueError(
            f"vocab_size={vocab_size} is too large for this text (it supports at most "
            f"{too_high.group(1)}): use a smaller --vocab-size or more training text"
        )
    too_low = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if too_low:
        return ValueError(
            f"vocab_size={vocab_size} is too small (the reserved ids, 256 byte pieces and the "
            f"text's characters need at least {too_low.group(1)}): use a larger --vocab-size"
        )
    return ValueError(f"SentencePiece training failed ({message}): check the text and vocab_size")


def _hf_added_pieces(directory, vocab_file):
    """The pieces a Hugging Face directory adds after `vocab_file`'s ids (the chat markers
    of an exported fine-tune): tokenizer_config.json's `added_tokens_decoder`, in id order."""
    path = Path(directory) / "tokenizer_config.json"
    if not path.is_file():
        return ()
    decoder = json.loads(path.read_text(encoding="utf-8")).get("added_tokens_decoder") or {}
    size = len(json.loads(Path(vocab_file).read_text(encoding="utf-8")))
    added = sorted((int(i), token["content"]) for i, token in decoder.items() if int(i) >= size)
    if [i for i, _ in added] != list(range(size, size + len(added))):
        raise ValueError(f"'{path}' adds tokens with ids {[i for i, _ in added]}, not the ids "
                         f"right after the vocabulary's {size}: fix added_tokens_decoder")
    return tuple(content for _, content in added)


# GPT-2's pre-tokenizer (OpenAI's encoder.py, also Hugging Face's ByteLevel) is the regex
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# with Unicode whitespace for \s. RE2 (TensorFlow's regex engine) has no lookahead and an
# ASCII \s, so GPT2Tokenizer spells the whitespace out and handles `\s+(?!\S)` in two steps.
_GPT2_WS = (r"\t\n\x0b\f\r \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}"
            r"\x{205f}\x{3000}")
_GPT2_WS_RUN = "[" + _GPT2_WS + "]+"
_GPT2_WORDS = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^" + _GPT2_WS + r"\p{L}\p{N}]+|"
               + _GPT2_WS_RUN)
GPT2_EOS = "<|endoftext|>"
# (vocabulary, merges) of a Hugging Face GPT-2 directory and of a keras-hub GPT-2 preset.
_GPT2_FILES = (("vocab.json", "merges.txt"),
               ("assets/tokenizer/vocabulary.json", "assets/tokenizer/merges.txt"))


class GPT2Tokenizer(Tokenizer):
    """GPT-2's byte-level BPE (`vocab.json` + `merges.txt`), in graph, with GPT-2's ids.

    Pre-tokenization follows GPT-2's regex exactly (as Hugging Face's GPT-2 tokenizer does);
    the merges run on keras-hub's `BytePairTokenizer` tables and merge loop. keras-hub's own
    `tokenize` is not used: its cache is a MutableHashTable that SavedModels cannot track
    (keras-hub#2015) and that grows without bound in a server, and its graph pre-tokenizer
    departs from GPT-2 (whitespace at the end of a text or before <|endoftext|>, the
    characters "६" and "ĴA", text after a NUL byte; its eager path uses Llama 3's regex).
    Here each call merges every distinct word of the batch once and keeps no state.

    Ids: GPT-2's own, `<|endoftext|>` (also matched in text) is EOS and BOS. GPT-2 has no
    padding token, and its id 0 is "!", so `pad_id` is `vocab_size` (50257): one past the
    vocabulary, a row of the model's padded embedding table that is never a target
    (see `tfllm.pretrained`). There is no unknown token: every byte has an id.

    Added pieces (the chat markers, for SFT) take the ids after GPT-2's own, and `pad_id`
    moves past them: 50257-50260 and pad 50261. They are never matched in text; callers
    insert their ids (see `tfllm.chat_format`).

    Args:
        vocabulary: dict piece -> id (the contents of `vocab.json`), ids 0..n-1.
        merges: merge rules "a b" in priority order (the lines of `merges.txt`).
        added: extra pieces, given ids from len(vocabulary) on.
    """

    kind = "gpt2"

    def __init__(self, vocabulary, merges, added=()):
        super().__init__(name="gpt2_tokenizer")
        from keras_hub.tokenizers import BytePairTokenizer
        from keras_hub.src.tokenizers.byte_pair_tokenizer import bytes_to_unicode

        vocabulary = {str(k): int(v) for k, v in dict(vocabulary).items()}
        merges = [str(m).strip("\r\n") for m in merges]
        if merges and merges[0].startswith("#version"):
            merges = merges[1:]  # the header line of merges.txt
        merges = [m for m in merges if m]
        pieces = sorted(vocabulary, key=vocabulary.get)
        if [vocabulary[p] for p in pieces] != list(range(len(pieces))):
            raise ValueError("the GPT-2 vocabulary's ids must be 0..n-1 without gaps: "
                             "pass the vocab.json that belongs to the checkpoint")
        byte_pieces, unicode_pieces = bytes_to_unicode()
        missing = [c for c in unicode_pieces if c not in vocabulary]
        if missing or GPT2_EOS not in vocabulary:
            raise ValueError(
                f"this is not a GPT-2 byte-level vocabulary (it lacks "
                f"{missing[:3] if missing else GPT2_EOS!r}): pass GPT-2's vocab.json")
        added = tuple(str(p) for p in added)
        clash = [p for p in added if p in vocabulary or added.count(p) > 1]
        if clash:
            raise ValueError(f"added piece {clash[0]!r} is already in the vocabulary: add "
                             "each new piece once")
        # tuples: not tracked
        self._pieces, self.merges, self.added = tuple(pieces) + added, tuple(merges), added
        self.eos_id = self.bos_id = vocabulary[GPT2_EOS]
        self.pad_id = len(self._pieces)
        self.unk_id = None

        bpe = BytePairTokenizer(vocabulary, merges, _allow_python_workflow=False)
        # Only the static tables are used; as attributes of this tf.Module they are tracked,
        # so a SavedModel that holds the tokenizer carries them.
        self._byte2unicode = bpe.byte2unicode
        self._merge_ranks = bpe.merge_ranks
        self._piece_to_id = bpe.token_to_id_map
        self._merge_words = bpe._bpe_merge_tf  # a bound method: not tracked, uses the above
        # What each id decodes to, as bytes (pieces are bytes spelled as printable characters).
        to_byte = dict(zip(unicode_pieces, byte_pieces))
        surfaces = [b"".join(to_byte.get(c, c.encode()) for c in p) if p != GPT2_EOS
                    else p.encode() for p in pieces]
        self._surfaces = tf.constant(surfaces + [p.encode() for p in added], tf.string)

    @property
    def _gpt2_vocabulary(self):
        """{piece: id} of GPT-2's own pieces (without the added ones): vocab.json."""
        return {p: i for i, p in enumerate(self._pieces[:len(self._pieces) - len(self.added)])}

    def with_added(self, pieces):
        """This tokenizer with `pieces` added after its own (a new tokenizer)."""
        return GPT2Tokenizer(self._gpt2_vocabulary, self.merges, self.added + tuple(pieces))

    @classmethod
    def from_files(cls, vocab_file, merges_file, added=()):
        """Read GPT-2's `vocab.json` and `merges.txt` (keras-hub: `vocabulary.json`)."""
        for path in (vocab_file, merges_file):
            if not Path(path).is_file():
                raise FileNotFoundError(
                    f"no GPT-2 tokenizer file '{path}': a GPT-2 directory needs vocab.json "
                    "and merges.txt (a keras-hub preset: assets/tokenizer/)")
        vocabulary = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
        merges = Path(merges_file).read_text(encoding="utf-8").split("\n")
        return cls(vocabulary, merges, added)

    @classmethod
    def from_directory(cls, directory):
        """The tokenizer of a Hugging Face GPT-2 directory or a keras-hub GPT-2 preset."""
        directory = Path(directory)
        for vocab, merges in _GPT2_FILES:
            if (directory / vocab).is_file():
                return cls.from_files(directory / vocab, directory / merges,
                                      _hf_added_pieces(directory, directory / vocab))
        raise FileNotFoundError(
            f"no GPT-2 tokenizer in '{directory}': expected vocab.json + merges.txt (Hugging "
            "Face) or assets/tokenizer/vocabulary.json + merges.txt (keras-hub preset)")

    def token_id(self, piece):
        """The id of one vocabulary piece, e.g. `token_id("<|endoftext|>") == 50256`."""
        try:
            return self._pieces.index(piece)
        except ValueError:
            raise ValueError(
                f"{piece!r} is not a piece of this GPT-2 vocabulary: pieces spell bytes, e.g. "
                "'Ġthe' for ' the'") from None

    def _tokenize(self, texts):
        return self._tokenize_graph(texts)

    # A graph function: traced once, so eager calls do not rebuild the merge loop each time.
    @graph_function(input_signature=[tf.TensorSpec([None], tf.string)])
    def _tokenize_graph(self, texts):
        words = self._pre_tokenize(texts)  # (batch, words) strings
        unique, index = tf.unique(words.flat_values)
        is_eos = tf.equal(unique, GPT2_EOS)
        # Each word's bytes as printable pieces; <|endoftext|> stays one piece.
        chars = self._byte2unicode.lookup(
            tf.strings.bytes_split(tf.where(is_eos, "", unique)))
        eos = tf.RaggedTensor.from_tensor(tf.where(is_eos, GPT2_EOS, "")[:, None])
        chars = tf.concat([eos, chars], axis=1)
        chars = tf.ragged.boolean_mask(chars, tf.not_equal(chars, ""))
        merged = self._merge_words(chars)  # (unique words, pieces)
        ids = tf.cast(self._piece_to_id.lookup(merged), tf.int32)
        ids = tf.gather(ids, index)  # (words, pieces)
        return tf.RaggedTensor.from_row_splits(ids, words.row_splits).merge_dims(1, 2)

    def _pre_tokenize(self, texts):
        """GPT-2's regex split, text by text: (batch,) -> ragged (batch, words)."""
        # TF Text's regex_split stops at a NUL byte; \x01 is in the same regex class (a
        # control character) and the same size, so split with it and cut the words
        # out of the original texts by their byte lengths (the words tile each text).
        words = self._split(tf.strings.regex_replace(texts, r"\x00", "\x01"))
        lengths = tf.strings.length(words).to_tensor()  # (batch, max words) bytes
        starts = tf.cumsum(lengths, axis=1, exclusive=True)
        cut = tf.strings.substr(texts[:, None], starts, lengths)  # broadcast: no copies
        return tf.RaggedTensor.from_tensor(cut, lengths=words.row_lengths())

    def _split(self, texts):
        import tensorflow_text as tf_text  # where needed: see SentencePieceTokenizer

        eos = re.escape(GPT2_EOS)
        # <|endoftext|> first, as Hugging Face does: the text around it is split on its own.
        segments = tf_text.regex_split(texts, eos, eos)  # (batch, segments)
        pieces = tf_text.regex_split(segments.flat_values, _GPT2_WS_RUN, _GPT2_WS_RUN)
        flat, rows = pieces.flat_values, pieces.value_rowids()
        # `\s+(?!\S)`: a whitespace run followed by text gives up its last character, which
        # is a word of its own, or, if it is a space, the start of the next word (" ?\p{L}+").
        is_space = tf.strings.regex_full_match(flat, _GPT2_WS_RUN)
        followed = tf.concat([tf.equal(rows[1:], rows[:-1]), [False]], axis=0)
        split = is_space & followed
        length = tf.strings.length(flat, unit="UTF8_CHAR")
        head = tf.strings.substr(flat, tf.zeros_like(length), length - 1, unit="UTF8_CHAR")
        last = tf.strings.substr(flat, length - 1, tf.ones_like(length), unit="UTF8_CHAR")
        gives_space = split & tf.equal(last, " ")
        takes_space = tf.concat([[False], gives_space[:-1]], axis=0)
        first = tf.where(split, head, tf.where(takes_space, tf.strings.join([" ", flat]), flat))
        second = tf.where(split & ~gives_space, last, "")
        chunks = tf.RaggedTensor.from_row_splits(
            tf.reshape(tf.stack([first, second], axis=1), [-1]), pieces.row_splits * 2)
        chunks = tf.ragged.boolean_mask(chunks, tf.not_equal(chunks, ""))
        # Each chunk is whitespace alone, <|endoftext|> alone, or text with at most one
        # leading space: GPT-2's regex (minus the lookahead) splits it into words.
        pattern = eos + "|" + _GPT2_WORDS
        words = tf_text.regex_split(chunks.flat_values, pattern, pattern)
        words = tf.RaggedTensor.from_row_splits(words, chunks.row_splits)
        words = tf.RaggedTensor.from_row_splits(words, segments.row_splits)
        return words.merge_dims(1, 3)

    def detokenize(self, ids):
        """int32 ids (batch, None), ragged or dense -> tf.string (batch,): the bytes of each
        piece joined; pad and EOS are dropped, ids outside the vocabulary decode as U+FFFD."""
        ids = as_ragged_ids(ids)
        ids = tf.cast(ids, tf.int32)
        keep = (ids.flat_values != self.pad_id) & (ids.flat_values != self.eos_id)
        ids = tf.ragged.boolean_mask(ids, ids.with_flat_values(keep))
        flat = ids.flat_values
        known = (flat >= 0) & (flat < self.vocab_size)
        surfaces = tf.where(known, tf.gather(self._surfaces, tf.where(known, flat, 0)),
                            _UNK_SURFACE.encode())
        return tf.strings.reduce_join(ids.with_flat_values(surfaces), axis=-1)

    def _save_files(self, directory):
        text = json.dumps(self._gpt2_vocabulary, ensure_ascii=False)
        write_atomic(directory / "vocab.json", text.encode("utf-8"))
        lines = "#version: 0.2\n" + "".join(m + "\n" for m in self.merges)
        write_atomic(directory / "merges.txt", lines.encode("utf-8"))
        return {"vocab_file": "vocab.json", "merges_file": "merges.txt",
                **({"added_pieces": list(self.added)} if self.added else {})}
