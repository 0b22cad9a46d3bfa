"""`zhcls zeroshot`: classify without training, by the cosine between a text's embedding and each label's.

A label is embedded as ``template`` filled with its description (one line per label in ``descriptions``, in
label.txt's order) or, without descriptions, its name. Multi-class: the softmax of the cosines over
``temperature`` (0.01, e5's training temperature). Multi-label: a label is chosen when its cosine reaches
``threshold``; its score is a sigmoid of (cosine - threshold) / temperature, so 0.5 is the threshold. A data
file with labels gets `evaluate`'s report (`evaluation.metrics`) beside the predictions.
"""
from __future__ import annotations

import numpy as np

from zhcls import data
from zhcls.errors import ZhclsError, data_error
from zhcls.evaluation import metrics
from zhcls.evaluation.report_files import write_json
from zhcls.fewshot.config import ZeroshotConfig
from zhcls.fewshot.embed import embedder
from zhcls.inference.predictor import ROLES, sigmoid, softmax, write_predictions
from zhcls.io import atomic_dir, check_output_dir

PROBLEM_TYPES = ("multi_class", "multi_label")


def label_texts(labels: list[str], descriptions_file, template: str) -> list[str]:
    """The text each label is embedded as: the template filled with its description or name."""
    if template.count("{}") != 1:
        raise ZhclsError(f"--template {template!r}: needs exactly one {{}} where the label's description goes")
    if descriptions_file is None:
        return [template.replace("{}", label) for label in labels]
    lines = data.read_lines(descriptions_file)
    while len(lines) > len(labels) and not lines[-1].strip():  # extra newlines at the end, not a missing description
        lines.pop()
    if len(lines) != len(labels):
        raise data_error(descriptions_file, None, f"{len(lines)} descriptions for {len(labels)} labels; write one "
                                                  "per label, in label.txt's order")
    for number, (label, line) in enumerate(zip(labels, lines), 1):
        if not line.strip():
            raise data_error(descriptions_file, number, f"the description of label {label!r} is empty")
    return [template.replace("{}", line.strip()) for line in lines]


def read_data(path, labels: list[str], problem_type: str) -> tuple[list[data.Example], bool]:
    """The texts, labelled (text<TAB>label) or not; a labelled file is checked against ``labels``."""
    lines = [line for line in data.read_lines(path) if line.strip()]
    labelled = bool(lines) and "\t" in lines[0]
    examples = (data.read_examples(path, labels, "text", problem_type)[0] if labelled
                else data.read_texts(path, "text"))
    if not examples:
        raise ZhclsError(f"{path}: no text in it")
    return examples, labelled


def zeroshot(config: ZeroshotConfig | None = None, **kwargs) -> dict:
    """Classify ``data_file``; writes ``output_dir`` and returns the report (empty without labels)."""
    cfg = config or ZeroshotConfig(**kwargs)
    if cfg.problem_type not in PROBLEM_TYPES:
        raise ZhclsError(f"--problem_type {cfg.problem_type}: choose one of {', '.join(PROBLEM_TYPES)}")
    if cfg.label_role not in ROLES:
        raise ZhclsError(f"--label_role {cfg.label_role}: choose one of {', '.join(ROLES)}")
    if not cfg.temperature > 0:
        raise ZhclsError(f"--temperature {cfg.temperature}: must be > 0")
    if not -1 <= cfg.threshold <= 1:
        raise ZhclsError(f"--threshold {cfg.threshold}: a cosine threshold must be between -1 and 1")
    inputs = [p for p in (cfg.labels, cfg.data_file, cfg.descriptions, cfg.params_path) if p]
    check_output_dir(cfg.output_dir, flag="--output_dir", overwrite=cfg.overwrite, inputs=inputs)
    labels = data.read_labels(cfg.labels, cfg.problem_type)
    wording = label_texts(labels, cfg.descriptions, cfg.template)
    examples, labelled = read_data(cfg.data_file, labels, cfg.problem_type)
    predictor = embedder(cfg.params_path, backend=cfg.backend, device=cfg.device, batch_size=cfg.batch_size,
                         max_seq_length=cfg.max_seq_length)
    label_vectors = predictor.embed(wording, role=cfg.label_role)
    texts = [e.text_a for e in examples]
    cosine = predictor.embed(texts, role="query", progress=cfg.progress) @ label_vectors.T
    report: dict = {}
    if cfg.problem_type == "multi_class":
        probs = softmax(cosine / cfg.temperature)
        best = probs.argmax(1)
        results = [{"label": labels[i], "score": float(p[i])} for i, p in zip(best, probs)]
        if labelled:
            report = metrics.classification_report(labels, data.encode_labels(examples, labels, cfg.problem_type), probs)
    else:
        probs = sigmoid((cosine - cfg.threshold) / cfg.temperature)
        chosen = cosine >= cfg.threshold
        results = [{"labels": [labels[i] for i in np.flatnonzero(row)], "scores": [float(p[i]) for i in np.flatnonzero(row)]}
                   for row, p in zip(chosen, probs)]
        if labelled:
            report = metrics.multilabel_report(labels, data.encode_labels(examples, labels, cfg.problem_type), probs,
                                               chosen=chosen)
    if report:
        report["label_texts"] = dict(zip(labels, wording))
    with atomic_dir(cfg.output_dir) as tmp:
        write_predictions(tmp / "predictions.txt", texts, results)
        if report:
            write_json(tmp / "report.json", report)
    return report
