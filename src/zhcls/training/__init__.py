"""The training layer: the settings (`config`, no torch), the one training loop (`loop`) and what plugs a
model and a loss into it (`finetune` for classification). `train` and `TrainResult` load on first use, so
that `zhcls --help` can read the settings without importing torch."""
import importlib

from zhcls.training.config import LoopConfig, TrainConfig

__all__ = ["LoopConfig", "TrainConfig", "TrainResult", "train"]


def __getattr__(name):
    if name in ("train", "TrainResult"):
        return getattr(importlib.import_module("zhcls.training.finetune"), name)
    raise AttributeError(f"module 'zhcls.training' has no attribute {name!r}")
