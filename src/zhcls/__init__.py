"""zhcls: Chinese text classification with small pretrained Transformer encoders.

    import zhcls
    zhcls.train(dataset_dir="data/kuake_qic", model_name="ernie-3.0-mini-zh", save_dir="ckpt")
    zhcls.evaluate("ckpt", "data/kuake_qic")
    zhcls.load("ckpt").predict(["头痛怎么办"])

Submodules load on first use, so `import zhcls` (and `zhcls --help`) stays fast, and the ONNX
predictor path never imports torch.
"""
import importlib

__version__ = "0.1.0"

_API = {"train": "training", "evaluate": "evaluation", "load": "inference.loading", "TrainConfig": "training"}
__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'zhcls' has no attribute {name!r}")
