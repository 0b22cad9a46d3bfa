"""Fine-tuning a classifier on a dataset folder. `zhcls train` is a thin shell over `train()`.

It follows PaddleNLP's multi_class train.py (see `loop` for the loop itself) and plugs into the one
training loop a classification model, its loss (`losses`: cross-entropy or BCE for multi-label, class
weights, focal) and its dev score (accuracy, or micro-F1 at thresholds tuned on dev). Long texts are
cut by the `LongText` policy; sliding windows train as examples of their own, with their text's labels.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from zhcls import data, options
from zhcls.data import hierarchy
from zhcls.data.long_text import LongText
from zhcls.data.tokenizer import build_vocab
from zhcls.errors import ZhclsError
from zhcls.evaluation import metrics
from zhcls.inference.predictor import check_max_seq_length
from zhcls.inference.torch_predictor import TorchPredictor
from zhcls.models.checkpoint import save_checkpoint
from zhcls.models.pretrained import load_pretrained, prune_to_texts
from zhcls.training.config import TrainConfig
from zhcls.training.loop import Job, Runtime, TrainResult, fit, start
from zhcls.training.losses import LOSSES, class_weights, classification_loss
from zhcls.training.probe import fit_head

log = logging.getLogger("zhcls")
LONG_TEXT_WARNING = 0.1  # warn when this share of the training texts is cut


def temporary_vocab(texts: Iterable[str], vocab_size: int) -> str:
    """--vocab_from_data: a WordPiece vocab learnt from ``texts``, written to a temporary file that the
    caller deletes once the tokenizer holds it (the checkpoint folder gets its own copy when saved)."""
    vocab = build_vocab(texts, vocab_size=vocab_size)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".vocab.txt", delete=False) as f:
        f.write("".join(f"{token}\n" for token in vocab))
    log.info("built a %d-token WordPiece vocab from the training texts", len(vocab))
    return f.name


def _metric(cfg: TrainConfig, problem_type: str) -> str:
    multi_class = problem_type == "multi_class"
    metric = cfg.metric or ("accuracy" if multi_class else "micro_f1")
    allowed = (("accuracy",) if multi_class else ()) + metrics.TUNABLE
    if metric not in allowed:
        raise ZhclsError(f"--metric {metric}: choose one of {', '.join(allowed)} for {problem_type}")
    return metric


def _encode_train(cfg: TrainConfig, ds: data.DatasetFolder, tokenizer, long_text: LongText):
    """The training inputs and, for each, its example (sliding: one input per window); logs how many
    texts are longer than max_seq_length, and warns when many are."""
    if ds.task == "pair":
        enc = tokenizer.encode([e.text_a for e in ds.train], [e.text_b for e in ds.train], cfg.max_seq_length)
        return enc, np.arange(len(ds.train))
    enc, owner = tokenizer.encode_long([e.text_a for e in ds.train], cfg.max_seq_length, long_text)
    first_piece = np.unique(owner, return_index=True)[1]
    cut = float(np.mean([len(enc.input_ids[i]) == cfg.max_seq_length for i in first_piece]))
    log.info("%.1f%% of the training texts fill max_seq_length %d (--long_text %s%s)", 100 * cut,
             cfg.max_seq_length, long_text.policy,
             f": {len(owner)} windows for {len(ds.train)} texts" if long_text.policy == "sliding" else "")
    if cut > LONG_TEXT_WARNING and long_text.policy == "truncate":
        log.warning("%.0f%% of the training texts are longer than max_seq_length %d and lose their end; consider "
                    "a larger --max_seq_length or --long_text head_tail / sliding", 100 * cut, cfg.max_seq_length)
    return enc, owner


def _vocab_file(cfg: TrainConfig, ds: data.DatasetFolder) -> str | None:
    """The vocab to use: --vocab_file, or for --vocab_from_data one built from the training texts."""
    if not cfg.vocab_from_data:
        return cfg.vocab_file
    return temporary_vocab([e.text_a for e in ds.train] + [e.text_b for e in ds.train if e.text_b], cfg.vocab_size)


def train(config: TrainConfig | None = None, **kwargs) -> TrainResult:
    """Train a classifier on a dataset folder; the best dev checkpoint lands in ``save_dir``.

    Multi-label: after each evaluation the thresholds are tuned on dev (`metrics.tune_thresholds`), the dev
    score is taken at them, and the best checkpoint stores them in config.json's zhcls block."""
    cfg = config or TrainConfig(**kwargs)
    if cfg.vocab_from_data and cfg.vocab_file:
        raise ZhclsError("--vocab_from_data and --vocab_file: give one vocabulary, not both")
    # Validate every file and setting before any model is loaded or downloaded: fail fast.
    ds = data.load_dataset(cfg.dataset_dir, train_file=cfg.train_file, dev_file=cfg.dev_file,
                           label_file=cfg.label_file, task=cfg.task, problem_type=cfg.problem_type)
    long_text = LongText(cfg.long_text, cfg.stride, cfg.window_pooling)
    long_text.check(cfg.max_seq_length - 2)
    metric = _metric(cfg, ds.problem_type)
    multi_class = ds.problem_type == "multi_class"
    train_targets = data.encode_labels(ds.train, ds.labels, ds.problem_type)
    weights = class_weights(cfg.class_weights, ds.labels, train_targets, ds.problem_type)
    if ds.task == "pair" and long_text.policy != "truncate":
        raise ZhclsError(f"--long_text {long_text.policy}: applies to single texts; pairs are truncated longest-first")
    if cfg.head_init not in ("random", "probe"):
        raise ZhclsError(f"--head_init {cfg.head_init}: choose random or probe")
    if cfg.loss not in LOSSES:
        raise ZhclsError(f"--loss {cfg.loss}: choose one of {', '.join(LOSSES)}")
    if cfg.hierarchy_policy not in hierarchy.POLICIES:
        raise ZhclsError(f"--hierarchy_policy {cfg.hierarchy_policy}: choose one of {', '.join(hierarchy.POLICIES)}")
    inputs = [cfg.dataset_dir, cfg.init_from_ckpt, cfg.vocab_file]
    if cfg.class_weights not in ("none", "balanced"):  # a file of weights
        inputs.append(cfg.class_weights)
    if Path(cfg.model_name).expanduser().exists():  # a local model folder, not a zoo name or hub id
        inputs.append(cfg.model_name)
    rt = start(cfg, inputs=[p for p in inputs if p])
    vocab_file = _vocab_file(cfg, ds)
    try:
        model, tokenizer = load_pretrained(cfg.model_name, ds.labels, init_random=cfg.init_random,
                                           vocab_file=vocab_file, cache_dir=cfg.cache_dir)
    finally:
        if cfg.vocab_from_data:  # the tokenizer holds the vocab now; the checkpoint gets a copy
            os.unlink(vocab_file)
    check_max_seq_length(cfg.max_seq_length, model.config.max_position_embeddings)
    if cfg.init_from_ckpt:
        _load_weights(model, cfg.init_from_ckpt)
    if cfg.prune_vocab:
        examples = [*ds.train, *ds.dev, *(ds.test or [])]
        model, tokenizer = prune_to_texts(model, tokenizer, [t for e in examples for t in (e.text_a, e.text_b) if t])
    model.to(rt.device)
    meta = {"task": ds.task, "problem_type": ds.problem_type, "max_seq_length": cfg.max_seq_length,
            "base_model": cfg.model_name, "init_random": cfg.init_random, "metric": metric,
            "long_text": long_text.to_meta(), "hierarchy_policy": cfg.hierarchy_policy}

    train_x, owner = _encode_train(cfg, ds, tokenizer, long_text)
    train_y = torch.from_numpy(train_targets)
    loss_weights = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=rt.device)
    if weights is not None:
        log.info("class weights (%s): %s", cfg.class_weights,
                 ", ".join(f"{label} {w:.2f}" for label, w in zip(ds.labels, weights)))

    def loss(module, idx):
        logits = module(**padded_batch(tokenizer, train_x, idx, rt.device)).float()
        target = train_y[owner[idx]].to(rt.device)
        total = classification_loss(logits, target, multi_class=multi_class, loss=cfg.loss, weights=loss_weights,
                                    gamma=cfg.focal_gamma)
        return total, {"acc": (logits.argmax(-1) == target).sum()} if multi_class else {}

    dev_predictor = dev_predictor_for(model, tokenizer, meta, rt, batch_size=cfg.batch_size,
                                      max_seq_length=cfg.max_seq_length)
    dev_y = data.encode_labels(ds.dev, ds.labels, ds.problem_type)
    tuned: dict = {}  # the thresholds of the last evaluation, saved with the checkpoint it scored

    def evaluate() -> float:
        probs = dev_predictor.predict_proba(data.predictor_inputs(ds.dev))
        if multi_class:
            return metrics.classification_report(ds.labels, dev_y, probs)[metric]
        hierarchical = ds.problem_type == "hierarchical"

        def score(thresholds) -> float:
            dev_predictor.thresholds = np.asarray(thresholds)
            chosen = dev_predictor.decide(probs)
            return metrics.multilabel_report(ds.labels, dev_y, probs, chosen=chosen, hierarchical=hierarchical)[metric]

        tuned.clear()
        tuned.update(metrics.tune_thresholds(dev_y, probs, metric=metric, min_support=cfg.threshold_min_support))
        tuned["dev_at_0.5"] = score([0.5] * len(ds.labels))
        tuned["dev_at_global"] = score([tuned["global"]] * len(ds.labels))
        return score(tuned["per_class"])

    def save_best(record: dict) -> None:
        extra = {"thresholds": dict(tuned)} if tuned else {}
        save_checkpoint(model, tokenizer, cfg.save_dir, {**meta, **extra, "best_dev_score": record["score"],
                                                         "best_epoch": record["epoch"], "global_step": record["step"]},
                        files=options.checkpoint_run_file(cfg))  # `zhcls train --config CKPT` reruns it
        if tuned:
            log.info("dev %s %.4f at the tuned thresholds (global %.2f: %.4f, fixed 0.5: %.4f)", metric,
                     record["score"], tuned["global"], tuned["dev_at_global"], tuned["dev_at_0.5"])

    if cfg.head_init == "probe" and not cfg.resume:
        order = np.argsort([len(ids) for ids in train_x.input_ids])  # similar lengths together: less padding
        chunks = [order[i:i + max(64, cfg.batch_size)] for i in range(0, len(order), max(64, cfg.batch_size))]
        fit_head(model, lambda: (padded_batch(tokenizer, train_x, idx, rt.device) for idx in chunks),
                 train_y[owner[np.concatenate(chunks)]], multi_class=multi_class)
    log.info("%s: %d training examples (%s, %d labels)", cfg.model_name, len(ds.train), ds.task, len(ds.labels))
    job = Job(model, [len(ids) for ids in train_x.input_ids], loss, evaluate, save_best, metric=metric,
              name=cfg.model_name)
    return fit(job, cfg, rt)


