"""`zhcls embed`: the sentence embeddings of a file's texts, as .npy (float32, one row per line) or JSON lines.

The vectors are `Predictor.embed`'s (mean pooling over the attention mask, L2-normalised, the model's own
prefix for the role), from either backend: a checkpoint or encoder folder (PyTorch) or an export folder
(ONNX Runtime, fp32 or INT8)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from zhcls import data
from zhcls.errors import ZhclsError
from zhcls.fewshot.config import EmbedConfig
from zhcls.inference.loading import load
from zhcls.inference.predictor import ROLES, Predictor
from zhcls.io import atomic_open, check_output_files

FORMATS = (".npy", ".jsonl")


def read_texts(path) -> list[str]:
    """One text per line (blank lines skipped); refuses a missing, undecodable or empty file."""
    texts = [e.text_a for e in data.read_texts(path, "text")]
    if not texts:
        raise ZhclsError(f"{path}: no text in it")
    return texts


def embedder(params_path, *, backend: str = "auto", variant: str = "auto", device: str = "auto",
             batch_size: int = 32, max_seq_length: int | None = None) -> Predictor:
    """The predictor whose `embed` gives the vectors: a fine-tuned checkpoint, a pretrained encoder folder
    (no head needed) or an export folder."""
    onnx = backend == "onnx" or (backend == "auto" and (Path(params_path) / "model.onnx").exists())
    options = {"variant": variant} if onnx else {}
    return load(params_path, backend=backend, device=device, batch_size=batch_size, max_seq_length=max_seq_length,
                require_head=False, **options)


def write_embeddings(path, texts: list[str], vectors: np.ndarray) -> None:
    """.npy: the float32 matrix; .jsonl: one ``{"text": ..., "embedding": [...]}`` per line. Atomic."""
    if Path(path).suffix == ".npy":
        with atomic_open(path, "wb") as f:
            np.save(f, vectors.astype(np.float32))
        return
    with atomic_open(path) as f:
        for text, vector in zip(texts, vectors):
            f.write(json.dumps({"text": text, "embedding": [round(float(v), 7) for v in vector]},
                               ensure_ascii=False) + "\n")


def embed_file(config: EmbedConfig | None = None, **kwargs) -> np.ndarray:
    """Embed every line of ``data_file`` into ``output_file``; returns the vectors."""
    cfg = config or EmbedConfig(**kwargs)
    if Path(cfg.output_file).suffix not in FORMATS:
        raise ZhclsError(f"--output_file {cfg.output_file}: write .npy or .jsonl")
    if cfg.role not in ROLES:
        raise ZhclsError(f"--role {cfg.role}: choose one of {', '.join(ROLES)}")
    check_output_files([cfg.output_file], flag="--output_file", inputs=[cfg.data_file])
    texts = read_texts(cfg.data_file)  # before the model is loaded: fail fast
    predictor = embedder(cfg.params_path, backend=cfg.backend, variant=cfg.variant, device=cfg.device,
                         batch_size=cfg.batch_size, max_seq_length=cfg.max_seq_length)
    vectors = predictor.embed(texts, role=cfg.role, progress=cfg.progress)
    write_embeddings(cfg.output_file, texts, vectors)
    return vectors
