"""The CLUE benchmark (`zhcls clue`): task data, conversion to dataset folders, per-task recipes,
fine-tuning, submission files and the results table."""
from zhcls.clue.runner import ClueConfig, clue, format_table

__all__ = ["ClueConfig", "clue", "format_table"]
