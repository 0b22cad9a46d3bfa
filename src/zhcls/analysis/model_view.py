"""A trained checkpoint's view of a dataset folder: its predictor, checked against the folder's labels."""
from __future__ import annotations

from zhcls import data
from zhcls.errors import ZhclsError
from zhcls.inference.loading import read_meta
from zhcls.inference.torch_predictor import TorchPredictor


def checked_predictor(params_path, ds: data.DatasetFolder, *, device: str = "auto", batch_size: int = 32,
                      max_seq_length: int | None = None, label_file: str = "label.txt") -> TorchPredictor:
    """The PyTorch predictor of ``params_path``; refuses a model whose labels or task differ from the folder's."""
    from zhcls.inference.loading import load

    meta = read_meta(params_path)
    if meta.get("task", ds.task) != ds.task:
        raise ZhclsError(f"--params_path {params_path}: the model reads {meta['task']} inputs, the dataset "
                         f"holds {ds.task} inputs")
    predictor = load(params_path, backend="torch", device=device, batch_size=batch_size, max_seq_length=max_seq_length)
    if predictor.labels != ds.labels:
        ours = ", ".join(predictor.labels[:4]) + (", ..." if len(predictor.labels) > 4 else "")
        raise ZhclsError(f"--params_path {params_path}: the model's labels ({ours}) differ from {label_file} "
                         f"({len(predictor.labels)} vs {len(ds.labels)} labels, or another order); analyse with the "
                         "dataset the model was trained on")
    return predictor
