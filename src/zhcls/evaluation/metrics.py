"""Evaluation metrics: accuracy, top-k, per-class P/R/F1, confusion matrix; for multi-label data also
subset accuracy, Hamming loss, per-level scores and the tuning of thresholds. Metrics only: their text
tables, plots and files are `report_files`.

numpy only; scikit-learn is not a dependency. Zero divisions give 0.0, as scikit-learn's
``zero_division=0``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from zhcls.data.hierarchy import inconsistent_paths, level
from zhcls.errors import ZhclsError


def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise num / den, 0.0 where den == 0."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _f1(tp: np.ndarray, n_true: np.ndarray, n_pred: np.ndarray) -> np.ndarray:
    # 2TP / (2TP + FP + FN) == 2PR / (P + R), without the 0/0 when TP == 0.
    return safe_div(2 * tp, n_true + n_pred)


def _check_probs(labels: list[str], probs: Any) -> np.ndarray:
    if not labels:
        raise ZhclsError("no labels")
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ZhclsError(f"probabilities have shape {probs.shape}, expected (n, {len(labels)}) for the labels")
    if probs.shape[0] == 0:
        raise ZhclsError("no examples to evaluate")
    if not np.isfinite(probs).all():
        raise ZhclsError("probabilities contain NaN or infinity")
    return probs


def check_single(labels: list[str], y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate single-label inputs; return (y_true as int64, probs as float)."""
    probs = _check_probs(labels, probs)
    y = np.asarray(y_true)
    if y.shape != (probs.shape[0],):
        raise ZhclsError(f"{y.size} gold labels for {probs.shape[0]} probability rows")
    if not np.issubdtype(y.dtype, np.integer):
        raise ZhclsError(f"gold labels must be class indices (integers), got {y.dtype}")
    if y.min() < 0 or y.max() >= len(labels):
        raise ZhclsError(f"gold label index out of range 0..{len(labels) - 1}")
    return y.astype(np.int64), probs


def _true_rank(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """0-based rank of the gold class in each row, highest probability first.

    Ties go to the lower class index, as ``argmax`` does, so rank 0 means "predicted" and
    top-1 accuracy equals accuracy.
    """
    p_true = probs[np.arange(len(y)), y][:, None]
    higher = (probs > p_true).sum(axis=1)
    tied_before = ((probs == p_true) & (np.arange(probs.shape[1]) < y[:, None])).sum(axis=1)
    return higher + tied_before


def _per_class(labels, precision, recall, f1, support, predicted) -> list[dict]:
    """One JSON-ready row per label."""
    return [{"label": label, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s),
             "predicted": int(k)} for label, p, r, f, s, k in zip(labels, precision, recall, f1, support, predicted)]


def classification_report(labels: list[str], y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Single-label report from gold class indices ``y_true`` (n,) and probabilities ``probs`` (n, C).

    The prediction is ``argmax`` (ties: lowest index). ``top{k}_accuracy`` is None when C <= k,
    where it would trivially be 1.0. Macro averages run over all C labels, including ones absent
    from ``y_true`` (like scikit-learn with ``labels=range(C)``).
    """
    y, probs = check_single(labels, y_true, probs)
    n, c = probs.shape
    pred = probs.argmax(axis=1)
    confusion = np.bincount(y * c + pred, minlength=c * c).reshape(c, c)
    tp = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = safe_div(tp, predicted)
    recall = safe_div(tp, support)
    f1 = _f1(tp, support, predicted)
    rank = _true_rank(y, probs)
    accuracy = float(tp.sum() / n)
    return {
        "n": int(n),
        "accuracy": accuracy,
        "top2_accuracy": float((rank < 2).mean()) if c > 2 else None,
        "top3_accuracy": float((rank < 3).mean()) if c > 3 else None,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        # With exactly one gold and one predicted label per example, every mistake is one FP and
        # one FN, so micro P = micro R = micro F1 = accuracy.
        "micro_f1": accuracy,
        "weighted_f1": float((f1 * support).sum() / n),
        "per_class": [{**row, "share": row["support"] / n}
                      for row in _per_class(labels, precision, recall, f1, support, predicted)],
        "confusion": confusion.tolist(),
    }


def _f1_scores(gold: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """micro / macro / weighted F1 of boolean label matrices (n, C); the scores thresholds are tuned for."""
    tp, support, predicted = (gold & pred).sum(axis=0), gold.sum(axis=0), pred.sum(axis=0)
    f1 = _f1(tp, support, predicted)
    return {"micro_f1": float(_f1(tp.sum(), support.sum(), predicted.sum())), "macro_f1": float(f1.mean()),
            "weighted_f1": float(safe_div((f1 * support).sum(), support.sum()))}


TUNABLE = ("micro_f1", "macro_f1", "weighted_f1")
THRESHOLD_GRID = np.round(np.arange(0.02, 0.99, 0.01), 2)


def tune_thresholds(y_true_multi_hot: np.ndarray, probs: np.ndarray, *, metric: str = "micro_f1",
                    min_support: int = 10) -> dict:
    """Multi-label thresholds tuned on dev for ``metric``: first the global one (a 0.02..0.98 grid), then per
    class, for classes with at least ``min_support`` dev positives (fewer would fit noise; the others keep
    the global one), the one that maximises ``metric`` with the other classes' thresholds held. For macro
    and weighted F1 that is the class's own best F1; micro-F1 couples the classes (a class's threshold is
    only lowered while its extra true positives outweigh the false positives it adds to the total), so
    the dev score never falls below the global threshold's. Ties go to the threshold nearest 0.5."""
    if metric not in TUNABLE:
        raise ZhclsError(f"--metric {metric}: thresholds are tuned for one of {', '.join(TUNABLE)}")
    gold = np.asarray(y_true_multi_hot).astype(bool)
    probs = np.asarray(probs, dtype=float)
    # Stable sort by distance to 0.5: among equal scores argmax then takes the threshold nearest 0.5.
    grid = THRESHOLD_GRID[np.argsort(np.abs(THRESHOLD_GRID - 0.5), kind="stable")]
    best = int(np.argmax([_f1_scores(gold, probs >= t)[metric] for t in grid]))
    pred = probs[:, :, None] >= grid  # (n, C, thresholds)
    tp, predicted = (gold[:, :, None] & pred).sum(axis=0), pred.sum(axis=0)  # (C, thresholds)
    support = gold.sum(axis=0)
    choice = np.full(len(support), best)
    tuned = np.flatnonzero(support >= min_support)
    if metric == "micro_f1":
        for c in tuned[np.argsort(-support[tuned], kind="stable")]:  # frequent classes move the total most
            rows = np.arange(len(support))
            tp_rest = tp[rows, choice].sum() - tp[c, choice[c]]
            pred_rest = predicted[rows, choice].sum() - predicted[c, choice[c]]
            choice[c] = np.argmax(_f1(tp_rest + tp[c], support.sum(), pred_rest + predicted[c]))
    else:
        choice[tuned] = np.argmax(_f1(tp[tuned], support[tuned, None], predicted[tuned]), axis=1)
    return {"global": float(grid[best]), "per_class": [float(grid[g]) for g in choice], "metric": metric,
            "min_support": int(min_support), "tuned_classes": len(tuned)}


