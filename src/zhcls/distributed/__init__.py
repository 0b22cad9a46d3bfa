"""Prediction across machines on Ray (the ``[ray]`` extra): `predict_dataset` for Ray Data pipelines,
`predict_files` for `zhcls predict --engine ray`. Ray is imported inside the functions, so importing
this package costs nothing without it."""
from zhcls.distributed.ray_predict import predict_dataset, predict_files

__all__ = ["predict_dataset", "predict_files"]
