"""Evaluation metrics and reports: accuracy, top-k, per-class P/R/F1, confusion matrix, bad cases; for
multi-label data also subset accuracy, Hamming loss, per-level scores and the tuning of thresholds.

numpy only; scikit-learn is not a dependency. Zero divisions give 0.0, as scikit-learn's
``zero_division=0``. matplotlib is imported inside :func:`plot_confusion` only, so that importing
this module (and ``zhcls --help``) stays fast.
"""
from __future__ import annotations

import functools
import json
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from zhcls.data.hierarchy import inconsistent_paths, level
from zhcls.errors import ZhclsError
from zhcls.io import atomic_open, atomic_path

# Fonts tried first when looking for one that can draw the labels; any other installed font that
# covers them is used too. Names are matplotlib family names.
_PREFERRED_FONTS = (
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN",
    "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Microsoft YaHei", "SimHei", "PingFang SC",
    "Heiti SC", "Hiragino Sans GB", "Droid Sans Fallback", "AR PL UMing CN", "Arial Unicode MS",
)
# matplotlib ships this font: it maps every code point to a placeholder glyph, i.e. tofu boxes.
_TOFU_FONTS = ("Last Resort",)
# A tab or line break inside a bad-case text would shift its columns or split its line.
_ONE_LINE = str.maketrans({"\t": " ", "\n": " ", "\r": " "})


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise num / den, 0.0 where den == 0."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _f1(tp: np.ndarray, n_true: np.ndarray, n_pred: np.ndarray) -> np.ndarray:
    # 2TP / (2TP + FP + FN) == 2PR / (P + R), without the 0/0 when TP == 0.
    return _safe_div(2 * tp, n_true + n_pred)


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


def _check_single(labels: list[str], y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
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
    y, probs = _check_single(labels, y_true, probs)
    n, c = probs.shape
    pred = probs.argmax(axis=1)
    confusion = np.bincount(y * c + pred, minlength=c * c).reshape(c, c)
    tp = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
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
            "weighted_f1": float(_safe_div((f1 * support).sum(), support.sum()))}


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
    precision, recall, f1 = _safe_div(tp, predicted), _safe_div(tp, support), _f1(tp, support, predicted)
    weights = _safe_div(support, support.sum())
    return {
        "micro_precision": float(_safe_div(tp.sum(), predicted.sum())),
        "micro_recall": float(_safe_div(tp.sum(), support.sum())),
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


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: CJK (wide/full-width) characters take two."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def _ljust(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))


def format_report(report: dict, title: str = "") -> str:
    """Fixed-width text table of a single- or multi-label report: summary lines, then one row per class."""
    summary = [
        ("n", "n", "{}"), ("accuracy", "accuracy", "{:.4f}"), ("top2_accuracy", "top-2", "{:.4f}"),
        ("top3_accuracy", "top-3", "{:.4f}"), ("threshold", "threshold", "{:g}"),
        ("micro_precision", "micro P", "{:.4f}"), ("micro_recall", "micro R", "{:.4f}"),
        ("micro_f1", "micro F1", "{:.4f}"), ("macro_precision", "macro P", "{:.4f}"),
        ("macro_recall", "macro R", "{:.4f}"), ("macro_f1", "macro F1", "{:.4f}"),
        ("weighted_f1", "weighted F1", "{:.4f}"), ("subset_accuracy", "subset acc", "{:.4f}"),
        ("hamming_loss", "Hamming", "{:.4f}"), ("label_cardinality", "labels/text", "{:.2f}"),
        ("predicted_cardinality", "predicted/text", "{:.2f}"), ("inconsistent_paths", "broken paths", "{}"),
    ]
    pairs = [(name, fmt.format(report[key])) for key, name, fmt in summary if report.get(key) is not None]
    lines = [title] if title else []
    # Four metrics a line keeps the summary within 80 columns.
    for start in range(0, len(pairs), 4):
        lines.append("   ".join(f"{name} = {value}" for name, value in pairs[start:start + 4]))

    for row in report.get("levels", ()):
        lines.append(f"level {row['level']} ({row['labels']} labels): micro F1 = {row['micro_f1']:.4f}   "
                     f"macro F1 = {row['macro_f1']:.4f}   subset acc = {row['subset_accuracy']:.4f}")
    rows = report["per_class"]
    has_share = "share" in rows[0]
    width = max(display_width("label"), *(display_width(r["label"]) for r in rows))
    header = (f"{_ljust('label', width)}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>9}"
              + (f"  {'share':>6}" if has_share else "") + f"  {'predicted':>9}")
    lines += ["", header, "-" * display_width(header)]
    for r in rows:
        share = f"  {r['share']:6.1%}" if has_share else ""
        lines.append(f"{_ljust(r['label'], width)}  {r['precision']:9.4f}  {r['recall']:9.4f}  {r['f1']:9.4f}  "
                     f"{r['support']:9d}{share}  {r['predicted']:9d}")
    return "\n".join(lines) + "\n"


def format_confusion(report: dict) -> str:
    """Text confusion matrix (rows = true, columns = predicted) by label index, with a legend."""
    confusion = np.asarray(report["confusion"])
    c = len(confusion)
    cell = max(len(str(confusion.max())), len(str(c - 1))) + 2
    corner = "true\\pred"
    lines = ["confusion matrix (rows = true, columns = predicted)",
             corner + "".join(str(j).rjust(cell) for j in range(c))]
    for i, row in enumerate(confusion):
        lines.append(str(i).rjust(len(corner)) + "".join(str(v).rjust(cell) for v in row))
    lines += ["", "legend:"]
    lines += [f"{str(i).rjust(len(str(c - 1)))}  {r['label']}" for i, r in enumerate(report["per_class"])]
    return "\n".join(lines) + "\n"


@functools.cache
def _font_covering(chars: str) -> str | None:
    """Family name of an installed font that has a glyph for every character in ``chars``, or None."""
    from matplotlib import font_manager, ft2font, rcParams

    preferred = [*rcParams["font.sans-serif"], *_PREFERRED_FONTS]
    entries = sorted(
        (e for e in font_manager.fontManager.ttflist if not e.name.startswith(_TOFU_FONTS)),
        key=lambda e: preferred.index(e.name) if e.name in preferred else len(preferred),
    )
    needed = {ord(ch) for ch in chars if not ch.isspace()}
    for entry in entries:
        try:
            charmap = ft2font.FT2Font(entry.fname).get_charmap()
        except (OSError, RuntimeError, ValueError):
            continue  # an unreadable font file must not break plotting
        if needed <= charmap.keys():
            return entry.name
    return None


def plot_confusion(report: dict, path: str | Path) -> Path:
    """Write the confusion matrix as a PNG heat map: counts in the cells, colour = share of the true class.

    Labels are drawn with an installed font that covers them. Without one (typically no CJK font)
    the axes show label indices instead of tofu boxes; the legend is then in :func:`format_confusion`
    and in the PNG's ``Description`` metadata.
    """
    if "confusion" not in report:
        raise ZhclsError("this report has no confusion matrix (multi-label reports have none)")
    from matplotlib import rc_context, rcParams
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    confusion = np.asarray(report["confusion"])
    labels = [r["label"] for r in report["per_class"]]
    c = len(labels)
    font = _font_covering("".join(sorted(set("".join(labels)))))  # canonical string: one cache entry per label set
    ticks = labels if font else [str(i) for i in range(c)]
    share = _safe_div(confusion, confusion.sum(axis=1, keepdims=True))
    legend = "\n".join(f"{i}: {label}" for i, label in enumerate(labels))

    rc = {"font.sans-serif": [font, *rcParams["font.sans-serif"]], "font.family": "sans-serif"} if font else {}
    size = min(4.0 + 0.6 * c, 30.0)
    with rc_context(rc):
        fig = Figure(figsize=(size + 1.5, size), layout="constrained")
        FigureCanvasAgg(fig)  # Agg, without touching pyplot's global backend
        ax = fig.add_subplot()
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        fig.colorbar(image, ax=ax, label="share of true class")
        for i in range(c):
            for j in range(c):
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=max(6, 12 - c // 4),
                        color="white" if share[i, j] > 0.5 else "black")
        ax.set_xticks(range(c), ticks, rotation=45 if font else 0, ha="right" if font else "center",
                      rotation_mode="anchor")
        ax.set_yticks(range(c), ticks)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        title = f"n = {report['n']}, accuracy = {report['accuracy']:.4f}"
        if not font:
            title += "\n(no font for the labels: classes by index, see the text legend)"
        ax.set_title(title)
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, metadata={"Description": legend})
    return path


