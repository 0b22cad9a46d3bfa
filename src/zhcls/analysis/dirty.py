"""`zhcls analyze dirty`: rank training rows by how likely their label is wrong (confident learning).

Each row gets class probabilities it did not train on: out-of-fold predictions of the TF-IDF baseline
(k folds, so the whole folder is enough), and/or a trained checkpoint's own predictions. As in confident
learning (Northcutt et al., 2021), each class's threshold is its rows' mean probability for it; a row is
suspicious when another class clears its threshold while the given label's probability is low. Rows are
ranked by the normalised margin p(given) - max p(other) (most negative first). The default number of
rows flagged is confident learning's estimate of the noisy rows. Writes, as PaddleNLP does:
``train_dirty.txt`` (most suspicious first, with the suggested label and its probability) and
``train_clean.txt`` (the other rows, a dataset file to train on).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from zhcls import data
from zhcls.errors import ZhclsError
from zhcls.evaluation.baseline import Baseline, require_sklearn
from zhcls.io import atomic_open, check_output_files

log = logging.getLogger("zhcls")

METHODS = ("oof", "model", "both")


@dataclass
class DirtyResult:
    order: np.ndarray  # training row indices, most suspicious first
    suggested: np.ndarray  # suggested class id per training row
    probs: np.ndarray  # (n, C) the probabilities the ranking used
    estimated_noisy: int  # confident learning's count of rows whose label another class claims
    dirty: np.ndarray  # the flagged rows (a prefix of ``order``)
    dirty_path: Path | None = None
    clean_path: Path | None = None


def out_of_fold_probs(examples, labels: list[str], folds: int = 5, seed: int = 0, progress: bool = True) -> np.ndarray:
    """Probabilities of each row from a baseline trained on the other folds (stratified)."""
    require_sklearn()
    from sklearn.model_selection import StratifiedKFold

    y = data.encode_labels(examples, labels, "multi_class")
    # Stratify on classes with enough rows for every fold; the rarest go in as one group.
    counts = np.bincount(y, minlength=len(labels))
    strata = np.where(counts[y] >= folds, y, -1)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs = np.zeros((len(examples), len(labels)), dtype=np.float32)
    for fit_idx, held_idx in tqdm(list(splitter.split(np.zeros(len(y)), strata)), desc="out-of-fold", unit="fold",
                                  disable=not progress, leave=False):
        model = Baseline(labels).fit([examples[i] for i in fit_idx])
        probs[held_idx] = model.predict_proba([examples[i] for i in held_idx])
    return probs


def rank_dirty(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Confident learning on given labels ``y`` and probabilities: (order, suggested class, estimated noisy rows)."""
    n, c = probs.shape
    thresholds = np.full(c, np.inf)
    for k in np.unique(y):
        thresholds[k] = probs[y == k, k].mean()
    # The confident joint: the most probable class among those that clear their own threshold.
    above = np.where(probs >= thresholds, probs, -1.0)
    confident = above.argmax(axis=1)
    claimed = above.max(axis=1) >= 0
    estimated = int((claimed & (confident != y)).sum())
    rows = np.arange(n)
    others = probs.copy()
    others[rows, y] = -np.inf
    best_other = others.argmax(axis=1)
    margin = probs[rows, y] - probs[rows, best_other]
    order = np.argsort(margin, kind="stable")
    suggested = np.where(claimed & (confident != y), confident, best_other)
    return order, suggested, estimated


def analyze_dirty(dataset_dir, *, params_path=None, method: str | None = None, dirty_num: int | None = None,
                  output_dir=None, train_file="train.txt", label_file="label.txt", folds: int = 5, seed: int = 0,
                  device: str = "auto", batch_size: int = 32, max_seq_length: int | None = None,
                  progress: bool = True) -> DirtyResult:
    """Flag the training rows most likely mislabelled and write train_dirty.txt / train_clean.txt.

    ``method``: "oof" (out-of-fold baseline), "model" (the checkpoint's predictions), "both" (their mean);
    default "both" with ``params_path``, else "oof".
    """
    method = method or ("both" if params_path else "oof")
    if method not in METHODS:
        raise ZhclsError(f"--method {method}: choose one of {', '.join(METHODS)}")
    if method != "oof" and not params_path:
        raise ZhclsError(f"--method {method} needs --params_path (a trained checkpoint)")
    if folds < 2:
        raise ZhclsError("--folds must be at least 2")
    ds = data.load_dataset(dataset_dir, train_file=train_file, label_file=label_file, require=("train",))
    out = Path(output_dir or dataset_dir)
    check_output_files([out / "train_dirty.txt", out / "train_clean.txt"], flag="--output_dir",
                       inputs=[Path(dataset_dir) / train_file, Path(dataset_dir) / label_file])
    if ds.problem_type != "multi_class":
        raise ZhclsError("analyze dirty handles single-label (multi_class) data")
    if dirty_num is not None and not 0 < dirty_num <= len(ds.train):
        raise ZhclsError(f"--dirty_num {dirty_num}: must be between 1 and the {len(ds.train)} training rows")
    predictor = None
    if method != "oof":
        from zhcls.analysis.model_view import checked_predictor

        predictor = checked_predictor(params_path, ds, device=device, batch_size=batch_size,
                                      max_seq_length=max_seq_length, label_file=label_file)
    views = []
    if method in ("oof", "both"):
        views.append(out_of_fold_probs(ds.train, ds.labels, folds, seed, progress))
    if predictor is not None:
        views.append(predictor.predict_proba(data.predictor_inputs(ds.train), progress=progress))
    probs = np.mean(views, axis=0)
    y = data.encode_labels(ds.train, ds.labels, "multi_class")
    order, suggested, estimated = rank_dirty(y, probs)
    count = dirty_num or max(estimated, 1)
    result = DirtyResult(order, suggested, probs, estimated, order[:count])

    result.dirty_path, result.clean_path = out / "train_dirty.txt", out / "train_clean.txt"
    _write_dirty(result.dirty_path, ds, result)
    flagged = set(result.dirty.tolist())
    data.write_examples(result.clean_path, [e for i, e in enumerate(ds.train) if i not in flagged])
    log.info("confident learning estimates %d mislabelled rows of %d; flagged %d (%s)", estimated, len(ds.train),
             count, method)
    return result


def _write_dirty(path: Path, ds: data.DatasetFolder, result: DirtyResult) -> None:
    header = ["text_a", "text_b"] if ds.task == "pair" else ["text"]
    with atomic_open(path) as f:
        f.write("\t".join(header + ["label", "suggested", "confidence", "line"]) + "\n")
        for i in result.dirty:
            e, k = ds.train[i], result.suggested[i]
            f.write(f"{data.format_example(e)}\t{ds.labels[k]}\t{result.probs[i, k]:.4f}\t{e.line}\n")
