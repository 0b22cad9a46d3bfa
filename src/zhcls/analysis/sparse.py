"""`zhcls analyze sparse`: dev examples the training data barely supports, and what to add for them.

A dev example's support is the mean similarity of its sentence vector to its ``support_k`` nearest
training rows of its own class (TF-IDF vectors from the folder alone, or a checkpoint's sentence
features with ``params_path``). The ``sparse_num`` least supported dev examples are written to
``sparse.txt`` (a dataset file) with a per-class summary. Then, as PaddleNLP's sparse.py:

- ``strategy="augment"``: the training rows nearest to those examples (``support_num`` of them, same
  class) go to ``support.txt``, and ``train_sparse_aug.txt`` is train plus their augmented copies;
- ``strategy="annotate"``: ``annotate_num`` rows of the unlabelled ``data.txt`` that cover the sparse
  examples (each sparse example's nearest row in turn, then its second nearest, ...) go to
  ``support.txt``, for a person to label and add to train.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zhcls import data
from zhcls.analysis.similarity import SentenceSpace, similarities, top_k_mean
from zhcls.errors import ZhclsError
from zhcls.evaluation import report_files
from zhcls.io import atomic_open, check_output_files

log = logging.getLogger("zhcls")

STRATEGIES = ("augment", "annotate")


@dataclass
class SparseResult:
    support: np.ndarray  # support score of every dev example
    sparse: np.ndarray  # dev indices, least supported first
    classes: dict  # label -> number of sparse dev examples
    sparse_path: Path
    support_path: Path | None = None
    train_aug_path: Path | None = None
    picked: list = field(default_factory=list)  # support rows: training indices (augment) or data.txt rows (annotate)


def nearest_in_turn(sims: np.ndarray, k: int) -> list[int]:
    """Up to ``k`` distinct columns of ``sims`` (targets x candidates): each target's nearest candidate in turn,
    then each one's second nearest, and so on; candidates with no positive similarity are never picked."""
    nearest = np.argsort(-sims, axis=1, kind="stable")
    picked: dict[int, None] = {}  # insertion-ordered set
    for rank in range(nearest.shape[1]):
        for target, i in enumerate(nearest[:, rank]):
            if len(picked) < k and sims[target, i] > 0:
                picked.setdefault(int(i))
        if len(picked) >= k:
            break
    return list(picked)


def analyze_sparse(dataset_dir, *, params_path=None, strategy: str | None = None, sparse_num: int = 100,
                   support_num: int = 100, annotate_num: int = 100, support_k: int = 5, output_dir=None,
                   train_file="train.txt", dev_file="dev.txt", label_file="label.txt", unlabeled_file="data.txt",
                   aug_strategy: str = "mix", create_n: int = 2, aug_percent: float = 0.1, seed: int = 0,
                   device: str = "auto", batch_size: int = 32, max_seq_length: int | None = None,
                   progress: bool = True) -> SparseResult:
    """Score every dev example's support, write sparse.txt, then apply ``strategy`` (see the module doc)."""
    if strategy not in (None,) + STRATEGIES:
        raise ZhclsError(f"--strategy {strategy}: choose one of {', '.join(STRATEGIES)}")
    for flag, value in (("--sparse_num", sparse_num), ("--support_num", support_num),
                        ("--annotate_num", annotate_num), ("--support_k", support_k)):
        if value < 1:
            raise ZhclsError(f"{flag} {value}: must be at least 1")
    ds = data.load_dataset(dataset_dir, train_file=train_file, dev_file=dev_file, label_file=label_file)
    out = Path(output_dir or dataset_dir)
    root = Path(dataset_dir)
    check_output_files([out / name for name in ("sparse.txt", "sparse_report.json", "support.txt",
                                                "train_sparse_aug.txt")], flag="--output_dir",
                       inputs=[root / name for name in (train_file, dev_file, label_file, unlabeled_file)])
    if ds.problem_type != "multi_class":
        raise ZhclsError("analyze sparse handles single-label (multi_class) data")
    pool = None
    if strategy == "annotate":  # read before any model is loaded: fail fast on an empty or missing file
        pool = data.read_texts(root / unlabeled_file, ds.task)
    if strategy == "augment":
        from zhcls.analysis.augment import Augmenter

        augmenter = Augmenter(aug_strategy, aug_percent=aug_percent, seed=seed)  # checks the flags first
    predictor = None
    if params_path:
        from zhcls.analysis.model_view import checked_predictor

        predictor = checked_predictor(params_path, ds, device=device, batch_size=batch_size,
                                      max_seq_length=max_seq_length, label_file=label_file)
    space = SentenceSpace(ds, ds.train + ds.dev + (pool or []), predictor)
    train_vecs, dev_vecs = space.encode(ds.train, progress), space.encode(ds.dev, progress)
    y_train = data.encode_labels(ds.train, ds.labels, "multi_class")
    y_dev = data.encode_labels(ds.dev, ds.labels, "multi_class")
    sims = similarities(dev_vecs, train_vecs)
    sims_same = np.where(y_dev[:, None] == y_train[None, :], sims, -1.0)  # support comes from the same class
    support = np.maximum(top_k_mean(sims_same, support_k), 0.0)
    order = np.argsort(support, kind="stable")[:min(sparse_num, len(ds.dev))]
    classes = Counter(ds.labels[y_dev[i]] for i in order)

    result = SparseResult(support, order, dict(classes.most_common()), data.write_examples(out / "sparse.txt",
                                                                                         [ds.dev[i] for i in order]))
    report_files.write_json(out / "sparse_report.json", {
        "features": space.name, "support_k": support_k, "mean_support": float(support.mean()),
        "sparse": [{"line": ds.dev[i].line, "label": ds.labels[y_dev[i]], "support": float(support[i]),
                    "text": data.format_example(ds.dev[i])} for i in order],
        "sparse_by_class": result.classes})
    log.info("%d least supported dev examples (%s similarity, mean support %.3f vs %.3f overall): %s",
             len(order), space.name, support[order].mean(), support.mean(),
             ", ".join(f"{label} {n}" for label, n in classes.most_common()))

    if strategy == "augment":
        # The training rows each sparse example leans on most, nearest first, in turn.
        picked = nearest_in_turn(sims_same[order], support_num)
        supporting = [ds.train[i] for i in picked]
        result.picked = picked
        result.support_path = data.write_examples(out / "support.txt", supporting)
        new_rows = augmenter.augment_examples(supporting, create_n=create_n)
        result.train_aug_path = data.write_examples(out / "train_sparse_aug.txt", ds.train + new_rows)
        log.info("%d supporting training rows -> %s; train + %d augmented rows -> %s", len(picked),
                 result.support_path, len(new_rows), result.train_aug_path)
    elif strategy == "annotate":
        pool_sims = similarities(dev_vecs[order], space.encode(pool, progress))
        picked = nearest_in_turn(pool_sims, annotate_num)
        result.picked = picked
        result.support_path = out / "support.txt"
        with atomic_open(result.support_path) as f:
            f.writelines(data.format_example(pool[i]).rstrip("\t") + "\n" for i in picked)
        log.info("%d rows of %s to annotate -> %s", len(picked), unlabeled_file, result.support_path)
    return result
