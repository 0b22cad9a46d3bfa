"""Evaluation on the dataset folder's splits, like PaddleNLP's analysis/evaluate.py, and more.

For each split: accuracy, top-2/top-3, macro/micro F1, per-class P/R/F1 with support and share, a
confusion matrix (text and PNG) and a bad-case file; all of it also as one JSON report.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from zhcls import data
from zhcls.errors import ZhclsError
from zhcls.evaluation import metrics
from zhcls.inference.loading import load, read_meta
from zhcls.inference.predictor import Predictor, sigmoid, softmax

log = logging.getLogger("zhcls")


def evaluate(params_path, dataset_dir, *, splits=("train", "dev", "test"), output_dir=None, batch_size: int = 32,
             max_seq_length: int | None = None, device: str = "auto", backend: str = "auto",
             train_file="train.txt", dev_file="dev.txt", test_file="test.txt", label_file="label.txt",
             plot: bool = True, progress: bool = True, predictor: Predictor | None = None,
             baseline: bool = False) -> dict:
    """Reports per split (``{"dev": {...}, ...}``); files land in ``output_dir`` (default params_path/eval).
    ``baseline``: the dev report also holds the TF-IDF baseline's score on the same folder (``"baseline"``)."""
    # Read and validate the data before the model is loaded.
    meta = read_meta(params_path) if predictor is None else {"task": predictor.task, "problem_type": predictor.problem_type}
    problem_type = meta.get("problem_type", "multi_class")
    ds = data.load_dataset(dataset_dir, train_file=train_file, dev_file=dev_file, test_file=test_file,
                           label_file=label_file, task=meta.get("task", "auto"), problem_type=problem_type,
                           require=[s for s in splits if s != "test"])
    labels = ds.labels
    split_examples = {s: getattr(ds, s) for s in splits if getattr(ds, s)}
    predictor = predictor or load(params_path, backend=backend, device=device, batch_size=batch_size,
                                  max_seq_length=max_seq_length)
    if labels != predictor.labels:
        raise ZhclsError(f"{label_file}: its labels differ from the model's ({len(labels)} vs {len(predictor.labels)} "
                         "labels, or another order); evaluate with the label.txt the model was trained on")

    out = Path(output_dir or Path(params_path) / "eval")
    reports = {}
    for split, examples in split_examples.items():
        texts = data.predictor_inputs(examples)
        probs = predictor.predict_proba(texts, progress=progress)
        y_true = data.encode_labels(examples, labels, problem_type)
        if problem_type == "multi_class":
            report = metrics.classification_report(labels, y_true, probs)
            shown = ["\t".join(t) if isinstance(t, tuple) else t for t in texts]
            report["bad_cases"] = metrics.write_bad_cases(out / f"bad_case_{split}.txt", shown, labels, y_true, probs)
            (out / f"confusion_{split}.txt").parent.mkdir(parents=True, exist_ok=True)
            (out / f"confusion_{split}.txt").write_text(metrics.format_confusion(report), encoding="utf-8")
            if plot:
                metrics.plot_confusion(report, out / f"confusion_{split}.png")
        else:
            report = metrics.multilabel_report(labels, y_true, probs)
        if split == "dev" and baseline and ds.train:
            from zhcls.evaluation.baseline import run_baseline

            report["baseline"] = run_baseline(ds).to_dict()
        reports[split] = report
        log.info("%s", metrics.format_report(report, title=f"{split} ({len(examples)} examples)"))
    metrics.write_json(out / "report.json", reports)
    log.info("evaluation files written to %s", out)
    return reports


def dev_score(labels: list[str], y_true: np.ndarray, logits: np.ndarray, problem_type: str) -> float:
    """Dev accuracy (multi_class) or micro-F1 (multi-label), in points."""
    probs = softmax(logits) if problem_type == "multi_class" else sigmoid(logits)
    return metrics.headline(labels, y_true, probs, problem_type)
