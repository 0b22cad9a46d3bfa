"""The tokenizers: BERT WordPiece (`Tokenizer`) and SentencePiece unigram (`UnigramTokenizer`), one interface.

Everything above the data layer sees ids and character spans through that interface (``encode``,
``encode_long``, ``pieces``, ``pad``, ``save``, ``subset``, the special ids) and never which kind it
holds; `Tokenizer.from_dir` picks the kind from the folder (a ``tokenizer.json`` whose model is a
Unigram, or a ``vocab.txt``).

WordPiece gives exactly the ids PaddleNLP's BertTokenizer / ErnieTokenizer give.

The work is done by the Rust `tokenizers` library: BERT normalisation (drop control characters,
space around CJK characters, lowercase, strip accents), a split on whitespace, punctuation and
symbols, and greedy longest-match WordPiece. Where PaddleNLP differs from the stock Rust BERT
pipeline (which transformers uses), it is followed:

- PaddleNLP splits every Unicode symbol (categories Sm, Sc, Sk, So: ``～ ￥ × ℃ ｜``) and a few more
  characters (``² µ º 〇 ŋ``) off as tokens of their own, as BERT does with punctuation.
- PaddleNLP classifies characters with Python's Unicode tables (14.0 on the Python 3.11 that made
  the fixtures); the Rust BERT components carry Unicode 8 tables and keep marks, punctuation and
  format characters added since as letters. Regexes, whose tables are current, do those steps.
- Longest-first truncation of a pair removes one token at a time from the longer text, from the
  second on a tie, so when both are cut the first keeps the odd token. Rust's truncation (so
  transformers 5) gives it to the second, so truncation and ``[CLS] a [SEP] b [SEP]`` are done here.

This module must not import torch: the ONNX deployment path uses it without.
"""
from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Regex, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as RustTokenizer

from zhcls.data.long_text import LongText
from zhcls.data.unigram import UNIGRAM_SPECIALS
from zhcls.errors import ZhclsError
from zhcls.io import atomic_open

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]
DEFAULT_MAX_SEQ_LENGTH = 128
# PaddleNLP's BasicTokenizer makes a token of each punctuation mark and each symbol: Unicode categories
# P and S, plus the code points its _is_symbol() lists (soft hyphen, ² º µ Ø ŋ Ʊ 〇).
PADDLE_EXTRA_SYMBOLS = "\u00ad\u00b2\u00ba\u00b5\u00d8\u014b\u01b1\u3007"
PUNCTUATION_OR_SYMBOL = Regex(r"[\p{P}\p{S}" + PADDLE_EXTRA_SYMBOLS + "]")
# Control, format, private-use and unassigned characters (Unicode category C), except tab and newlines.
CONTROL = Regex(r"[^\P{C}\t\n\r]")
NONSPACING_MARK = Regex(r"\p{Mn}")


