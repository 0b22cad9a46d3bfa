"""The data layer: dataset folders and their validation (`dataset`), the tokenizer, batching.

`from zhcls import data; data.load_dataset(...)` reads a folder; the dataset API is re-exported here.
Nothing in this layer imports torch.
"""
from zhcls.data.dataset import (
    LABEL_SEP,
    LEVEL_SEP,
    PROBLEM_TYPES,
    SPLITS,
    TASKS,
    DatasetFolder,
    Example,
    detect_task,
    encode_labels,
    format_example,
    load_dataset,
    predictor_inputs,
    read_examples,
    read_labels,
    read_lines,
    read_texts,
    write_examples,
)

__all__ = ["LABEL_SEP", "LEVEL_SEP", "PROBLEM_TYPES", "SPLITS", "TASKS", "DatasetFolder", "Example", "detect_task",
           "encode_labels", "format_example", "load_dataset", "predictor_inputs", "read_examples", "read_labels",
           "read_lines", "read_texts", "write_examples"]
