"""Pretraining on a text corpus (`zhcls pretrain`): corpus streaming and packing, masking, the MLM and
ELECTRA heads, and the job that runs them on the one training loop."""
from zhcls.pretrain.pretraining import PretrainConfig, pretrain

__all__ = ["PretrainConfig", "pretrain"]
