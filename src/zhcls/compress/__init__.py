"""Compression that stays trainable: width pruning with distillation (`prune`), task distillation
(`distill`) and vocabulary pruning (`vocab`). Every output is an ordinary checkpoint folder."""