def padded_batch(tokenizer, encoded, idx, device) -> dict[str, torch.Tensor]:
    """The training examples ``idx`` of an encoded split, padded, as tensors on ``device``."""
    batch = tokenizer.pad([encoded.input_ids[i] for i in idx], [encoded.token_type_ids[i] for i in idx])
    return {k: torch.from_numpy(v).to(device) for k, v in batch.items()}


def dev_predictor_for(model, tokenizer, meta: dict, rt: Runtime, *, batch_size: int,
                      max_seq_length: int) -> TorchPredictor:
    """The predictor a job scores dev with: the model as it is now, on the loop's device and autocast dtype."""
    return TorchPredictor(model, tokenizer, meta, device=str(rt.device), batch_size=max(64, batch_size),
                          max_seq_length=max_seq_length, amp="bf16" if rt.amp_dtype == torch.bfloat16 else "none")


def dev_scorer(model, tokenizer, meta: dict, ds: data.DatasetFolder, rt: Runtime, *, batch_size: int,
               max_seq_length: int) -> Callable[[], float]:
    """A job's ``evaluate``: dev accuracy (multi-label: micro-F1 at the stored thresholds) of ``model`` as it is now."""
    dev_predictor = dev_predictor_for(model, tokenizer, meta, rt, batch_size=batch_size, max_seq_length=max_seq_length)
    dev_y = data.encode_labels(ds.dev, ds.labels, ds.problem_type)

    def evaluate() -> float:
        probs = dev_predictor.predict_proba(data.predictor_inputs(ds.dev))
        if ds.problem_type == "multi_class":
            return metrics.classification_report(ds.labels, dev_y, probs)["accuracy"]
        return metrics.multilabel_report(ds.labels, dev_y, probs, chosen=dev_predictor.decide(probs))["micro_f1"]

    return evaluate


def _load_weights(model, path: str) -> None:
    """--init_from_ckpt: weights from a checkpoint folder or a .safetensors file (matching names only)."""
    p = Path(path)
    file = p / "model.safetensors" if p.is_dir() else p
    if not file.exists():
        raise ZhclsError(f"--init_from_ckpt {path}: no model.safetensors there")
    state = load_file(file)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(usable, strict=False)
    log.info("--init_from_ckpt: loaded %d of %d tensors from %s", len(usable), len(own), file)