@dataclass
class Encoded:
    """Unpadded model inputs, one list per text: ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]``."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]


def _normalizer(do_lower_case: bool) -> normalizers.Normalizer:
    """PaddleNLP's text cleaning; the regex steps use newer Unicode tables than BertNormalizer's."""
    steps = [
        normalizers.Replace(CONTROL, ""),
        normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=do_lower_case
        ),
    ]
    if do_lower_case:  # as in BERT, accents are stripped exactly when lowercasing, after it
        steps += [normalizers.NFD(), normalizers.Replace(NONSPACING_MARK, "")]
    return normalizers.Sequence(steps)


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # PaddleNLP's rule: split on whitespace, then isolate each punctuation mark or symbol. (Rust's
    # BertPreTokenizer would add a punctuation pass with old tables that the regex covers: 10% slower.)
    split = pre_tokenizers.Split(PUNCTUATION_OR_SYMBOL, "isolated")
    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), split])


def read_vocab(vocab_file: str | Path) -> list[str]:
    """The tokens of a vocab.txt, one per line; the line number is the id."""
    try:
        # Iterating the file splits on newlines only; str.splitlines() would also split on the
        # U+2028 token in bert-base-chinese's vocab and shift every later id.
        with open(vocab_file, encoding="utf-8") as f:
            tokens = [line.rstrip("\n") for line in f]
    except FileNotFoundError:
        raise ZhclsError(f"{vocab_file}: vocab file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ZhclsError(f"{vocab_file}: cannot read vocab file ({e})") from None
    missing = [t for t in (PAD, UNK, CLS, SEP) if t not in tokens]
    if missing:
        raise ZhclsError(f"{vocab_file}: vocab lacks the special tokens {' '.join(missing)}")
    return tokens


class Tokenizer:
    """WordPiece tokenizer with PaddleNLP's ids, batched pair encoding, truncation and padding."""

    # A pair is [CLS] a [SEP] b [SEP], b's tokens of type 1 (XLM-R: <s> a </s></s> b </s>, all of type 0).
    pair_separators = 1
    second_type = 1

    def __init__(self, vocab_file: str | Path, do_lower_case: bool = True, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH):
        self.vocab = read_vocab(vocab_file)
        self.do_lower_case = do_lower_case
        self.max_seq_length = max_seq_length
        # A token listed twice keeps its later line, as in PaddleNLP and transformers ('$' in ERNIE's vocab).
        token_to_id = {token: i for i, token in enumerate(self.vocab)}
        self.vocab_size = len(self.vocab)  # ids run to the last line, duplicates included
        self.pad_token_id = token_to_id[PAD]
        self.unk_token_id = token_to_id[UNK]
        self.cls_token_id = token_to_id[CLS]
        self.sep_token_id = token_to_id[SEP]

        # Longer words become [UNK], as in PaddleNLP.
        self._rust = RustTokenizer(models.WordPiece(token_to_id, unk_token=UNK, max_input_chars_per_word=100))
        self._rust.normalizer = _normalizer(do_lower_case)
        self._rust.pre_tokenizer = _pre_tokenizer()
        # Special tokens written in the text stay whole, as in PaddleNLP and transformers.
        self._rust.add_special_tokens([t for t in SPECIAL_TOKENS if t in token_to_id])

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """The folder's tokenizer: a unigram ``tokenizer.json`` (`UnigramTokenizer`), else vocab.txt and, if
        present, tokenizer_config.json (do_lower_case, model_max_length)."""
        path = Path(path)
        config = _tokenizer_config(path)
        if is_unigram_dir(path):
            return UnigramTokenizer(path / "tokenizer.json", max_seq_length=_max_length(config))
        return cls(path / "vocab.txt", do_lower_case=bool(config.get("do_lower_case", True)),
                   max_seq_length=_max_length(config))

    @property
    def special_ids(self) -> list[int]:
        """Ids every vocabulary subset keeps (the special tokens)."""
        token_to_id = {token: i for i, token in enumerate(self.vocab)}
        return sorted({token_to_id[t] for t in SPECIAL_TOKENS if t in token_to_id})

    def subset(self, keep: list[int]) -> Tokenizer:
        """The same tokenizer over the vocabulary entries ``keep`` (ascending ids, `special_ids` among them),
        renumbered 0..len(keep)-1: what `prune --vocab` pairs with the embedding rows it keeps."""
        with tempfile.TemporaryDirectory(prefix="zhcls-vocab-") as tmp:
            (Path(tmp) / "vocab.txt").write_text("".join(f"{self.vocab[i]}\n" for i in keep), encoding="utf-8")
            return Tokenizer(Path(tmp) / "vocab.txt", do_lower_case=self.do_lower_case,
                             max_seq_length=self.max_seq_length)

    def save(self, path: str | Path) -> None:
        """Write vocab.txt, tokenizer_config.json and special_tokens_map.json (transformers' BertTokenizer layout)."""
        path = Path(path)
        specials = {f"{name}_token": t for name, t in zip(("pad", "unk", "cls", "sep", "mask"), SPECIAL_TOKENS)
                    if t in self.vocab}
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.do_lower_case,
            "model_max_length": self.max_seq_length,
            "tokenize_chinese_chars": True,
            "strip_accents": None,
            **specials,
        }
        # Every line is written back, duplicates too, so that ids do not shift.
        with atomic_open(path / "vocab.txt", "w") as f:
            f.write("".join(token + "\n" for token in self.vocab))
        with atomic_open(path / "tokenizer_config.json", "w") as f:
            json.dump(config, f, ensure_ascii=False, indent=2)
        with atomic_open(path / "special_tokens_map.json", "w") as f:
            json.dump(specials, f, ensure_ascii=False, indent=2)

    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of one text, without [CLS]/[SEP] (for debugging and docs)."""
        return self._rust.encode(text, add_special_tokens=False).tokens

    def pieces(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """(ids, character span (start, end) of each token) per text, untruncated and without [CLS]/[SEP],
        in the order `encode` puts them: what pretraining maps onto word boundaries and explain onto words."""
        return [(e.ids, list(e.offsets)) for e in self._rust.encode_batch(list(texts), add_special_tokens=False)]

    def encode(
        self, texts_a: list[str], texts_b: list[str] | None = None, max_seq_length: int | None = None
    ) -> Encoded:
        """Encode texts (or text pairs) to ``[CLS] a [SEP] (b [SEP])``, truncated to max_seq_length."""
        max_len = max_seq_length or self.max_seq_length
        n_special = 2 if texts_b is None else 2 + self.pair_separators
        if max_len <= n_special:
            raise ZhclsError(f"max_seq_length {max_len} leaves no room for text besides [CLS] and [SEP]")
        if texts_b is not None and len(texts_b) != len(texts_a):
            raise ValueError(f"{len(texts_a)} first texts but {len(texts_b)} second texts")
        texts = list(texts_a) if texts_b is None else [*texts_a, *texts_b]
        ids = self._ids(texts)
        cls, sep = self.cls_token_id, self.sep_token_id
        if texts_b is None:
            input_ids = [[cls, *a[: max_len - 2], sep] for a in ids]
            return Encoded(input_ids, [[0] * len(x) for x in input_ids])
        middle = [sep] * self.pair_separators
        input_ids, token_type_ids = [], []
        for a, b in zip(ids[: len(texts_a)], ids[len(texts_a):]):
            n_a, n_b = _longest_first(len(a), len(b), max_len - n_special)
            input_ids.append([cls, *a[:n_a], *middle, *b[:n_b], sep])
            token_type_ids.append([0] * (n_a + 1 + len(middle)) + [self.second_type] * (n_b + 1))
        return Encoded(input_ids, token_type_ids)

    def encode_long(self, texts: list[str], max_seq_length: int, long_text: LongText) -> tuple[Encoded, np.ndarray]:
        """Encode single texts under a long-text policy: the pieces (``[CLS] piece [SEP]``) and, for each,
        the index of its text. truncate and head_tail give one piece per text, sliding one per window."""
        if max_seq_length <= 2:
            raise ZhclsError(f"max_seq_length {max_seq_length} leaves no room for text besides [CLS] and [SEP]")
        cls, sep = self.cls_token_id, self.sep_token_id
        input_ids, owner = [], []
        for i, ids in enumerate(self._ids(list(texts))):
            for piece in long_text.pieces(ids, max_seq_length - 2):
                input_ids.append([cls, *piece, sep])
                owner.append(i)
        return Encoded(input_ids, [[0] * len(x) for x in input_ids]), np.asarray(owner, dtype=np.int64)

    def lengths(self, texts: list[str]) -> list[int]:
        """Tokens of each text, without [CLS] and [SEP]."""
        return [len(ids) for ids in self._ids(list(texts))]

    def _ids(self, texts: list[str]) -> list[list[int]]:
        # One Rust call tokenizes everything, in parallel; offsets are not needed.
        return [e.ids for e in self._rust.encode_batch_fast(texts, add_special_tokens=False)]

    def pad(
        self, input_ids: list[list[int]], token_type_ids: list[list[int]], pad_to: int | None = None
    ) -> dict[str, np.ndarray]:
        """Right-pad a batch to its longest sequence (or to pad_to): int64 input_ids, token_type_ids, attention_mask."""
        lengths = np.fromiter(map(len, input_ids), dtype=np.int64, count=len(input_ids))
        longest = int(lengths.max(initial=0))
        width = longest if pad_to is None else pad_to
        if width < longest:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest sequence ({longest})")
        mask = np.arange(width) < lengths[:, None]
        total = int(lengths.sum())
        # Boolean-mask assignment fills row by row, left to right: the order of the flattened lists.
        ids = np.full(mask.shape, self.pad_token_id, dtype=np.int64)
        ids[mask] = np.fromiter(itertools.chain.from_iterable(input_ids), dtype=np.int64, count=total)
        types = np.zeros(mask.shape, dtype=np.int64)
        types[mask] = np.fromiter(itertools.chain.from_iterable(token_type_ids), dtype=np.int64, count=total)
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask.astype(np.int64)}


class UnigramTokenizer(Tokenizer):
    """A SentencePiece-unigram tokenizer (XLM-R style: multilingual-e5, paraphrase-multilingual-MiniLM) from its
    Hugging Face ``tokenizer.json``; the same interface as the WordPiece `Tokenizer`.

    ``<s>`` / ``</s>`` play [CLS] / [SEP]; a pair is ``<s> a </s></s> b </s>``, every token of type 0, as
    transformers' XLMRobertaTokenizer gives it. `zhcls.data.unigram` builds such a file from a model's parts.
    """

    pair_separators = 2
    second_type = 0

    def __init__(self, tokenizer_file: str | Path, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH):
        tokenizer_file = Path(tokenizer_file)
        spec = _read_unigram(tokenizer_file)
        self.spec = spec
        self.vocab = [piece for piece, _ in spec["model"]["vocab"]]
        self.scores = np.array([score for _, score in spec["model"]["vocab"]], dtype=np.float64)
        self.vocab_size = len(self.vocab)
        self.max_seq_length = max_seq_length
        self.do_lower_case = False
        token_to_id = {token: i for i, token in enumerate(self.vocab)}
        missing = [t for t in UNIGRAM_SPECIALS[:4] if t not in token_to_id]
        if missing:
            raise ZhclsError(f"{tokenizer_file}: the vocabulary lacks the special tokens {' '.join(missing)}")
        self.cls_token_id, self.pad_token_id = token_to_id["<s>"], token_to_id["<pad>"]
        self.sep_token_id, self.unk_token_id = token_to_id["</s>"], token_to_id["<unk>"]
        try:
            self._rust = RustTokenizer.from_str(json.dumps(spec))
        except Exception as e:  # the Rust side's message names what it could not parse
            raise ZhclsError(f"{tokenizer_file}: not a valid tokenizer.json ({e})") from None
        self._rust.no_truncation()
        self._rust.no_padding()

    @property
    def special_ids(self) -> list[int]:
        # The lowest-scoring piece too: the unknown-character score is the lowest score minus 10, so keeping
        # it keeps that score, and with it every segmentation of the texts a subset was made from.
        token_to_id = {token: i for i, token in enumerate(self.vocab)}
        return sorted({token_to_id[t] for t in UNIGRAM_SPECIALS if t in token_to_id} | {int(self.scores.argmin())})

    def subset(self, keep: list[int]) -> UnigramTokenizer:
        spec = json.loads(json.dumps(self.spec))
        spec["model"]["vocab"] = [self.spec["model"]["vocab"][i] for i in keep]
        new_id = {old: new for new, old in enumerate(keep)}
        spec["added_tokens"] = [{**t, "id": new_id[t["id"]]} for t in spec["added_tokens"] if t["id"] in new_id]
        spec["model"]["unk_id"] = new_id[self.unk_token_id]
        if spec.get("post_processor", {}).get("type") == "RobertaProcessing":
            spec["post_processor"]["cls"][1] = new_id[self.cls_token_id]
            spec["post_processor"]["sep"][1] = new_id[self.sep_token_id]
        with tempfile.TemporaryDirectory(prefix="zhcls-vocab-") as tmp:
            (Path(tmp) / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
            return UnigramTokenizer(Path(tmp) / "tokenizer.json", max_seq_length=self.max_seq_length)

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (what AutoTokenizer loads)."""
        path = Path(path)
        specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                    "pad_token": "<pad>", "cls_token": "<s>"}
        if "<mask>" in self.vocab:
            specials["mask_token"] = "<mask>"
        config = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": self.max_seq_length, **specials}
        with atomic_open(path / "tokenizer.json", "w") as f:
            json.dump(self.spec, f, ensure_ascii=False)
        with atomic_open(path / "tokenizer_config.json", "w") as f:
            json.dump(config, f, ensure_ascii=False, indent=2)
        with atomic_open(path / "special_tokens_map.json", "w") as f:
            json.dump(specials, f, ensure_ascii=False, indent=2)


