"""`zhcls.load()`: the predictor for a model folder, above both backends. A checkpoint folder gets the
PyTorch backend, an export folder (model.onnx) ONNX Runtime; each backend is imported only when chosen,
so an ONNX deployment never imports torch."""
from __future__ import annotations

import json
from pathlib import Path

from zhcls.errors import ZhclsError
from zhcls.inference.predictor import Predictor


def load(path, *, backend: str = "auto", device: str = "auto", batch_size: int = 32,
         max_seq_length: int | None = None, require_head: bool = True, **kwargs) -> Predictor:
    """A predictor for a checkpoint folder (PyTorch) or an export folder with model.onnx (ONNX Runtime).
    ``require_head=False`` also loads a pretrained encoder without a trained head, for `Predictor.embed` only."""
    path = Path(path)
    if not path.is_dir():
        raise ZhclsError(f"{path}: no such model folder (expected a checkpoint from `zhcls train` or an export from `zhcls export`)")
    if backend == "auto":
        backend = "onnx" if (path / "model.onnx").exists() else "torch"
    if backend == "onnx":
        from zhcls.inference.onnx_predictor import OnnxPredictor

        return OnnxPredictor.from_dir(path, device=device, batch_size=batch_size, max_seq_length=max_seq_length, **kwargs)
    if backend != "torch":
        raise ZhclsError(f"unknown backend {backend!r}: expected torch, onnx or auto")
    from zhcls.inference.torch_predictor import TorchPredictor
    from zhcls.models.checkpoint import load_checkpoint

    model, tokenizer, meta = load_checkpoint(path, require_head)
    return TorchPredictor(model, tokenizer, meta, device=device, batch_size=batch_size,
                          max_seq_length=max_seq_length, **kwargs)


def read_meta(path) -> dict:
    """The ``zhcls`` block of a model folder's config.json (task, problem type, max length), read
    without loading the model so that data can be validated first."""
    config = Path(path) / "config.json"
    if not config.exists():
        raise ZhclsError(f"{path}: not a model folder (no config.json); expected a checkpoint from `zhcls train` "
                         "or an export from `zhcls export`")
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("zhcls", {})
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ZhclsError(f"{config}: not valid JSON ({e})") from None