def write_bad_cases(path: str | Path, texts: list[str], labels: list[str], y_true: np.ndarray,
                    probs: np.ndarray) -> int:
    """Write misclassified examples, most confident mistakes first; return how many.

    PaddleNLP's bad-case format: a ``Confidence\\tPrediction\\tLabel\\tText`` header, then one
    tab-separated line per mistake, confidence being the predicted class's probability.
    """
    y, probs = _check_single(labels, y_true, probs)
    if len(texts) != len(y):
        raise ZhclsError(f"{len(texts)} texts for {len(y)} examples")
    pred = probs.argmax(axis=1)
    confidence = probs[np.arange(len(y)), pred]
    wrong = np.flatnonzero(pred != y)
    # Stable sort: equally confident mistakes keep their input order.
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")]
    with atomic_open(path, "w") as f:
        f.write("Confidence\tPrediction\tLabel\tText\n")
        for i in wrong:
            text = texts[i].translate(_ONE_LINE)
            f.write(f"{confidence[i]:.4f}\t{labels[pred[i]]}\t{labels[y[i]]}\t{text}\n")
    return len(wrong)


def write_multilabel_bad_cases(path: str | Path, texts: list[str], labels: list[str], y_true_multi_hot: np.ndarray,
                               chosen: np.ndarray) -> int:
    """Write the examples whose label set is wrong, most wrong labels first; return how many.

    ``Missing<TAB>Extra<TAB>Prediction<TAB>Label<TAB>Text``: the gold labels not predicted, the predicted
    labels not gold, then both sets in full (comma-separated, as in the data files)."""
    gold, pred = np.asarray(y_true_multi_hot).astype(bool), np.asarray(chosen, dtype=bool)
    if len(texts) != len(gold) or gold.shape != pred.shape:
        raise ZhclsError(f"{len(texts)} texts, gold {gold.shape}, predictions {pred.shape}")
    errors = (gold != pred).sum(axis=1)
    wrong = np.flatnonzero(errors)
    wrong = wrong[np.argsort(-errors[wrong], kind="stable")]

    def names(mask) -> str:
        return ",".join(labels[i] for i in np.flatnonzero(mask))

    with atomic_open(path, "w") as f:
        f.write("Missing\tExtra\tPrediction\tLabel\tText\n")
        for i in wrong:
            f.write(f"{names(gold[i] & ~pred[i])}\t{names(pred[i] & ~gold[i])}\t{names(pred[i])}\t{names(gold[i])}\t"
                    f"{texts[i].translate(_ONE_LINE)}\n")
    return len(wrong)


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays slip into reports easily; write them as plain numbers and lists.
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as UTF-8 JSON (Chinese kept readable), atomically."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2, default=_json_default)
        f.write("\n")
