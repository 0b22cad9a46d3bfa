"""What both serving engines share: `ServeConfig` (the flags of `zhcls serve`), the warmed-up predictor,
the model's version.

Engines: ``uvicorn`` (`serve.py`: zhcls's ASGI app with its own dynamic batcher; the `[serve]` extra) and
``triton`` (`triton.py`: NVIDIA Triton Inference Server through PyTriton, Triton's dynamic batcher; the
`[triton]` extra). Both wrap the same `zhcls.load(...)` predictor. This module imports neither.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from zhcls.deploy.config import ServeConfig
from zhcls.inference.loading import load
from zhcls.inference.predictor import Predictor

# Texts of several lengths, so that warm-up runs the shapes real traffic will (ONNX Runtime and torch
# both allocate per shape on first use).
WARMUP_TEXTS = ["头痛", "感冒了吃什么药好得快", "高血压患者平时饮食需要注意什么，可以喝酒吗？" * 4]


def load_predictor(cfg: ServeConfig) -> Predictor:
    """The predictor ``cfg`` asks for, with ``--threads`` applied, warmed up on every batch shape."""
    kwargs = {}
    backend = cfg.backend
    if backend == "auto":
        backend = "onnx" if (Path(cfg.params_path) / "model.onnx").exists() else "torch"
    if backend == "onnx":
        kwargs["threads"] = cfg.threads or None
    elif cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    predictor = load(cfg.params_path, backend=backend, device=cfg.device, batch_size=min(cfg.batch_size, cfg.max_batch_size),
                     max_seq_length=cfg.max_seq_length, **kwargs)
    texts = WARMUP_TEXTS if predictor.task != "pair" else [(t, t) for t in WARMUP_TEXTS]
    for n in sorted({1, min(cfg.batch_size, cfg.max_batch_size), cfg.max_batch_size}):
        predictor.predict([texts[i % len(texts)] for i in range(n)])
    return predictor


def model_version(params_path) -> str:
    """12 hex digits of the SHA-256 of the model's config and weights: changes whenever the model does."""
    path, digest = Path(params_path), hashlib.sha256()
    for name in ("config.json", "model.safetensors", "model.onnx", "model.int8.onnx"):
        if (path / name).is_file():
            with open(path / name, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:12]

