"""The files and text of evaluation reports: fixed-width tables (CJK-aware), the confusion matrix as text
and PNG, bad-case files, JSON. The numbers come from `metrics`; this module only shows and writes them.

matplotlib is imported inside :func:`plot_confusion` only, so that importing this module stays fast.
"""
from __future__ import annotations

import functools
import json
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from zhcls.errors import ZhclsError
from zhcls.evaluation.metrics import check_single, safe_div
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
    share = safe_div(confusion, confusion.sum(axis=1, keepdims=True))
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
    y, probs = check_single(labels, y_true, probs)
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
