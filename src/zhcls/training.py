"""Fine-tuning with early stopping, resumable to the step. `zhcls train` is a thin shell over `train()`.

The loop follows PaddleNLP's multi_class train.py (AdamW without decay on bias/LayerNorm, linear
decay with optional warmup, evaluate on dev every epoch, keep the best, stop after
``early_stop_nums`` epochs without improvement) and adds what a CPU needs: batches grouped by
length with dynamic padding, gradient accumulation, AMP on GPU, and a resumable training state.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import data
from .batching import training_batches
from .checkpoint import load_pretrained, save_checkpoint
from .io import atomic_dir
from .devices import amp_dtype, resolve_device
from .errors import ZhclsError
from .predict import TorchPredictor
from .tokenizer import build_vocab

log = logging.getLogger("zhcls")

STATE_DIR = "training_state"  # inside save_dir: last weights + optimizer + counters, for --resume
PRETRAINED_LR, FROM_SCRATCH_LR = 3e-5, 5e-4
DEFAULT_WARMUP = 0.1


@dataclass
class TrainConfig:
    """Every flag of PaddleNLP's multi_class train.py, with its name and default, plus zhcls's own."""

    dataset_dir: str
    model_name: str = "ernie-3.0-medium-zh"
    save_dir: str = "./checkpoint"
    device: str = "auto"
    max_seq_length: int = 128
    batch_size: int = 32
    learning_rate: float | None = None  # None: 3e-5 for pretrained weights, 5e-4 from scratch
    epochs: int = 10
    early_stop: bool = False
    early_stop_nums: int = 3
    logging_steps: int = 5
    weight_decay: float = 0.0
    warmup: bool = False
    warmup_steps: int = 0
    warmup_proportion: float | None = None  # None: 0, or 0.1 with --warmup or from scratch
    init_from_ckpt: str | None = None
    seed: int = 3
    train_file: str = "train.txt"
    dev_file: str = "dev.txt"
    label_file: str = "label.txt"
    # zhcls's own
    task: str = "auto"
    problem_type: str = "multi_class"
    init_random: bool = False
    vocab_file: str | None = None
    vocab_from_data: bool = False
    vocab_size: int = 8000
    amp: str = "auto"  # auto (bf16/fp16 on GPU, off on CPU) | none | bf16 | fp16
    gradient_accumulation_steps: int = 1
    resume: bool = False
    save_steps: int = 0  # also save the resumable state every N optimizer steps (0: at each evaluation)
    max_steps: int = 0  # stop after N optimizer steps (0: no limit)
    threads: int = 0  # torch CPU threads (0: torch's default)
    cache_dir: str | None = None
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def resolved_lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return FROM_SCRATCH_LR if self.init_random else PRETRAINED_LR


@dataclass
class TrainResult:
    save_dir: Path
    best_score: float
    best_epoch: int
    global_step: int
    history: list[dict]
    seconds: float


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup to 1, then linear decay to 0 (PaddleNLP's LinearDecayWithWarmup)."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def _warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    """--warmup_steps wins, then --warmup_proportion; --warmup alone, and training from scratch, mean 10 %."""
    if cfg.warmup_steps:
        return cfg.warmup_steps
    proportion = cfg.warmup_proportion
    if proportion is None:
        proportion = DEFAULT_WARMUP if (cfg.warmup or cfg.init_random) else 0.0
    return int(total_steps * proportion)


def _optimizer(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # As PaddleNLP: no weight decay on biases and LayerNorm parameters.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def _vocab_file(cfg: TrainConfig, ds: data.DatasetFolder) -> str | None:
    """The vocab to use; for --vocab_from_data a WordPiece vocab built from the training texts.
    It is written to a temporary file: the checkpoint folder gets its own copy when saved."""
    if not cfg.vocab_from_data:
        return cfg.vocab_file
    texts = [e.text_a for e in ds.train] + [e.text_b for e in ds.train if e.text_b]
    vocab = build_vocab(texts, vocab_size=cfg.vocab_size)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".vocab.txt", delete=False) as f:
        f.write("".join(f"{token}\n" for token in vocab))
    log.info("built a %d-token WordPiece vocab from %d training texts", len(vocab), len(texts))
    return f.name


def _dist() -> tuple[int, int]:
    """(rank, world_size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (torch.distributed.get_rank() if world > 1 else 0), world


def train(config: TrainConfig | None = None, **kwargs) -> TrainResult:
    """Train a classifier on a dataset folder; the best dev checkpoint lands in ``save_dir``."""
    cfg = config or TrainConfig(**kwargs)
    t0 = time.time()
    # Validate every file before any model is loaded or downloaded: fail fast.
    ds = data.load_dataset(cfg.dataset_dir, train_file=cfg.train_file, dev_file=cfg.dev_file,
                           label_file=cfg.label_file, task=cfg.task, problem_type=cfg.problem_type)
    if cfg.gradient_accumulation_steps < 1 or cfg.batch_size < 1 or cfg.epochs < 1:
        raise ZhclsError("--batch_size, --epochs and --gradient_accumulation_steps must be >= 1")
    rank, world = _dist()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    dtype = amp_dtype(cfg.amp, device)

    vocab_file = _vocab_file(cfg, ds)
    try:
        model, tokenizer = load_pretrained(cfg.model_name, ds.labels, init_random=cfg.init_random,
                                           vocab_file=vocab_file, cache_dir=cfg.cache_dir)
    finally:
        if cfg.vocab_from_data:  # the tokenizer holds the vocab now; the checkpoint gets a copy
            os.unlink(vocab_file)
    if cfg.init_from_ckpt:
        _load_weights(model, cfg.init_from_ckpt)
    model.to(device)
    meta = {"task": ds.task, "problem_type": ds.problem_type, "max_seq_length": cfg.max_seq_length,
            "base_model": cfg.model_name, "init_random": cfg.init_random}

    train_x = tokenizer.encode([e.text_a for e in ds.train], [e.text_b for e in ds.train] if ds.task == "pair" else None,
                               cfg.max_seq_length)
    train_y = data.encode_labels(ds.train, ds.labels, ds.problem_type)
    lengths = [len(ids) for ids in train_x.input_ids]

    # Under torchrun every rank takes the same number of batches (else DDP waits forever at the end).
    batches_per_rank = math.ceil(len(lengths) / cfg.batch_size) // world
    steps_per_epoch = math.ceil(batches_per_rank / cfg.gradient_accumulation_steps)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    warmup = _warmup_steps(cfg, total_steps)
    lr = cfg.resolved_lr()
    optimizer = _optimizer(model, lr, cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_score": -1.0, "best_epoch": 0, "bad_epochs": 0,
             "history": []}
    save_dir = Path(cfg.save_dir)
    if cfg.resume:
        state = _load_state(save_dir, model, optimizer, scaler, cfg)
        log.info("resuming at step %d (epoch %d, batch %d)", state["step"], state["epoch"] + 1, state["batch_in_epoch"])
    elif rank == 0 and (save_dir / STATE_DIR).exists():
        log.info("%s holds an earlier run's state; starting afresh (pass --resume to continue it)", save_dir)

    dev_predictor = TorchPredictor(model, tokenizer, meta, device=str(device), batch_size=max(64, cfg.batch_size),
                                   max_seq_length=cfg.max_seq_length, amp="bf16" if dtype == torch.bfloat16 else "none")
    dev_y = data.encode_labels(ds.dev, ds.labels, ds.problem_type)

    def evaluate_dev() -> float:
        model.eval()
        probs = dev_predictor.predict_proba(data.predictor_inputs(ds.dev))
        model.train()
        if ds.problem_type == "multi_class":
            return float((probs.argmax(-1) == dev_y).mean())
        return _micro_f1(dev_y, probs >= 0.5)

    log.info("training %s on %d examples (%s, %d labels), %d steps, lr %.1e, warmup %d, device %s%s",
             cfg.model_name, len(ds.train), ds.task, len(ds.labels), total_steps, lr, warmup, device,
             f", amp {dtype}" if dtype else "")
    model.train()
    stop = False
    while state["epoch"] < cfg.epochs and not stop:
        epoch = state["epoch"]
        if cfg.early_stop and state["bad_epochs"] >= cfg.early_stop_nums:
            log.info("early stop: no dev improvement in %d epochs", state["bad_epochs"])
            break
        # The batch order depends only on (seed, epoch): a resumed run replays the same batches.
        batches = training_batches(lengths, cfg.batch_size, np.random.default_rng([cfg.seed, epoch]))
        batches = batches[:batches_per_rank * world][rank::world]
        groups = [batches[i:i + cfg.gradient_accumulation_steps] for i in range(0, len(batches), cfg.gradient_accumulation_steps)]
        bar = tqdm(total=len(groups), initial=state["batch_in_epoch"], desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   unit="step", disable=not cfg.progress or rank != 0, leave=False)
        seen = correct = 0
        loss_sum = 0.0
        for group in groups[state["batch_in_epoch"]:]:
            n_group = sum(len(b) for b in group)
            for idx in group:
                batch = tokenizer.pad([train_x.input_ids[i] for i in idx], [train_x.token_type_ids[i] for i in idx])
                inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
                target = torch.from_numpy(train_y[idx]).to(device)
                with torch.autocast(device.type, dtype or torch.float32, enabled=dtype is not None):
                    logits = ddp(**inputs).float()
                if ds.problem_type == "multi_class":
                    loss = F.cross_entropy(logits, target, reduction="sum") / n_group
                    correct += int((logits.argmax(-1) == target).sum())
                else:
                    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / n_group / target.shape[1]
                scaler.scale(loss).backward()
                loss_sum += float(loss.detach()) * n_group
                seen += len(idx)
            for g in optimizer.param_groups:
                g["lr"] = lr * lr_factor(state["step"], total_steps, warmup)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["batch_in_epoch"] += 1
            bar.update()
            if state["step"] % cfg.logging_steps == 0:
                postfix = {"loss": f"{loss_sum / seen:.4f}", "lr": f"{optimizer.param_groups[0]['lr']:.2e}"}
                if ds.problem_type == "multi_class":
                    postfix["acc"] = f"{correct / seen:.4f}"
                bar.set_postfix(postfix)
            if cfg.save_steps and state["step"] % cfg.save_steps == 0 and rank == 0:
                _save_state(save_dir, model, optimizer, scaler, state, cfg)
            if cfg.max_steps and state["step"] >= cfg.max_steps:
                stop = True
                break
        bar.close()
        score = evaluate_dev()
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        improved = score > state["best_score"]
        state["history"].append({"epoch": epoch + 1, "step": state["step"], "train_loss": loss_sum / max(seen, 1),
                                 "dev_score": score, "seconds": round(time.time() - t0, 1)})
        if improved:
            state.update(best_score=score, best_epoch=epoch + 1, bad_epochs=0)
            if rank == 0:
                save_checkpoint(model, tokenizer, save_dir, {**meta, "best_dev_score": score, "best_epoch": epoch + 1,
                                                             "global_step": state["step"]})
        else:
            state["bad_epochs"] += 1
        if rank == 0:
            _save_state(save_dir, model, optimizer, scaler, state, cfg)
        metric = "accuracy" if ds.problem_type == "multi_class" else "micro-F1"
        log.info("epoch %d: train loss %.4f, dev %s %.4f%s (best %.4f, epoch %d)", epoch + 1, loss_sum / max(seen, 1),
                 metric, score, " *" if improved else "", state["best_score"], state["best_epoch"])
    if rank == 0 and state["best_epoch"]:
        log.info("best dev score %.4f at epoch %d; model saved in %s", state["best_score"], state["best_epoch"], save_dir)
    return TrainResult(save_dir, state["best_score"], state["best_epoch"], state["step"], state["history"], time.time() - t0)


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


def _fingerprint(cfg: TrainConfig) -> dict:
    """The settings a resumed run must share with the original, or the resumed result means nothing."""
    keys = ("dataset_dir", "model_name", "max_seq_length", "batch_size", "learning_rate", "epochs", "seed",
            "gradient_accumulation_steps", "train_file", "dev_file", "label_file", "problem_type", "weight_decay")
    d = dataclasses.asdict(cfg)
    return {k: d[k] for k in keys}


def _save_state(save_dir: Path, model, optimizer, scaler, state: dict, cfg: TrainConfig) -> None:
    with atomic_dir(save_dir / STATE_DIR) as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "config": _fingerprint(cfg)}, indent=1), encoding="utf-8")


def _load_state(save_dir: Path, model, optimizer, scaler, cfg: TrainConfig) -> dict:
    folder = save_dir / STATE_DIR
    if not (folder / "state.json").exists():
        raise ZhclsError(f"--resume: no training state in {folder} (nothing to resume)")
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    saved = state.pop("config")
    changed = [k for k, v in _fingerprint(cfg).items() if saved.get(k) != v]
    if changed:
        raise ZhclsError(f"--resume: these settings differ from the interrupted run: {', '.join(changed)}")
    model.load_state_dict(load_file(folder / "model.safetensors"))
    blob = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scaler.load_state_dict(blob["scaler"])
    torch.set_rng_state(blob["torch_rng"])
    if blob["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    return state

