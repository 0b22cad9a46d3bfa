"""Batch prediction. `zhcls.load(path).predict(["text", ...])` is the whole API.

The `Predictor` base class owns tokenisation, length-sorted batching and restoring input order;
backends (`torch_predictor`, `onnx_predictor`) only turn a padded batch into logits. This module
imports no torch, so the ONNX backend runs in a deployment image without it.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from zhcls.data.batching import inference_batches
from zhcls.data.hierarchy import make_consistent
from zhcls.data.long_text import LongText
from zhcls.data.tokenizer import Tokenizer
from zhcls.errors import ZhclsError
from zhcls.io import atomic_open

ROLES = ("query", "passage")  # a sentence encoder's prefixes (e5: "query: " / "passage: ")


def check_max_seq_length(max_seq_length: int, positions: int) -> int:
    """Every path (train, both predictors, export) refuses lengths the position table cannot embed, and
    lengths that leave no room for a token between [CLS] and [SEP]."""
    if max_seq_length > positions:
        raise ZhclsError(f"--max_seq_length {max_seq_length} exceeds the model's {positions} positions")
    if max_seq_length < 3:
        raise ZhclsError(f"--max_seq_length {max_seq_length}: must be >= 3 ([CLS], a token, [SEP])")
    return max_seq_length


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def check_threshold(value: float, what: str = "--threshold") -> float:
    if not 0.0 <= value <= 1.0:
        raise ZhclsError(f"{what} {value}: a threshold must be between 0 and 1")
    return float(value)


def choose_labels(probs: np.ndarray, thresholds, *, min_labels: int = 0, max_labels: int | None = None,
                  labels: list[str] | None = None, hierarchy_policy: str | None = None) -> np.ndarray:
    """Multi-label decisions (n, C) from probabilities: a label is chosen when its probability reaches its
    threshold (one for all, or one per class); then the ``min_labels`` best are chosen whatever their
    score, at most ``max_labels`` of the best are kept, and with a ``hierarchy_policy`` the paths are made
    consistent (which may add parents beyond ``max_labels``: a path is never returned broken)."""
    chosen = probs >= np.asarray(thresholds, dtype=np.float64)  # as tuned: float64, so ties fall alike
    if min_labels or max_labels is not None:
        rank = np.argsort(np.argsort(-probs, axis=1, kind="stable"), axis=1, kind="stable")  # 0 = best label
        if min_labels:
            chosen |= rank < min_labels
        if max_labels is not None:
            chosen &= rank < max_labels
    if hierarchy_policy is not None:
        chosen = make_consistent(chosen, labels, hierarchy_policy)
    return chosen


def pool_windows(logits: np.ndarray, owner: np.ndarray, n: int, how: str) -> np.ndarray:
    """The logits of ``n`` texts from those of their windows (``owner``: each window's text)."""
    if how == "max":
        out = np.full((n, logits.shape[1]), -np.inf, dtype=logits.dtype)
        np.maximum.at(out, owner, logits)
        return out
    out = np.zeros((n, logits.shape[1]), dtype=logits.dtype)
    np.add.at(out, owner, logits)
    return out / np.bincount(owner, minlength=n)[:, None].astype(logits.dtype)


class Predictor:
    """Texts in, labels and probabilities out, in input order. Subclasses implement `_forward`.

    Multi-label decisions use ``thresholds`` (a checkpoint's tuned ones: ``{"global": t, "per_class": [...]}``;
    default 0.5); hierarchical ones are made consistent with ``hierarchy_policy``. Texts longer than
    max_seq_length are cut by ``long_text`` (a `LongText`). All three come from the checkpoint's zhcls block
    (`meta_options`), so both backends decide alike."""

    def __init__(self, tokenizer: Tokenizer, labels: list[str], *, max_seq_length: int = 128,
                 batch_size: int = 32, problem_type: str = "multi_class", task: str = "text",
                 thresholds: dict | None = None, long_text: LongText | None = None,
                 hierarchy_policy: str = "add_parents", prefixes: dict | None = None, text_prefix: str = ""):
        if batch_size < 1:
            raise ZhclsError(f"--batch_size {batch_size}: must be >= 1")
        self.tokenizer, self.labels = tokenizer, list(labels)
        self.max_seq_length, self.batch_size = max_seq_length, batch_size
        self.problem_type, self.task = problem_type, task
        self.long_text = long_text or LongText()
        self.long_text.check(max_seq_length - 2)
        self.hierarchy_policy = hierarchy_policy
        self.thresholds = self._read_thresholds(thresholds or {})
        # A sentence encoder's instruction prefixes by role (e5: "query: " / "passage: "; none for other models),
        # and the one a classifier trained on prefixed texts reads (`zhcls fewshot`): both from the zhcls block.
        self.prefixes, self.text_prefix = dict(prefixes or {}), text_prefix

    @staticmethod
    def meta_options(meta: dict) -> dict:
        """The decision settings a checkpoint's zhcls block stores, as keyword arguments of `Predictor`."""
        return {"thresholds": meta.get("thresholds"), "long_text": LongText.from_meta(meta),
                "hierarchy_policy": meta.get("hierarchy_policy", "add_parents"), "prefixes": meta.get("prefixes"),
                "text_prefix": meta.get("text_prefix", "")}

    def _read_thresholds(self, stored: dict) -> np.ndarray:
        """Per-class thresholds: the tuned per-class ones, else the tuned global one, else 0.5."""
        per_class = stored.get("per_class")
        if per_class is None:
            return np.full(len(self.labels), check_threshold(stored.get("global", 0.5), "config.json zhcls.thresholds"))
        if len(per_class) != len(self.labels):
            raise ZhclsError(f"config.json zhcls.thresholds: {len(per_class)} per-class thresholds for "
                             f"{len(self.labels)} labels")
        return np.asarray([check_threshold(t, "config.json zhcls.thresholds") for t in per_class])

    def _forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _embed(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """The mean-pooled, L2-normalised sentence embeddings of a padded batch, (batch, embedding_size)."""
        raise NotImplementedError

    embedding_size: int = 0

    def logits(self, texts_a: list[str], texts_b: list[str] | None = None, progress: bool = False) -> np.ndarray:
        if self.text_prefix:
            texts_a = [self.text_prefix + t for t in texts_a]
        return self.run(self._forward, len(self.labels), texts_a, texts_b, progress)

    def embed(self, texts, role: str = "query", progress: bool = False) -> np.ndarray:
        """Sentence embeddings (n, embedding_size), unit length, in input order: the mean of the token states
        over the attention mask, each text given the model's prefix for ``role`` (query or passage) first.
        Windows of a long text (the sliding policy) are averaged, then normalised again."""
        if role not in ROLES:
            raise ZhclsError(f"--role {role}: choose one of {', '.join(ROLES)}")
        texts_a, texts_b = self._split(texts)
        if texts_b is not None:
            raise ZhclsError("embed() takes single texts, not (text_a, text_b) pairs")
        prefix = self.prefixes.get(role, "")
        vectors = self.run(self._embed, self.embedding_size, [prefix + t for t in texts_a], None, progress)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def run(self, forward, width: int, texts_a: list[str], texts_b: list[str] | None = None,
            progress: bool = False) -> np.ndarray:
        """``forward(padded batch) -> (batch, width)`` over the texts, in length-sorted batches, in input order.
        Long single texts are cut by the long-text policy and their windows' outputs pooled."""
        if texts_b is not None or self.long_text.policy == "truncate":
            enc = self.tokenizer.encode(list(texts_a), None if texts_b is None else list(texts_b), self.max_seq_length)
            return self._batched(forward, width, enc, progress)
        enc, owner = self.tokenizer.encode_long(texts_a, self.max_seq_length, self.long_text)
        return pool_windows(self._batched(forward, width, enc, progress), owner, len(texts_a), self.long_text.pooling)

    def _batched(self, forward, width: int, enc, progress: bool) -> np.ndarray:
        out = np.zeros((len(enc.input_ids), width), dtype=np.float32)
        batches = inference_batches([len(ids) for ids in enc.input_ids], self.batch_size)
        for idx in tqdm(batches, desc="predict", unit="batch", disable=not progress, leave=False):
            batch = self.tokenizer.pad([enc.input_ids[i] for i in idx], [enc.token_type_ids[i] for i in idx])
            out[idx] = forward(batch)
        return out

    def workload(self, texts) -> tuple[list[int], int]:
        """What predict(texts) will compute, before it does: the model inputs of each text (sliding
        windows count one each) and the tokens of all of them, [CLS] and [SEP] included."""
        texts_a, texts_b = self._split(texts)
        if texts_b is not None:  # pairs are cut longest-first to one input each
            lengths = self.tokenizer.lengths(texts_a + texts_b)
            pairs = zip(lengths[:len(texts_a)], lengths[len(texts_a):])
            return [1] * len(texts_a), sum(min(a + b, self.max_seq_length - 3) + 3 for a, b in pairs)
        budget = self.max_seq_length - 2
        windows, tokens = [], 0
        for n in self.tokenizer.lengths(texts_a):
            windows.append(self.long_text.windows(n, budget))
            tokens += windows[-1] * (min(n, budget) + 2)
        return windows, tokens

    def predict_proba(self, texts, progress: bool = False) -> np.ndarray:
        texts_a, texts_b = self._split(texts)
        logits = self.logits(texts_a, texts_b, progress)
        return softmax(logits) if self.problem_type == "multi_class" else sigmoid(logits)

    def decide(self, probs: np.ndarray, threshold: float | None = None, *, min_labels: int = 0,
               max_labels: int | None = None, hierarchy_policy: str | None = None) -> np.ndarray:
        """Multi-label decisions (n, C) for these probabilities: ``threshold`` overrides the stored ones."""
        if min_labels < 0 or (max_labels is not None and max_labels < max(min_labels, 1)):
            raise ZhclsError(f"--min_labels {min_labels} / --max_labels {max_labels}: need 0 <= min_labels <= "
                             "max_labels and max_labels >= 1")
        thresholds = self.thresholds if threshold is None else check_threshold(threshold)
        hierarchical = self.problem_type == "hierarchical"
        return choose_labels(probs, thresholds, min_labels=min_labels, max_labels=max_labels, labels=self.labels,
                             hierarchy_policy=(hierarchy_policy or self.hierarchy_policy) if hierarchical else None)

    def predict(self, texts, topk: int = 1, threshold: float | None = None, progress: bool = False, *,
                min_labels: int = 0, max_labels: int | None = None, hierarchy_policy: str | None = None) -> list[dict]:
        """One dict per text: ``label`` and ``score`` (multi-class: the top one) or ``labels`` and ``scores``
        (multi-label: the chosen labels, see `decide`); with topk > 1 also ``topk``, the k best
        (label, probability) pairs."""
        if topk < 1:
            raise ZhclsError(f"--topk {topk}: must be at least 1")
        probs = self.predict_proba(texts, progress)
        chosen = None if self.problem_type == "multi_class" else self.decide(
            probs, threshold, min_labels=min_labels, max_labels=max_labels, hierarchy_policy=hierarchy_policy)
        results = []
        for row, p in enumerate(probs):
            best = np.argsort(-p, kind="stable")[:topk]
            if chosen is None:
                r = {"label": self.labels[best[0]], "score": float(p[best[0]])}
            else:
                picked = np.flatnonzero(chosen[row])
                r = {"labels": [self.labels[i] for i in picked], "scores": [float(p[i]) for i in picked]}
            if topk > 1:
                r["topk"] = [(self.labels[i], float(p[i])) for i in best]
            results.append(r)
        return results

    def predict_iter(self, texts: Iterable, chunk_size: int = 4096, **options) -> Iterator[dict]:
        """`predict` over an iterable of any length, ``chunk_size`` texts at a time: memory bounded by a chunk
        (length-sorted batches inside it), results in input order as each chunk is done."""
        if chunk_size < 1:
            raise ZhclsError(f"--chunk_size {chunk_size}: must be >= 1")
        texts = iter(texts)
        while chunk := list(itertools.islice(texts, chunk_size)):
            yield from self.predict(chunk, **options)

    def _split(self, texts) -> tuple[list[str], list[str] | None]:
        if isinstance(texts, str):
            raise ZhclsError("predict() takes a list of texts (or of (text_a, text_b) pairs), not one string")
        texts = list(texts)
        pairs = [isinstance(t, (tuple, list)) for t in texts]
        if any(pairs) and not all(pairs):
            raise ZhclsError("predict(): mix of single texts and pairs in one call")
        if texts and all(pairs):
            if any(len(t) != 2 for t in texts):
                raise ZhclsError("predict(): a pair must have exactly two texts")
            return [a for a, _ in texts], [b for _, b in texts]
        return texts, None


def output_header(multi_label: bool, topk: int = 1) -> str:
    """The first line of `write_predictions`' format."""
    return ("text\tlabels\tscores" if multi_label else "text\tlabel\tconfidence") + ("\ttopk" if topk > 1 else "")


def format_prediction(text, result: dict) -> str:
    """One output line (no line end) of `write_predictions`' format for a text (or pair) and its result."""
    shown = "\t".join(text) if isinstance(text, (tuple, list)) else text
    if "labels" in result:
        line = f"{shown}\t{','.join(result['labels'])}\t{','.join(f'{s:.4f}' for s in result['scores'])}"
    else:
        line = f"{shown}\t{result['label']}\t{result['score']:.4f}"
    if "topk" in result:
        line += "\t" + " ".join(f"{label}:{score:.4f}" for label, score in result["topk"])
    return line


def prediction_row(text, result: dict) -> dict:
    """A text (or pair) and its result as one flat record (JSON lines, Ray Data, Parquet)."""
    pair = isinstance(text, (tuple, list))
    row = {"text": text[0], "text_pair": text[1]} if pair else {"text": text}
    row.update(result)
    if "topk" in row:
        row["topk"] = [{"label": label, "score": score} for label, score in row["topk"]]
    return row


def write_predictions(path, texts, results: list[dict], *, topk: int = 1) -> None:
    """PaddleNLP's predict.py output: a header, then one line per input: ``text<TAB>label<TAB>confidence``
    (multi-class) or ``text<TAB>label1,label2<TAB>score1,score2`` (multi-label, as PaddleNLP's multi_label
    predict). With topk > 1 a ``topk`` column follows: the k best ``label:score``, space-separated."""
    multi_label = bool(results) and "labels" in results[0]
    with atomic_open(path) as f:
        f.write(output_header(multi_label, topk) + "\n")
        for text, r in zip(texts, results):
            f.write(format_prediction(text, r) + "\n")
