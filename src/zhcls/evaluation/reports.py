"""Evaluation on the dataset folder's splits, like PaddleNLP's analysis/evaluate.py, and more.

For each split: accuracy, top-2/top-3, macro/micro F1, per-class P/R/F1 with support and share, a
confusion matrix (text and PNG) and a bad-case file; all of it also as one JSON report. Multi-label and
hierarchical splits: the multi-label metrics (per level for hierarchical data) and bad cases listing
the missing and extra labels.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from zhcls import data
from zhcls.data.long_text import LongText
from zhcls.errors import ZhclsError, require
from zhcls.evaluation import metrics, report_files
from zhcls.evaluation.baseline import skipped_without_sklearn
from zhcls.inference.loading import load, read_meta
from zhcls.inference.predictor import Predictor, choose_labels, sigmoid, softmax
from zhcls.io import check_output_files

log = logging.getLogger("zhcls")


def evaluate(params_path, dataset_dir, *, splits=None, output_dir=None, batch_size: int = 32,
             max_seq_length: int | None = None, device: str = "auto", backend: str = "auto",
             train_file="train.txt", dev_file="dev.txt", test_file=None, label_file="label.txt",
             plot: bool = True, progress: bool = True, predictor: Predictor | None = None,
             threshold: float | None = None, min_labels: int = 0, max_labels: int | None = None,
             hierarchy_policy: str | None = None, long_text: LongText | None = None,
             baseline: bool = False) -> dict:
    """Reports per split (``{"dev": {...}, ...}``); files land in ``output_dir`` (default params_path/eval).

    ``splits``: None means train, dev, and test when the folder has one (``test_file``, default
    test.txt); splits that are named, and a ``test_file`` that is named, must exist. ``plot``: the
    confusion PNGs, skipped with a warning when matplotlib is not installed. Multi-label decisions are
    the predictor's (the checkpoint's tuned thresholds unless ``threshold`` overrides them,
    ``min_labels`` / ``max_labels``, hierarchy consistency); ``long_text`` overrides the checkpoint's
    long-text policy. ``baseline``: the dev report also holds the TF-IDF baseline's score on
    the same folder (``"baseline"``).
    """
    required = list(splits) if splits is not None else ["train", "dev"] + (["test"] if test_file else [])
    unknown = sorted(set(required) - set(data.SPLITS))
    if unknown:
        raise ZhclsError(f"--splits: unknown split(s) {', '.join(unknown)}; choose from {', '.join(data.SPLITS)}")
    if not required:
        raise ZhclsError("--splits: no split to evaluate; choose from train, dev, test")
    # Read and validate the data before the model is loaded.
    meta = read_meta(params_path) if predictor is None else {"task": predictor.task, "problem_type": predictor.problem_type}
    problem_type = meta.get("problem_type", "multi_class")
    ds = data.load_dataset(dataset_dir, train_file=train_file, dev_file=dev_file, test_file=test_file or "test.txt",
                           label_file=label_file, task=meta.get("task", "auto"), problem_type=problem_type,
                           require=required)
    labels = ds.labels
    split_examples = {s: getattr(ds, s) for s in (splits or data.SPLITS) if getattr(ds, s)}
    if plot and problem_type == "multi_class":
        try:
            require("matplotlib", "plot", "the confusion-matrix PNG")
        except ZhclsError as e:
            log.warning("%s; writing the text reports only (--no_plot skips the PNG)", e)
            plot = False
    out = Path(output_dir or Path(params_path) / "eval")
    written = [out / "report.json"] + [out / f"{kind}_{split}.{ext}" for split in split_examples
                                       for kind, ext in (("bad_case", "txt"), ("confusion", "txt"), ("confusion", "png"))]
    root = Path(dataset_dir)
    check_output_files(written, flag="--output_dir", inputs=[params_path, *(root / f for f in (
        train_file, dev_file, test_file or "test.txt", label_file))])
    if baseline and ds.train and (skipped := skipped_without_sklearn()):
        log.warning("%s", skipped)
        baseline = False
    predictor = predictor or load(params_path, backend=backend, device=device, batch_size=batch_size,
                                  max_seq_length=max_seq_length)
    if long_text is not None:
        predictor.long_text = long_text
    if labels != predictor.labels:
        raise ZhclsError(f"{label_file}: its labels differ from the model's ({len(labels)} vs {len(predictor.labels)} "
                         "labels, or another order); evaluate with the label.txt the model was trained on")

    reports = {}
    for split, examples in split_examples.items():
        texts = data.predictor_inputs(examples)
        probs = predictor.predict_proba(texts, progress=progress)
        y_true = data.encode_labels(examples, labels, problem_type)
        shown = ["\t".join(t) if isinstance(t, tuple) else t for t in texts]
        if problem_type == "multi_class":
            report = metrics.classification_report(labels, y_true, probs)
            report["bad_cases"] = report_files.write_bad_cases(out / f"bad_case_{split}.txt", shown, labels, y_true, probs)
            (out / f"confusion_{split}.txt").parent.mkdir(parents=True, exist_ok=True)
            (out / f"confusion_{split}.txt").write_text(report_files.format_confusion(report), encoding="utf-8")
            if plot:
                report_files.plot_confusion(report, out / f"confusion_{split}.png")
        else:
            chosen = predictor.decide(probs, threshold, min_labels=min_labels, max_labels=max_labels,
                                      hierarchy_policy=hierarchy_policy)
            report = metrics.multilabel_report(labels, y_true, probs, chosen=chosen,
                                               hierarchical=problem_type == "hierarchical")
            report["decision"] = {"thresholds": [threshold] * len(labels) if threshold is not None
                                  else predictor.thresholds.tolist(), "min_labels": min_labels, "max_labels": max_labels}
            report["bad_cases"] = report_files.write_multilabel_bad_cases(out / f"bad_case_{split}.txt", shown, labels,
                                                                     y_true, chosen)
        report["long_text"] = predictor.long_text.to_meta()
        if split == "dev" and baseline and ds.train:
            from zhcls.evaluation.baseline import run_baseline  # scikit-learn, imported only when it runs

            report["baseline"] = run_baseline(ds).to_dict()
        reports[split] = report
        log.info("%s", report_files.format_report(report, title=f"{split} ({len(examples)} examples)"))
    report_files.write_json(out / "report.json", reports)
    log.info("evaluation files written to %s", out)
    return reports


def dev_score(labels: list[str], y_true: np.ndarray, logits: np.ndarray, problem_type: str,
              thresholds=0.5, hierarchy_policy: str = "add_parents") -> float:
    """Dev accuracy (multi_class) or micro-F1 (multi-label, at ``thresholds``: a checkpoint's tuned ones,
    paths made consistent for hierarchical data), in points."""
    if problem_type == "multi_class":
        return metrics.headline(labels, y_true, softmax(logits), problem_type)
    probs = sigmoid(logits)
    chosen = choose_labels(probs, thresholds, labels=labels,
                           hierarchy_policy=hierarchy_policy if problem_type == "hierarchical" else None)
    return 100 * metrics.multilabel_report(labels, y_true, probs, chosen=chosen)["micro_f1"]
