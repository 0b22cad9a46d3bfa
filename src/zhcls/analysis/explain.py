"""`zhcls explain`: why a checkpoint predicts what it does, for given texts.

Word level: integrated gradients (Sundararajan et al., 2017) of the predicted class's probability with
respect to the word embeddings, from a baseline where every text token is [PAD] ([CLS] and [SEP] kept),
with ``steps`` midpoint-rule steps in one batch. Token attributions are summed into the words that jieba
segments, printed and written as an HTML highlight (red pushes towards the prediction, blue away).
Sentence level: the training rows with the predicted label whose sentence features (what the classifier
head reads) are nearest to the text's: the examples that support the prediction most.
"""
from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zhcls import data
from zhcls.errors import ZhclsError, require
from zhcls.io import atomic_open

log = logging.getLogger("zhcls")


@dataclass
class Explanation:
    text: str | tuple[str, str]
    label: str
    score: float
    words: list[list[tuple[str, float]]]  # per side of the input (one, or two for a pair): (word, attribution)
    support: list[tuple[float, str, str]] = field(default_factory=list)  # (similarity, label, training text)


def token_attributions(predictor, text_a: str, text_b: str | None, target: int, steps: int = 20) -> np.ndarray:
    """Integrated-gradients attribution of each token of ``[CLS] a [SEP] (b [SEP])`` to class ``target``."""
    import torch

    model, tokenizer = predictor.model, predictor.tokenizer
    enc = tokenizer.encode([text_a], None if text_b is None else [text_b], predictor.max_seq_length)
    batch = {k: torch.from_numpy(v).to(predictor.device).repeat(steps, 1)
             for k, v in tokenizer.pad(enc.input_ids, enc.token_type_ids).items()}
    embeddings = model.backbone.embeddings.word_embeddings
    ids = batch["input_ids"][:1]
    special = (ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id)
    with torch.no_grad():
        x = embeddings(ids)
        base = torch.where(special[..., None], x, embeddings(torch.full_like(ids, tokenizer.pad_token_id)))
    alphas = ((torch.arange(steps, device=x.device, dtype=x.dtype) + 0.5) / steps)[:, None, None]
    path = (base + alphas * (x - base)).requires_grad_(True)
    handle = embeddings.register_forward_hook(lambda module, inputs, output: path)
    try:
        model.eval()
        probs = torch.softmax(model(**batch).float(), dim=-1)[:, target]
        (grad,) = torch.autograd.grad(probs.sum(), path)
    finally:
        handle.remove()
    return ((x - base)[0] * grad.mean(dim=0)).sum(dim=-1).detach().cpu().numpy()


def group_words(text: str, offsets: list[tuple[int, int]], scores: np.ndarray, cut) -> list[tuple[str, float]]:
    """Sum token scores into the words of ``text`` (jieba's ``tokenize`` spans); untokenised words get 0."""
    words = list(cut(text))
    totals = np.zeros(len(words))
    starts = np.array([start for _, start, _ in words])
    for (start, _), score in zip(offsets, scores):
        totals[np.searchsorted(starts, start, side="right") - 1] += score
    return [(word, float(total)) for (word, _, _), total in zip(words, totals)]


