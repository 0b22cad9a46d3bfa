"""Batch prediction. `zhcls.load(path).predict(["text", ...])` is the whole API.

The `Predictor` base class owns tokenisation, length-sorted batching and restoring input order;
backends (`torch_predictor`, `onnx_predictor`) only turn a padded batch into logits. This module
imports no torch, so the ONNX backend runs in a deployment image without it.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from zhcls.data.batching import inference_batches
from zhcls.data.tokenizer import Tokenizer
from zhcls.errors import ZhclsError
from zhcls.io import atomic_open


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


class Predictor:
    """Texts in, labels and probabilities out, in input order. Subclasses implement `_forward`."""

    def __init__(self, tokenizer: Tokenizer, labels: list[str], *, max_seq_length: int = 128,
                 batch_size: int = 32, problem_type: str = "multi_class", task: str = "text"):
        self.tokenizer, self.labels = tokenizer, list(labels)
        self.max_seq_length, self.batch_size = max_seq_length, batch_size
        self.problem_type, self.task = problem_type, task

    def _forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def logits(self, texts_a: list[str], texts_b: list[str] | None = None, progress: bool = False) -> np.ndarray:
        return self.run(self._forward, len(self.labels), texts_a, texts_b, progress)

    def run(self, forward, width: int, texts_a: list[str], texts_b: list[str] | None = None,
            progress: bool = False) -> np.ndarray:
        """``forward(padded batch) -> (batch, width)`` over the texts, in length-sorted batches, in input order."""
        enc = self.tokenizer.encode(list(texts_a), None if texts_b is None else list(texts_b), self.max_seq_length)
        out = np.zeros((len(texts_a), width), dtype=np.float32)
        batches = inference_batches([len(ids) for ids in enc.input_ids], self.batch_size)
        for idx in tqdm(batches, desc="predict", unit="batch", disable=not progress, leave=False):
            batch = self.tokenizer.pad([enc.input_ids[i] for i in idx], [enc.token_type_ids[i] for i in idx])
            out[idx] = forward(batch)
        return out

    def predict_proba(self, texts, progress: bool = False) -> np.ndarray:
        texts_a, texts_b = self._split(texts)
        logits = self.logits(texts_a, texts_b, progress)
        return softmax(logits) if self.problem_type == "multi_class" else sigmoid(logits)

    def predict(self, texts, topk: int = 1, threshold: float = 0.5, progress: bool = False) -> list[dict]:
        """One dict per text: ``label`` and ``score`` (multi-class: the top one, plus ``topk`` pairs when
        topk > 1) or ``labels`` and ``scores`` (multi-label: every label above ``threshold``)."""
        probs = self.predict_proba(texts, progress)
        results = []
        for p in probs:
            if self.problem_type == "multi_class":
                best = np.argsort(-p, kind="stable")[:max(topk, 1)]
                r = {"label": self.labels[best[0]], "score": float(p[best[0]])}
                if topk > 1:
                    r["topk"] = [(self.labels[i], float(p[i])) for i in best]
            else:
                chosen = np.flatnonzero(p >= threshold)
                r = {"labels": [self.labels[i] for i in chosen], "scores": [float(p[i]) for i in chosen]}
            results.append(r)
        return results

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


def write_predictions(path, texts, results: list[dict], *, topk: int = 1) -> None:
    """PaddleNLP's predict.py output: one line per input, ``text<TAB>label<TAB>confidence``.
    With topk > 1, the k labels and confidences follow as ``label:score`` fields."""
    with atomic_open(path) as f:
        f.write("text\tlabel\tconfidence" + ("\ttopk" if topk > 1 else "") + "\n")
        for text, r in zip(texts, results):
            shown = "\t".join(text) if isinstance(text, (tuple, list)) else text
            if "label" in r:
                line = f"{shown}\t{r['label']}\t{r['score']:.4f}"
                if topk > 1:
                    line += "\t" + " ".join(f"{label}:{score:.4f}" for label, score in r["topk"])
            else:
                line = f"{shown}\t{','.join(r['labels'])}\t{','.join(f'{s:.4f}' for s in r['scores'])}"
            f.write(line + "\n")
