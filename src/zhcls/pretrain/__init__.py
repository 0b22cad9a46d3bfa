"""Pretraining on a text corpus (`zhcls pretrain`): its settings (`config`, no torch), corpus streaming and
packing, masking, the MLM and ELECTRA heads, and the job that runs them on the one training loop."""
import importlib

from zhcls.pretrain.config import PretrainConfig

__all__ = ["PretrainConfig", "pretrain"]


def __getattr__(name):
    if name == "pretrain":
        return importlib.import_module("zhcls.pretrain.pretraining").pretrain
    raise AttributeError(f"module 'zhcls.pretrain' has no attribute {name!r}")
