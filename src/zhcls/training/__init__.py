"""The training layer: the one training loop (`loop`) and what plugs a model and a loss into it
(`finetune` for classification)."""
from zhcls.training.finetune import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
