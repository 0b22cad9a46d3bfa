"""Fine-tuning a classifier on a dataset folder. `zhcls train` is a thin shell over `train()`.

It follows PaddleNLP's multi_class train.py (see `loop` for the loop itself) and plugs into the one
training loop a classification model, its loss (cross-entropy, or BCE for multi-label) and its dev
score (accuracy, or micro-F1).
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from zhcls import data
from zhcls.data.tokenizer import build_vocab
from zhcls.errors import ZhclsError
from zhcls.inference.torch_predictor import TorchPredictor
from zhcls.models.checkpoint import save_checkpoint
from zhcls.models.pretrained import load_pretrained
from zhcls.training.loop import Job, LoopConfig, TrainResult, fit, start

log = logging.getLogger("zhcls")


@dataclass(kw_only=True)
class TrainConfig(LoopConfig):
    """Every flag of PaddleNLP's multi_class train.py, with its name and default, plus zhcls's own;
    the loop's flags (batch size, learning rate, epochs, early stopping, ...) come from `LoopConfig`."""

    dataset_dir: str
    model_name: str = "ernie-3.0-medium-zh"
    max_seq_length: int = 128
    init_from_ckpt: str | None = None
    train_file: str = "train.txt"
    dev_file: str = "dev.txt"
    label_file: str = "label.txt"
    # zhcls's own
    task: str = "auto"
    problem_type: str = "multi_class"
    vocab_file: str | None = None
    vocab_from_data: bool = False
    vocab_size: int = 8000
    cache_dir: str | None = None


def temporary_vocab(texts: Iterable[str], vocab_size: int) -> str:
    """--vocab_from_data: a WordPiece vocab learnt from ``texts``, written to a temporary file that the
    caller deletes once the tokenizer holds it (the checkpoint folder gets its own copy when saved)."""
    vocab = build_vocab(texts, vocab_size=vocab_size)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".vocab.txt", delete=False) as f:
        f.write("".join(f"{token}\n" for token in vocab))
    log.info("built a %d-token WordPiece vocab from the training texts", len(vocab))
    return f.name


def _vocab_file(cfg: TrainConfig, ds: data.DatasetFolder) -> str | None:
    """The vocab to use: --vocab_file, or for --vocab_from_data one built from the training texts."""
    if not cfg.vocab_from_data:
        return cfg.vocab_file
    return temporary_vocab([e.text_a for e in ds.train] + [e.text_b for e in ds.train if e.text_b], cfg.vocab_size)


def train(config: TrainConfig | None = None, **kwargs) -> TrainResult:
    """Train a classifier on a dataset folder; the best dev checkpoint lands in ``save_dir``."""
    cfg = config or TrainConfig(**kwargs)
    # Validate every file before any model is loaded or downloaded: fail fast.
    ds = data.load_dataset(cfg.dataset_dir, train_file=cfg.train_file, dev_file=cfg.dev_file,
                           label_file=cfg.label_file, task=cfg.task, problem_type=cfg.problem_type)
    rt = start(cfg)
    vocab_file = _vocab_file(cfg, ds)
    try:
        model, tokenizer = load_pretrained(cfg.model_name, ds.labels, init_random=cfg.init_random,
                                           vocab_file=vocab_file, cache_dir=cfg.cache_dir)
    finally:
        if cfg.vocab_from_data:  # the tokenizer holds the vocab now; the checkpoint gets a copy
            os.unlink(vocab_file)
    if cfg.init_from_ckpt:
        _load_weights(model, cfg.init_from_ckpt)
    model.to(rt.device)
    meta = {"task": ds.task, "problem_type": ds.problem_type, "max_seq_length": cfg.max_seq_length,
            "base_model": cfg.model_name, "init_random": cfg.init_random}
    multi_class = ds.problem_type == "multi_class"

    train_x = tokenizer.encode([e.text_a for e in ds.train], [e.text_b for e in ds.train] if ds.task == "pair" else None,
                               cfg.max_seq_length)
    train_y = torch.from_numpy(data.encode_labels(ds.train, ds.labels, ds.problem_type))

    def loss(module, idx):
        batch = tokenizer.pad([train_x.input_ids[i] for i in idx], [train_x.token_type_ids[i] for i in idx])
        logits = module(**{k: torch.from_numpy(v).to(rt.device) for k, v in batch.items()}).float()
        target = train_y[idx].to(rt.device)
        if multi_class:
            return F.cross_entropy(logits, target, reduction="sum"), {"acc": (logits.argmax(-1) == target).sum()}
        # Mean over labels, summed over examples (the loop divides by the number of examples).
        return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / target.shape[1], {}

    dev_predictor = TorchPredictor(model, tokenizer, meta, device=str(rt.device), batch_size=max(64, cfg.batch_size),
                                   max_seq_length=cfg.max_seq_length,
                                   amp="bf16" if rt.amp_dtype == torch.bfloat16 else "none")
    dev_y = data.encode_labels(ds.dev, ds.labels, ds.problem_type)

    def evaluate() -> float:
        probs = dev_predictor.predict_proba(data.predictor_inputs(ds.dev))
        return float((probs.argmax(-1) == dev_y).mean()) if multi_class else _micro_f1(dev_y, probs >= 0.5)

    def save_best(record: dict) -> None:
        save_checkpoint(model, tokenizer, cfg.save_dir, {**meta, "best_dev_score": record["score"],
                                                         "best_epoch": record["epoch"], "global_step": record["step"]})

    log.info("%s: %d training examples (%s, %d labels)", cfg.model_name, len(ds.train), ds.task, len(ds.labels))
    job = Job(model, [len(ids) for ids in train_x.input_ids], loss, evaluate, save_best,
              metric="accuracy" if multi_class else "micro-F1", name=cfg.model_name)
    return fit(job, cfg, rt)


def _micro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    tp = float((y_true.astype(bool) & y_pred).sum())
    denom = float(y_true.sum() + y_pred.sum())
    return 2 * tp / denom if denom else 0.0


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