def multilabel_report(labels: list[str], y_true_multi_hot: np.ndarray, probs: np.ndarray,
                      threshold: float | np.ndarray = 0.5, *, chosen: np.ndarray | None = None,
                      hierarchical: bool = False) -> dict:
    """Multi-label report. A label is predicted when its probability is >= ``threshold`` (one for all, or
    one per class), or as ``chosen`` says (a predictor's decisions: thresholds, min/max labels, hierarchy).

    Micro / macro / weighted P/R/F1, subset accuracy (every label of the example right), Hamming loss
    (share of wrong example-label cells), label cardinality (labels per example, gold and predicted),
    per-class P/R/F1 with support; hierarchical data adds the same per level and the broken paths."""
    probs = _check_probs(labels, probs)
    gold = np.asarray(y_true_multi_hot)
    if gold.shape != probs.shape:
        raise ZhclsError(f"multi-hot labels have shape {gold.shape}, probabilities {probs.shape}")
    if not np.isin(gold, (0, 1)).all():
        raise ZhclsError("multi-hot labels must be 0 or 1")
    gold = gold.astype(bool)
    pred = probs >= np.asarray(threshold) if chosen is None else np.asarray(chosen, dtype=bool)
    report = {"n": int(probs.shape[0])}
    if chosen is None:
        report["threshold" if np.ndim(threshold) == 0 else "thresholds"] = np.asarray(threshold, dtype=float).tolist()
    report.update(_label_scores(labels, gold, pred))
    if hierarchical:
        depth = np.asarray([level(label) for label in labels])
        report["levels"] = []
        for d in range(1, depth.max() + 1):
            cols = np.flatnonzero(depth == d)
            scores = _label_scores([labels[c] for c in cols], gold[:, cols], pred[:, cols])
            report["levels"].append({"level": d, "labels": len(cols),
                                     **{k: v for k, v in scores.items() if k != "per_class"}})
        report["inconsistent_paths"] = inconsistent_paths(pred, labels)
    return report


def _label_scores(labels: list[str], gold: np.ndarray, pred: np.ndarray) -> dict:
    tp, support, predicted = (gold & pred).sum(axis=0), gold.sum(axis=0), pred.sum(axis=0)
    precision, recall, f1 = safe_div(tp, predicted), safe_div(tp, support), _f1(tp, support, predicted)
    weights = safe_div(support, support.sum())
    return {
        "micro_precision": float(safe_div(tp.sum(), predicted.sum())),
        "micro_recall": float(safe_div(tp.sum(), support.sum())),
        "micro_f1": float(_f1(tp.sum(), support.sum(), predicted.sum())),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "weighted_precision": float((precision * weights).sum()),
        "weighted_recall": float((recall * weights).sum()),
        "weighted_f1": float((f1 * weights).sum()),
        "subset_accuracy": float((gold == pred).all(axis=1).mean()),
        "hamming_loss": float((gold != pred).mean()),
        "label_cardinality": float(gold.sum(axis=1).mean()),
        "predicted_cardinality": float(pred.sum(axis=1).mean()),
        "empty_predictions": int((~pred.any(axis=1)).sum()),
        "per_class": _per_class(labels, precision, recall, f1, support, predicted),
    }


def headline(labels: list[str], y_true: np.ndarray, probs: np.ndarray, problem_type: str) -> float:
    """The one number a model is judged by on dev: accuracy (single-label) or micro-F1 (multi-label), in points."""
    if problem_type == "multi_class":
        return 100 * classification_report(labels, y_true, probs)["accuracy"]
    return 100 * multilabel_report(labels, y_true, probs)["micro_f1"]
