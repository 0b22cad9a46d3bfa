"""The settings of `zhcls prune` and `zhcls distill`: the loop's (`LoopConfig`) plus their own. Each field is
also the command-line option of that name (`zhcls.options`); no torch here."""
from __future__ import annotations

from dataclasses import dataclass

from zhcls.errors import ZhclsError
from zhcls.evaluation.config import DatasetOptions
from zhcls.options import option
from zhcls.training.config import LoopConfig

DEFAULT_WIDTHS = ("3/4", "2/3", "1/2")


@dataclass(kw_only=True)
class PruneConfig(LoopConfig, DatasetOptions):
    """PaddleNLP prune.py's flags (batch sizes, epochs, ...) come from `LoopConfig`; these are its own."""

    params_dir: str = option("./checkpoint", "fine-tuned checkpoint folder to prune",
                             flags=("--params_dir", "--params_path"))
    output_dir: str = option("./prune", "width_mult_W/ folders, prune_report.json, PNG (with --vocab: the pruned "
                             "checkpoint folder)")
    # Not options: each width trains into its own folder under --output_dir, from the fine-tuned weights.
    save_dir: str = ""
    init_random: bool = False
    width_mult_list: list[str] = option(list(DEFAULT_WIDTHS), "widths, as fractions or decimals; each must keep a "
                                        "whole number of heads")
    batch_size: int = option(32, flags=("--per_device_train_batch_size", "--batch_size"))
    eval_batch_size: int = option(32, "dev examples per forward", flags=("--per_device_eval_batch_size",))
    epochs: int = option(3, flags=("--num_train_epochs", "--epochs"))
    early_stop: bool = option(False, "stop a width after --early_stop_nums epochs without gain")
    resume: bool = option(False, "continue the interrupted prune in --output_dir")
    temperature: float = option(1.0, "softmax temperature of the logit loss")
    hidden_weight: float = option(1.0, "weight of the hidden-state MSE")
    bench: bool = option(True, "skip the ONNX latency measurement", flags=("--no_bench",))
    # --vocab: `compress.vocab.prune_vocab` instead of width pruning
    vocab: bool = option(False, "prune the vocabulary to the tokens the domain uses instead")
    corpus_files: list[str] = option([], "--vocab: more texts whose tokens are kept", nargs="*")

    def fingerprint(self) -> dict:
        return {k: v for k, v in super().fingerprint().items()
                if k not in ("bench", "eval_batch_size", "vocab", "corpus_files")}


@dataclass(kw_only=True)
class DistillConfig(LoopConfig, DatasetOptions):
    """`zhcls distill`: the loop's flags plus teacher, student and the distillation weights."""

    teacher: str = option(help="fine-tuned teacher checkpoint folder")
    student: str = option(help="zoo name, hub id or folder", flags=("--student", "--model"))
    init_random: bool = option(False, "the student starts from random weights")
    vocab_file: str | None = option(None, "the student's vocab.txt with --init_random")
    unlabeled_file: str | None = option(None, "extra texts, labelled by the teacher (e.g. data.txt)")
    save_dir: str = option("./distilled", "where the student's best checkpoint is written")
    temperature: float = option(2.0, "softmax temperature of the soft labels")
    alpha: float = option(0.5, "weight of the teacher's soft labels (1 - alpha: gold)")
    hidden_weight: float = option(0.0, "> 0: also match hidden states through a projection (same vocab.txt needed)")
    cache_dir: str | None = option(None)

    def check(self) -> None:
        super().check()
        if not 0 <= self.alpha <= 1 or self.temperature <= 0 or self.hidden_weight < 0:
            raise ZhclsError("--alpha must be in [0, 1], --temperature > 0 and --hidden_weight >= 0")
