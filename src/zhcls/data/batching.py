"""Batches grouped by length: real texts are short, so padding each batch to its own longest text
(not to max_seq_length) is the biggest speed lever there is. Torch-free (the ONNX path uses it)."""
from __future__ import annotations

import numpy as np


def inference_batches(lengths, batch_size: int) -> list[np.ndarray]:
    """Indices sorted by length (longest first, so memory peaks early), cut into batches.
    The caller writes results back through these indices, which restores input order."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def training_batches(lengths, batch_size: int, rng: np.random.Generator, group: int = 50) -> list[np.ndarray]:
    """Shuffled batches of similar length: shuffle, sort within windows of ``group`` batches,
    cut, then shuffle the batch order. Randomness stays, padding mostly goes."""
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    window = batch_size * group
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
