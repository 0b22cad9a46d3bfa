"""The evaluation layer: metrics (no model needed) and per-split reports of a model folder."""
from zhcls.evaluation.reports import evaluate

__all__ = ["evaluate"]
