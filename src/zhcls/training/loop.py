"""The one training loop. Fine-tuning, pruning with distillation, task distillation and pretraining differ
in the model they train and the loss they compute, not in their loop; each describes itself as a `Job`
and calls `fit()`.

What lives here, once: length-grouped batches (a function of seed and epoch only, so a resumed run
replays them), AdamW without decay on biases and LayerNorm, linear warmup and decay (PaddleNLP's
LinearDecayWithWarmup), AMP on GPU, gradient accumulation, the progress bar, evaluation on dev after
every epoch with early stopping, the best checkpoint (written by the job, on rank 0 only), the
resumable training state (weights, optimizer, GradScaler, RNG, position in the epoch) and DDP under
torchrun.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm

from zhcls.data.batching import training_batches
from zhcls.errors import ZhclsError
from zhcls.io import atomic_dir, check_output_dir, mark_ours
from zhcls.models.devices import amp_dtype, resolve_device
from zhcls.training.config import LoopConfig

log = logging.getLogger("zhcls")

STATE_DIR = "training_state"  # inside save_dir: last weights + optimizer + counters, for --resume


@dataclass
class Runtime:
    """Where the loop runs: device, autocast dtype, and this process's place under torchrun."""

    device: torch.device
    amp_dtype: torch.dtype | None
    rank: int = 0
    world: int = 1


def rank_device(device: str, local_rank: int, world: int, cuda: bool) -> str:
    """The device of one process: under torchrun on GPUs each rank takes its own ``cuda:LOCAL_RANK``."""
    if world > 1 and cuda and device in ("auto", "gpu", "cuda"):
        return f"cuda:{local_rank}"
    return device


def start(cfg: LoopConfig, inputs: Sequence = (), flag: str = "--save_dir") -> Runtime:
    """Settings and save_dir checks, threads, seed, process group (under torchrun), device and AMP; call
    before building the model. ``inputs``: the files and folders the command reads, which save_dir
    must never replace; ``flag``: the command's name for save_dir, in its error messages."""
    cfg.check()
    if not cfg.resume:  # --resume continues in save_dir; otherwise save_dir must be ours to replace
        check_output_dir(cfg.save_dir, flag=flag, overwrite=cfg.overwrite, inputs=inputs)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(rank_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")), world,
                                        torch.cuda.is_available()))
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # NCCL and autocast use the current device
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = torch.distributed.get_rank() if world > 1 else 0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    return Runtime(device, amp_dtype(cfg.amp, device), rank, world)


@dataclass
class Job:
    """What a command trains, as the loop sees it.

    ``loss(module, indices)`` returns the SUM over those training examples of their losses and a dict of
    sums to show on the progress bar as per-example rates (e.g. ``{"acc": number correct}``); ``module``
    is ``model`` or its DDP wrapper, and must be what the loss calls. ``evaluate()`` gives the dev score
    (higher is better). ``save_best(record)`` writes the best checkpoint; it runs on rank 0 only.

    A job whose data does not fit in memory (a streamed pretraining corpus) gives ``batches(epoch)``
    instead of ``lengths``: ``num_batches`` batches a function of (seed, epoch) only, so that a resumed
    run replays them; ``loss`` then receives a batch (anything with a ``len``), not indices.
    """

    model: torch.nn.Module  # every parameter of it is trained and kept in the training state
    lengths: Sequence[int]  # token length of every training example: batches are grouped by length
    loss: Callable[[torch.nn.Module, np.ndarray], tuple[torch.Tensor, dict]]
    evaluate: Callable[[], float]
    save_best: Callable[[dict], None]
    metric: str = "accuracy"
    name: str = "model"
    batches: Callable[[int], Iterable] | None = None
    num_batches: int = 0


@dataclass
class TrainResult:
    save_dir: Path
    best_score: float
    best_epoch: int
    global_step: int
    history: list[dict]
    seconds: float