def explain(params_path, texts, *, dataset_dir=None, train_file="train.txt", label_file="label.txt",
            support_num: int = 3, steps: int = 20, output_file=None, device: str = "cpu",
            max_seq_length: int | None = None, batch_size: int = 32) -> list[Explanation]:
    """Word-level attributions (and, with ``dataset_dir``, supporting training rows) for each text."""
    from zhcls.inference.loading import load

    jieba = require("jieba", "analysis", "word-level explanations")

    if steps < 1 or support_num < 0:
        raise ZhclsError("--steps must be >= 1 and --support_num >= 0")
    texts = list(texts)
    if not texts:
        raise ZhclsError("explain: no text given")
    ds = None
    if dataset_dir:  # validate the data before the model is loaded
        from zhcls.inference.loading import read_meta

        ds = data.load_dataset(dataset_dir, train_file=train_file, label_file=label_file,
                               task=read_meta(params_path).get("task", "auto"), require=("train",))
    if ds is not None:
        from zhcls.analysis.model_view import checked_predictor

        predictor = checked_predictor(params_path, ds, device=device, batch_size=batch_size,
                                      max_seq_length=max_seq_length, label_file=label_file)
    else:
        predictor = load(params_path, backend="torch", device=device, batch_size=batch_size,
                         max_seq_length=max_seq_length)
    if predictor.problem_type != "multi_class":
        raise ZhclsError("explain handles single-label (multi_class) models")
    pairs = [isinstance(t, (tuple, list)) for t in texts]
    if any(pairs) != (predictor.task == "pair") or (any(pairs) and not all(pairs)):
        raise ZhclsError(f"explain: the model reads {predictor.task} inputs; give "
                         + ("text_a<TAB>text_b pairs" if predictor.task == "pair" else "single texts"))
    jieba.setLogLevel(logging.WARNING)
    cut = jieba.tokenize
    probs = predictor.predict_proba(texts)
    out = []
    for text, p in zip(texts, probs):
        target = int(p.argmax())
        sides = list(text) if isinstance(text, (tuple, list)) else [text]
        scores = token_attributions(predictor, sides[0], sides[1] if len(sides) > 1 else None, target, steps)
        words, at = [], 1  # scores[0] is [CLS]; each side's tokens are followed by [SEP]
        for side in sides:
            offsets = predictor.tokenizer.pieces([side])[0][1]
            kept = offsets[:max(0, min(len(offsets), len(scores) - at - 1))]  # truncation
            words.append(group_words(side, kept, scores[at:at + len(kept)], cut))
            at += len(kept) + 1
        out.append(Explanation(tuple(sides) if len(sides) > 1 else text, predictor.labels[target], float(p[target]),
                               words))
    if ds is not None and support_num:
        _add_support(out, texts, ds, predictor, support_num)
    if output_file:
        write_html(output_file, out)
    return out


def _add_support(explanations, texts, ds, predictor, support_num: int) -> None:
    from zhcls.analysis.similarity import SentenceSpace, similarities

    space = SentenceSpace(ds, ds.train, predictor)
    train_vecs = space.encode(ds.train)
    queries = [data.Example(*(t if isinstance(t, (tuple, list)) else (t, None)), (), 0) for t in texts]
    sims = similarities(space.encode(queries), train_vecs)
    y = data.encode_labels(ds.train, ds.labels, "multi_class")
    for e, row in zip(explanations, sims):
        same = np.flatnonzero(y == ds.labels.index(e.label))
        best = same[np.argsort(-row[same], kind="stable")[:support_num]]
        e.support = [(float(row[i]), e.label, "\t".join(filter(None, (ds.train[i].text_a, ds.train[i].text_b))))
                     for i in best]


def format_explanation(e: Explanation, top: int = 5) -> str:
    shown = "\t".join(e.text) if isinstance(e.text, tuple) else e.text
    lines = [f"{shown}\t-> {e.label} ({e.score:.3f})"]
    for side in e.words:
        ranked = sorted(side, key=lambda w: -w[1])[:top]
        lines.append("  words for it: " + "  ".join(f"{w} {s:+.3f}" for w, s in ranked))
    for sim, label, text in e.support:
        lines.append(f"  supported by: {sim:.3f}\t{label}\t{text}")
    return "\n".join(lines)


def write_html(path, explanations: list[Explanation]) -> Path:
    """Each text with its words shaded by attribution (red: for the prediction, blue: against)."""
    parts = ["<!doctype html><meta charset='utf-8'><title>zhcls explain</title>",
             "<style>body{font-family:sans-serif;line-height:2}span{padding:2px;border-radius:3px}</style>"]
    for e in explanations:
        scale = max((abs(s) for side in e.words for _, s in side), default=0.0) or 1.0
        sides = []
        for side in e.words:
            spans = []
            for word, s in side:
                color = "220,40,40" if s >= 0 else "40,90,220"
                spans.append(f"<span style='background:rgba({color},{abs(s) / scale:.2f})' "
                             f"title='{s:+.4f}'>{html.escape(word)}</span>")
            sides.append("".join(spans))
        parts.append(f"<p><b>{html.escape(e.label)}</b> ({e.score:.3f}): {' | '.join(sides)}</p>")
        for sim, label, text in e.support:
            parts.append(f"<div style='margin-left:2em;color:#555'>{sim:.3f} {html.escape(label)}: "
                         f"{html.escape(text)}</div>")
    with atomic_open(path) as f:
        f.write("\n".join(parts) + "\n")
    return Path(path)
