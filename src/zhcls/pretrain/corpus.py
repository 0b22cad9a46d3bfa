"""The pretraining corpus: text files streamed line by line, checked once before training, packed
into full-length sequences, shuffled through a bounded buffer. Nothing holds the whole corpus, so
a corpus larger than memory works; a batch order is a function of (seed, epoch) only.

A sequence is ``[CLS] line [SEP] line [SEP] ...`` up to ``max_seq_length`` tokens (lines are
packed in file order; a line longer than a sequence is cut into several). Each token carries a
word-start flag: with a segmenter (whole-word masking) a token starts a word when a word begins at
its first character and it is not a ``##`` piece; without one every token is its own word.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zhcls.data.tokenizer import Tokenizer
from zhcls.errors import ZhclsError, data_error

TOKENIZE_CHUNK = 2000  # lines per tokenizer call: the Rust tokenizer works in parallel on a batch


@dataclass
class Corpus:
    files: list[Path]
    lines: int  # non-blank lines
    chars: int


def corpus_files(paths: Iterable[str]) -> list[Path]:
    """The files that ``--corpus`` names: files as given, folders searched recursively (sorted, no hidden files)."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.parts[len(p.parts):]))
        elif p.is_file():
            files.append(p)
        else:
            raise ZhclsError(f"--corpus {p}: no such file or folder")
    return files


def _decoded(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise data_error(path, number, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None


def scan(paths: Iterable[str]) -> Corpus:
    """Read every line once before training: a bad byte is reported with its file and line before any
    model is built, and an empty corpus is refused."""
    files = corpus_files(paths)
    lines = chars = 0
    for path in files:
        for _, text in _decoded(path):
            text = text.strip()
            lines += bool(text)
            chars += len(text)
    if not lines:
        raise ZhclsError(f"--corpus {' '.join(map(str, paths))}: no text ({len(files)} files, no non-blank line)")
    return Corpus(files, lines, chars)


def read_lines(corpus: Corpus) -> Iterator[str]:
    """The non-blank lines, stripped, in file order."""
    for path in corpus.files:
        for _, text in _decoded(path):
            if text := text.strip():
                yield text


def jieba_word_starts() -> Callable[[str], set[int]]:
    """Word boundaries from jieba (the segmenter of Chinese whole-word masking): the set of characters
    at which a word begins."""
    try:
        import jieba
    except ImportError:
        raise ZhclsError("--whole_word_masking needs jieba: pip install 'zhcls[pretrain]'") from None
    jieba.setLogLevel(60)  # its dictionary-loading chatter
    return lambda text: {start for _, start, _ in jieba.tokenize(text)}


def pack(tokenizer: Tokenizer, lines: Iterable[str], max_seq_length: int,
         word_starts: Callable[[str], set[int]] | None = None) -> Iterator[tuple[list[int], list[bool]]]:
    """(input ids, word-start flags) of each packed sequence."""
    budget = max_seq_length - 2
    if budget < 1:
        raise ZhclsError(f"--max_seq_length {max_seq_length}: no room for text besides [CLS] and [SEP]")
    subword = np.array([t.startswith("##") for t in tokenizer.vocab])
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids: list[int] = []
    starts: list[bool] = []
    lines = iter(lines)
    while chunk := list(itertools.islice(lines, TOKENIZE_CHUNK)):
        for text, (line_ids, spans) in zip(chunk, tokenizer.pieces(chunk)):
            if not line_ids:
                continue
            if word_starts is None:
                flags = [True] * len(line_ids)
            else:
                begins = word_starts(text)
                flags = [start in begins and not subword[i] for i, (start, _) in zip(line_ids, spans)]
            if ids and len(ids) + 1 + len(line_ids) > budget:  # the line does not fit: close this sequence
                yield [cls, *ids, sep], [False, *starts, False]
                ids, starts = [], []
            if ids:
                ids.append(sep)
                starts.append(False)
            while len(line_ids) > budget - len(ids):  # a line longer than a sequence is cut
                cut = budget - len(ids)
                yield [cls, *ids, *line_ids[:cut], sep], [False, *starts, *flags[:cut], False]
                ids, starts, line_ids, flags = [], [], line_ids[cut:], flags[cut:]
            ids += line_ids
            starts += flags
    if ids:
        yield [cls, *ids, sep], [False, *starts, False]


def shuffled(items: Iterable, buffer: int, rng: np.random.Generator) -> Iterator:
    """A bounded-memory shuffle: fill a buffer, then emit a random element for each new one."""
    pool = []
    for item in items:
        if len(pool) < buffer:
            pool.append(item)
            continue
        j = int(rng.integers(buffer))
        yield pool[j]
        pool[j] = item
    yield from (pool[i] for i in rng.permutation(len(pool)))
