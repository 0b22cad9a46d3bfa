"""Sentence vectors and nearest neighbours, for `analyze sparse` and `explain`'s supporting examples.

Two views of a text: the TF-IDF baseline's features (from the dataset folder alone) or a trained
checkpoint's sentence features (what its classifier head reads). Both are L2-normalised, so a dot
product is the cosine similarity.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zhcls import data
from zhcls.evaluation.baseline import Baseline


class SentenceSpace:
    """Maps examples to unit vectors: the baseline's TF-IDF (fitted on ``fit_on``), or ``predictor``'s features."""

    def __init__(self, ds: data.DatasetFolder, fit_on: Sequence[data.Example], predictor=None):
        self.predictor = predictor
        if predictor is None:
            self.tfidf = Baseline(ds.labels, ds.problem_type)
            self.tfidf.vectorizer = self.tfidf.make_vectorizer(fit_on)

    @property
    def name(self) -> str:
        return "TF-IDF" if self.predictor is None else "model features"

    def encode(self, examples: Sequence[data.Example], progress: bool = False):
        from sklearn.preprocessing import normalize

        if self.predictor is None:
            return normalize(self.tfidf.features(examples))
        return normalize(self.predictor.sentence_features(data.predictor_inputs(examples), progress=progress))


def similarities(queries, base, chunk: int = 1024) -> np.ndarray:
    """Dense cosine similarities (len(queries), len(base)) of unit vectors (sparse or dense), chunked."""
    out = np.empty((queries.shape[0], base.shape[0]), dtype=np.float32)
    for start in range(0, queries.shape[0], chunk):
        block = queries[start:start + chunk] @ base.T
        out[start:start + chunk] = block.toarray() if hasattr(block, "toarray") else block
    return out


def top_k_mean(sims: np.ndarray, k: int) -> np.ndarray:
    """Per row, the mean of its ``k`` largest entries (fewer when the row is shorter)."""
    k = min(k, sims.shape[1])
    if k == 0:
        return np.zeros(sims.shape[0], dtype=np.float32)
    return np.partition(sims, -k, axis=1)[:, -k:].mean(axis=1)