@dataclass
class _Progress:
    """Counters that the training state carries across an interruption."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_score: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list = field(default_factory=list)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup to 1, then linear decay to 0 (PaddleNLP's LinearDecayWithWarmup)."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def optimizer_for(model: torch.nn.Module, lr: float, weight_decay: float, **adamw) -> torch.optim.AdamW:
    """AdamW, fused into one kernel per step where the parameters' device has it (CPU and CUDA): the same
    update as the per-parameter loop, measured 1.8x the loop's training samples/s on a 2-core CPU
    (benchmarks/engine.py). ``adamw``: other torch.optim.AdamW options (``fused=False`` for the loop)."""
    # As PaddleNLP: no weight decay on biases and LayerNorm parameters.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    devices = {p.device.type for p in model.parameters()}
    adamw.setdefault("fused", devices <= {"cpu", "cuda"} and not adamw.get("foreach"))
    return torch.optim.AdamW(groups, lr=lr, **adamw)


def fit(job: Job, cfg: LoopConfig, rt: Runtime) -> TrainResult:
    """Train ``job`` with ``cfg``: the best dev checkpoint is saved through ``job.save_best``."""
    t0 = time.time()
    model = job.model.to(rt.device)
    # Under torchrun every rank takes the same number of batches (else DDP waits forever at the end).
    n_batches = job.num_batches if job.batches else math.ceil(len(job.lengths) / cfg.batch_size)
    batches_per_rank = n_batches // rt.world
    steps_per_epoch = math.ceil(batches_per_rank / cfg.gradient_accumulation_steps)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    warmup = cfg.warmup_for(total_steps)
    lr = cfg.resolved_lr()
    optimizer = optimizer_for(model, lr, cfg.weight_decay)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
    module = model
    if rt.world > 1:
        module = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)

    save_dir = Path(cfg.save_dir)
    progress = _Progress()
    if cfg.resume:
        progress = _load_state(save_dir, model, optimizer, scaler, cfg)
        log.info("resuming at step %d (epoch %d, batch %d)", progress.step, progress.epoch + 1, progress.batch_in_epoch)
    elif rt.rank == 0 and (save_dir / STATE_DIR).exists():
        log.info("%s holds an earlier run's state; starting afresh (pass --resume to continue it)", save_dir)

    size = f"{n_batches} batches" if job.batches else f"{len(job.lengths)} examples"
    log.info("training %s on %s, %d steps, lr %.1e, warmup %d, device %s%s", job.name, size, total_steps, lr, warmup,
             rt.device, f", amp {rt.amp_dtype}" if rt.amp_dtype else "")
    model.train()
    stop = False
    while progress.epoch < cfg.epochs and not stop:
        epoch = progress.epoch
        if cfg.early_stop and progress.bad_epochs >= cfg.early_stop_nums:
            log.info("early stop: no dev improvement in %d epochs", progress.bad_epochs)
            break
        # The batch order depends only on (seed, epoch): a resumed run replays the same batches.
        if job.batches:
            batches = itertools.islice(job.batches(epoch), rt.rank, batches_per_rank * rt.world, rt.world)
        else:
            batches = training_batches(job.lengths, cfg.batch_size, np.random.default_rng([cfg.seed, epoch]))
            batches = batches[:batches_per_rank * rt.world][rt.rank::rt.world]
        accumulation = cfg.gradient_accumulation_steps
        groups = _grouped(batches, accumulation)
        bar = tqdm(total=math.ceil(batches_per_rank / accumulation), initial=progress.batch_in_epoch,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", disable=not cfg.progress or rt.rank != 0,
                   leave=False)
        seen, loss_sum, stats = 0, 0.0, {}
        for group in itertools.islice(groups, progress.batch_in_epoch, None):
            n_group = sum(len(b) for b in group)
            for idx in group:
                with torch.autocast(rt.device.type, rt.amp_dtype or torch.float32, enabled=rt.amp_dtype is not None):
                    loss, batch_stats = job.loss(module, idx)
                loss = loss.float() / n_group
                scaler.scale(loss).backward()
                loss_sum += float(loss.detach()) * n_group
                seen += len(idx)
                for k, v in batch_stats.items():
                    stats[k] = stats.get(k, 0) + float(v)
            for g in optimizer.param_groups:
                g["lr"] = lr * lr_factor(progress.step, total_steps, warmup)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            progress.step += 1
            progress.batch_in_epoch += 1
            bar.update()
            if progress.step % cfg.logging_steps == 0:
                bar.set_postfix({"loss": f"{loss_sum / seen:.4f}", "lr": f"{optimizer.param_groups[0]['lr']:.2e}",
                                 **{k: f"{v / seen:.4f}" for k, v in stats.items()}})
            if cfg.save_steps and progress.step % cfg.save_steps == 0 and rt.rank == 0:
                _save_state(save_dir, model, optimizer, scaler, progress, cfg)
            if cfg.max_steps and progress.step >= cfg.max_steps:
                stop = True
                break
        bar.close()
        model.eval()
        score = _from_rank0(job.evaluate(), rt)
        model.train()
        progress.epoch += 1
        progress.batch_in_epoch = 0
        improved = score > progress.best_score
        train_loss = loss_sum / max(seen, 1)
        progress.history.append({"epoch": epoch + 1, "step": progress.step, "train_loss": train_loss,
                                 "dev_score": score, "seconds": round(time.time() - t0, 1)})
        if improved:
            progress.best_score, progress.best_epoch, progress.bad_epochs = score, epoch + 1, 0
            if rt.rank == 0:
                job.save_best({"score": score, "epoch": epoch + 1, "step": progress.step})
        else:
            progress.bad_epochs += 1
        if rt.rank == 0:
            _save_state(save_dir, model, optimizer, scaler, progress, cfg)
        log.info("epoch %d: train loss %.4f, dev %s %.4f%s (best %.4f, epoch %d)", epoch + 1, train_loss, job.metric,
                 score, " *" if improved else "", progress.best_score, progress.best_epoch)
    if rt.rank == 0 and progress.best_epoch:
        log.info("best dev %s %.4f at epoch %d; saved in %s", job.metric, progress.best_score, progress.best_epoch,
                 save_dir)
    return TrainResult(save_dir, progress.best_score, progress.best_epoch, progress.step, progress.history,
                       time.time() - t0)


def _from_rank0(score: float, rt: Runtime) -> float:
    """Rank 0's dev score on every rank: GPU kernels may differ in the last bit between ranks, and ranks
    that disagreed on "improved" or "stop early" would leave the others waiting forever."""
    if rt.world == 1:
        return score
    value = torch.tensor([score], dtype=torch.float64, device=rt.device)
    torch.distributed.broadcast(value, src=0)
    return float(value.item())


def _grouped(batches: Iterable, n: int) -> Iterator[list]:
    """Consecutive groups of ``n`` batches (the last may be shorter): one optimizer step each."""
    batches = iter(batches)
    while group := list(itertools.islice(batches, n)):
        yield group


def _save_state(save_dir: Path, model, optimizer, scaler, progress: _Progress, cfg: LoopConfig) -> None:
    mark_ours(save_dir)  # start() let us write here: a run killed before its first checkpoint still owns save_dir
    with atomic_dir(save_dir / STATE_DIR) as tmp:
        save_model(model, str(tmp / "model.safetensors"))  # tied weights (ELECTRA's shared embeddings) stored once
        torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}, tmp / "optimizer.pt")
        state = {**dataclasses.asdict(progress), "config": cfg.fingerprint()}
        (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")


def _load_state(save_dir: Path, model, optimizer, scaler, cfg: LoopConfig) -> _Progress:
    folder = save_dir / STATE_DIR
    if not (folder / "state.json").exists():
        raise ZhclsError(f"--resume: no training state in {folder} (nothing to resume)")
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    saved = state.pop("config")
    changed = [k for k, v in cfg.fingerprint().items() if saved.get(k) != v]
    if changed:
        raise ZhclsError(f"--resume: these settings differ from the interrupted run: {', '.join(changed)}")
    load_model(model, str(folder / "model.safetensors"))
    blob = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scaler.load_state_dict(blob["scaler"])
    torch.set_rng_state(blob["torch_rng"])
    if blob["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    return _Progress(**state)
