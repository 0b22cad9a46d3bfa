"""The CLUE benchmark (`zhcls clue`): its settings (`config`, no torch), task data, conversion to dataset
folders, per-task recipes, fine-tuning, submission files and the results table."""
import importlib

from zhcls.clue.config import ClueConfig

__all__ = ["ClueConfig", "clue", "format_table"]


def __getattr__(name):
    if name in ("clue", "format_table"):
        return getattr(importlib.import_module("zhcls.clue.runner"), name)
    raise AttributeError(f"module 'zhcls.clue' has no attribute {name!r}")