def is_unigram_dir(path: Path) -> bool:
    """Whether ``path`` holds a tokenizer.json of the unigram kind (and no vocab.txt to prefer)."""
    file = Path(path) / "tokenizer.json"
    if not file.is_file() or (Path(path) / "vocab.txt").is_file():
        return False
    try:
        with open(file, encoding="utf-8") as f:
            head = f.read(1 << 16)
    except (OSError, UnicodeDecodeError):
        return False
    # The model block comes last in tokenizer.json; read the whole file only when its head does not settle it.
    return '"Unigram"' in head or '"Unigram"' in file.read_text(encoding="utf-8", errors="replace")


def has_tokenizer(path: Path) -> bool:
    return (Path(path) / "vocab.txt").is_file() or is_unigram_dir(path)


def _read_unigram(file: Path) -> dict:
    try:
        spec = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ZhclsError(f"{file}: tokenizer file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ZhclsError(f"{file}: cannot read tokenizer file ({e})") from None
    model = spec.get("model") if isinstance(spec, dict) else None
    if not isinstance(model, dict) or model.get("type") != "Unigram" or not isinstance(model.get("vocab"), list):
        raise ZhclsError(f"{file}: not a unigram tokenizer.json (its model is not of type Unigram)")
    return spec


def _tokenizer_config(path: Path) -> dict:
    config_file = path / "tokenizer_config.json"
    if not config_file.is_file():
        return {}
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ZhclsError(f"{config_file}: cannot read tokenizer config ({e})") from None


def _max_length(config: dict) -> int:
    max_len = config.get("model_max_length")
    # transformers writes a huge number (1e30) when the limit is unknown.
    return max_len if isinstance(max_len, int) and 3 <= max_len <= 100_000 else DEFAULT_MAX_SEQ_LENGTH


def _longest_first(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
    """Lengths after PaddleNLP's longest-first truncation of a pair to ``budget`` tokens.

    PaddleNLP removes one token at a time from the longer text, from the second on a tie; this is
    its closed form: the shorter text is kept whole if it fits in half, else the first gets the odd token.
    """
    if n_a + n_b <= budget:
        return n_a, n_b
    if n_a <= n_b:
        n_a = min(n_a, (budget + 1) // 2)
        return n_a, budget - n_a
    n_b = min(n_b, budget // 2)
    return budget - n_b, n_b


def build_vocab(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> list[str]:
    """A WordPiece vocab learnt from training texts (``--vocab_from_data``), for when no vocab is at hand.

    Special tokens come first ([PAD] is 0), then every character seen (CJK characters included,
    whatever min_frequency and vocab_size say), then the learnt pieces in the order merged. The
    texts go through the same normalizer and pre-tokenizer as :class:`Tokenizer`.
    """
    rust = RustTokenizer(models.WordPiece(unk_token=UNK))
    rust.normalizer = _normalizer(do_lower_case=True)
    rust.pre_tokenizer = _pre_tokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    rust.train_from_iterator(texts, trainer)
    learnt = sorted(rust.get_vocab().items(), key=lambda item: item[1])
    return [token for token, _ in learnt]
