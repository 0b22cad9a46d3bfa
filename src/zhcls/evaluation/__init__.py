"""The evaluation layer: metrics (no model needed), per-split reports of a model folder, and the settings
of the commands that make them (`config`). `evaluate` loads on first use, so that the settings can be
read without numpy."""
import importlib

__all__ = ["evaluate"]


def __getattr__(name):
    if name == "evaluate":
        return importlib.import_module("zhcls.evaluation.reports").evaluate
    raise AttributeError(f"module 'zhcls.evaluation' has no attribute {name!r}")
