"""The settings of every command that trains: the loop's (`LoopConfig`) and fine-tuning's (`TrainConfig`).

Each field is also the command-line option of that name (`zhcls.options`); this module imports neither
torch nor numpy, so that `zhcls --help` can build the parsers from it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from zhcls.errors import ZhclsError
from zhcls.evaluation.config import DatasetOptions
from zhcls.options import option

PRETRAINED_LR, FROM_SCRATCH_LR = 3e-5, 5e-4
DEFAULT_WARMUP = 0.1
# Settings that may change between an interrupted run and its --resume: they do not change the result.
RUNTIME_FIELDS = frozenset({"save_dir", "device", "resume", "progress", "threads", "logging_steps", "save_steps",
                            "max_steps", "early_stop", "early_stop_nums", "cache_dir", "overwrite", "baseline"})
LOSSES = ("ce", "focal")
METRICS = ("accuracy", "micro_f1", "macro_f1", "weighted_f1")


@dataclass(kw_only=True)
class LoopConfig:
    """The loop's settings, with PaddleNLP train.py's names and defaults; every command that trains extends it."""

    save_dir: str = option("./checkpoint", "where the best checkpoint is written: a missing or empty folder, or one "
                           "zhcls wrote (else refused; see --overwrite)")
    overwrite: bool = option(False)
    device: str = option("auto")
    max_seq_length: int = option(128)
    batch_size: int = option(32, "training examples per batch")
    learning_rate: float | None = option(None)  # None: 3e-5 for pretrained weights, 5e-4 from scratch
    epochs: int = option(10, "passes over the training data")
    early_stop: bool = option(False, "stop after --early_stop_nums epochs without dev improvement")
    early_stop_nums: int = option(3, "epochs without dev improvement before --early_stop stops")
    logging_steps: int = option(5, "update the progress bar's loss every N steps")
    weight_decay: float = option(0.0, "AdamW weight decay (never on biases and LayerNorm)")
    warmup: bool = option(False, "linear warmup (with --warmup_steps or --warmup_proportion)")
    warmup_steps: int = option(0, "linear warmup over N steps (wins over --warmup_proportion)")
    warmup_proportion: float | None = option(None, "warmup as a ratio of all steps (default: 0, or 0.1 with "
                                             "--warmup or --init_random)")
    seed: int = option(3)
    init_random: bool = option(False)  # weights start random: a higher default learning rate and 10 % warmup
    amp: str = option("auto")  # auto (bf16/fp16 on GPU, off on CPU) | none | bf16 | fp16
    gradient_accumulation_steps: int = option(1, "batches per optimizer step")
    resume: bool = option(False, "continue the interrupted run in --save_dir")
    save_steps: int = option(0, "also save the resumable state every N steps (0: at each evaluation)")
    max_steps: int = option(0, "stop after N optimizer steps (0: no limit)")
    threads: int = option(0)
    progress: bool = True  # not an option: `zhcls -q` turns it off

    def resolved_lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return FROM_SCRATCH_LR if self.init_random else PRETRAINED_LR

    def warmup_for(self, total_steps: int) -> int:
        """--warmup_steps wins, then --warmup_proportion; --warmup alone, and training from scratch, mean 10 %."""
        if self.warmup_steps:
            return self.warmup_steps
        proportion = self.warmup_proportion
        if proportion is None:
            proportion = DEFAULT_WARMUP if (self.warmup or self.init_random) else 0.0
        return int(total_steps * proportion)

    def fingerprint(self) -> dict:
        """The settings a resumed run must share with the original, or the resumed result means nothing."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUNTIME_FIELDS}

    def check(self) -> None:
        """Every setting that would crash the loop, or quietly train nothing, is refused up front."""
        for name in ("batch_size", "epochs", "gradient_accumulation_steps", "logging_steps", "early_stop_nums"):
            if getattr(self, name) < 1:
                raise ZhclsError(f"--{name} {getattr(self, name)}: must be >= 1")
        for name in ("warmup_steps", "save_steps", "max_steps", "threads"):
            if getattr(self, name) < 0:
                raise ZhclsError(f"--{name} {getattr(self, name)}: must be >= 0")
        if self.warmup_proportion is not None and not 0 <= self.warmup_proportion <= 1:
            raise ZhclsError(f"--warmup_proportion {self.warmup_proportion}: must be between 0 and 1")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ZhclsError(f"--learning_rate {self.learning_rate}: must be > 0")


@dataclass(kw_only=True)
class TrainConfig(LoopConfig, DatasetOptions):
    """Every flag of PaddleNLP's multi_class train.py, with its name and default, plus zhcls's own; the
    dataset's come from `DatasetOptions`, the loop's (batch size, learning rate, epochs, early stopping,
    ...) from `LoopConfig`."""

    model_name: str = option("ernie-3.0-medium-zh")
    init_from_ckpt: str | None = option(None, "start from these weights (checkpoint folder or .safetensors)")
    # zhcls's own
    task: str = option("auto")
    problem_type: str = option("multi_class")
    vocab_file: str | None = option(None)
    vocab_from_data: bool = option(False, "build a WordPiece vocab from the training texts")
    vocab_size: int = option(8000, "size of the --vocab_from_data vocab")
    prune_vocab: bool = option(False, "keep only the vocabulary the dataset's texts use (train, dev, test): "
                               "multilingual-e5's 250k-row embedding shrinks to the corpus's pieces")
    head_init: str = option("random", "probe: fit the head on the frozen encoder's features before fine-tuning "
                            "(linear probe, then fine-tune: fast on sentence encoders such as multilingual-e5)",
                            choices=("random", "probe"))
    cache_dir: str | None = option(None)
    # multi-label, long texts, imbalanced classes
    metric: str | None = option(None, "dev score that picks the best checkpoint and tunes the thresholds (default: "
                                "accuracy, multi-label micro_f1)", choices=METRICS)
    threshold_min_support: int = option(10, "multi-label: a label gets its own tuned threshold with this many dev "
                                        "positives, else the global one")
    hierarchy_policy: str = option("add_parents")
    long_text: str = option("truncate")
    stride: int = option(0)
    window_pooling: str = option("mean")
    class_weights: str = option("none", "none, balanced, or a FILE of label<TAB>weight lines (multi-class CE "
                                "weights; multi-label pos_weight)")
    loss: str = option("ce", "cross-entropy (multi-label: BCE) or focal loss", choices=LOSSES)
    focal_gamma: float = option(2.0, "--loss focal: the focusing exponent")
    baseline: bool = option(True)  # read by `zhcls train`, which prints the baseline's dev score beside the model's
