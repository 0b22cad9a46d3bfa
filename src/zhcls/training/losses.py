"""Classification losses for imbalanced classes: class weights and focal loss.

- multi_class: cross-entropy (``ce``) or focal loss (``focal``, Lin et al. 2017: ``(1 - p_t)^gamma`` down-weights
  the examples the model already gets right), with per-class weights;
- multi_label / hierarchical: binary cross-entropy per label, or its focal form, with per-class
  ``pos_weight`` (how much a positive of that label counts against a negative).

``--class_weights``: ``none``; ``balanced`` (multi-class: n / (C * count_c), scikit-learn's rule;
multi-label: negatives / positives of each label, the rule torch's BCEWithLogitsLoss documents; a label
without positives gets 1); or a FILE of ``label<TAB>weight`` lines (labels not listed weigh 1).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from zhcls import data
from zhcls.errors import ZhclsError, data_error
from zhcls.training.config import LOSSES


def class_weights(spec: str, labels: list[str], targets: np.ndarray, problem_type: str) -> np.ndarray | None:
    """The per-class weights ``--class_weights`` asks for, from the training targets (None: unweighted)."""
    if spec == "none":
        return None
    if spec == "balanced":
        if problem_type == "multi_class":
            counts = np.bincount(targets, minlength=len(labels)).astype(np.float64)
            return np.where(counts > 0, len(targets) / (len(labels) * np.maximum(counts, 1)), 1.0)
        positives = targets.sum(axis=0).astype(np.float64)
        return np.where(positives > 0, (len(targets) - positives) / np.maximum(positives, 1), 1.0)
    return read_class_weights(spec, labels)


def read_class_weights(path, labels: list[str]) -> np.ndarray:
    """A ``label<TAB>weight`` file: each label of label.txt at most once, weights positive numbers."""
    index = {label: i for i, label in enumerate(labels)}
    weights = np.ones(len(labels))
    seen: dict[str, int] = {}
    for number, line in enumerate(data.read_lines(path), 1):
        if not line.strip():
            continue
        label, tab, value = line.rpartition("\t")
        if not tab:
            raise data_error(path, number, "expected label<TAB>weight")
        if label not in index:
            raise data_error(path, number, f"label {label!r} is not in label.txt")
        if label in seen:
            raise data_error(path, number, f"label {label!r} is listed twice (first on line {seen[label]})")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not np.isfinite(weight) or weight <= 0:
            raise data_error(path, number, f"weight {value!r} is not a positive number")
        seen[label] = number
        weights[index[label]] = weight
    return weights


def classification_loss(logits: torch.Tensor, target: torch.Tensor, *, multi_class: bool, loss: str = "ce",
                        weights: torch.Tensor | None = None, gamma: float = 2.0) -> torch.Tensor:
    """The loss SUMMED over the examples of the batch (multi-label: averaged over the labels of each)."""
    if loss not in LOSSES:
        raise ZhclsError(f"--loss {loss}: choose one of {', '.join(LOSSES)}")
    if multi_class:
        ce = F.cross_entropy(logits, target, weight=weights, reduction="none")
        if loss == "focal":
            p_true = torch.softmax(logits, -1).gather(1, target[:, None]).squeeze(1)
            ce = (1 - p_true) ** gamma * ce
        return ce.sum()
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weights, reduction="none")
    if loss == "focal":
        p = torch.sigmoid(logits)
        p_true = torch.where(target > 0.5, p, 1 - p)
        bce = (1 - p_true) ** gamma * bce
    return bce.sum() / target.shape[1]
