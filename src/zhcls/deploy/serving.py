"""What both serving engines share: `ServeConfig` (the flags of `zhcls serve`), the warmed-up predictor,
the model's version.

Engines: ``uvicorn`` (`serve.py`: zhcls's ASGI app with its own dynamic batcher; the `[serve]` extra) and
``triton`` (`triton.py`: NVIDIA Triton Inference Server through PyTriton, Triton's dynamic batcher; the
`[triton]` extra). Both wrap the same `zhcls.load(...)` predictor. This module imports neither.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from zhcls.data.long_text import LongText
from zhcls.errors import ZhclsError
from zhcls.inference.loading import load, read_meta
from zhcls.inference.predictor import Predictor

# Texts of several lengths, so that warm-up runs the shapes real traffic will (ONNX Runtime and torch
# both allocate per shape on first use).
WARMUP_TEXTS = ["头痛", "感冒了吃什么药好得快", "高血压患者平时饮食需要注意什么，可以喝酒吗？" * 4]


@dataclass
class ServeConfig:
    """`zhcls serve`'s flags."""
    params_path: str
    backend: str = "auto"
    device: str = "cpu"
    host: str = "127.0.0.1"
    port: int = 8000
    name: str | None = None  # default: the params folder's base name
    model_version: str | None = None  # default: a hash of the model files
    max_batch_size: int = 32  # texts merged across requests into one predict call
    # Texts per forward inside that call, after predict() sorts them by length: each forward pads to its
    # own longest text, so on CPU small forwards of similar lengths beat one padded forward (measured:
    # 32 merged KUAKE-QIC texts, ERNIE 3.0 Micro, 1 thread: 2.4 ms/text in forwards of 8, 4.6 in one).
    batch_size: int = 8
    max_delay_ms: float = 2.0
    max_queue: int = 256
    drain_timeout: float = 30.0  # on SIGTERM: seconds to answer what was accepted; the rest get 503
    max_texts_per_request: int = 64
    max_request_bytes: int = 1 << 20
    # What one request may make the model compute: sliding windows of one text, and the tokens of all its
    # inputs (windows included). 64 texts of 128 tokens are 8192; one text of 64 windows of 512 is 32768.
    max_windows_per_text: int = 64
    max_tokens_per_request: int = 65536
    timeout: float = 60.0  # seconds from a request's arrival to its answer; later: 504, and it is dropped
    # uvicorn's limit_concurrency (connections and requests at once; above it: 503) and listen backlog.
    # Together with max_request_bytes they bound the memory the bodies being read can take.
    max_connections: int = 512
    backlog: int = 2048
    max_seq_length: int | None = None
    threads: int = 0  # 0: the backend's default
    engine: str = "uvicorn"  # or "triton"
    access_log: bool = True
    grpc_port: int | None = None  # triton only; default port + 1
    metrics_port: int | None = None  # triton only; default port + 2

    @property
    def model_name(self) -> str:
        return self.name or Path(self.params_path).resolve().name

    def check(self) -> None:
        """Flags and the model folder, checked before any engine starts."""
        for flag in ("max_batch_size", "batch_size", "max_queue", "max_texts_per_request", "max_request_bytes",
                     "max_windows_per_text", "max_tokens_per_request", "max_connections", "backlog"):
            if getattr(self, flag) < 1:
                raise ZhclsError(f"--{flag} must be >= 1")
        if self.max_delay_ms < 0:
            raise ZhclsError("--max_delay_ms must be >= 0")
        for flag in ("drain_timeout", "timeout"):
            if not getattr(self, flag) > 0:
                raise ZhclsError(f"--{flag} must be > 0")
        if self.engine not in ("uvicorn", "triton"):
            raise ZhclsError(f"--engine {self.engine}: expected uvicorn or triton")
        if not 0 <= self.port < 65536:
            raise ZhclsError(f"--port {self.port}: not a port number")
        meta = read_meta(self.params_path)  # a missing or broken model folder fails now, not in the background
        LongText.from_meta(meta).check((self.max_seq_length or meta.get("max_seq_length", 128)) - 2)


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

