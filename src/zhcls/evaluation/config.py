"""The settings of `zhcls evaluate` and `zhcls baseline`; each field is also the command-line option of
that name (`zhcls.options`). No torch or numpy here."""
from __future__ import annotations

from dataclasses import dataclass

from zhcls.inference.config import DecisionOptions, RuntimeOptions
from zhcls.options import option


@dataclass(kw_only=True)
class DatasetOptions:
    """A dataset folder and its files, under PaddleNLP's names."""

    dataset_dir: str = option()
    train_file: str = option("train.txt")
    dev_file: str = option("dev.txt")
    label_file: str = option("label.txt")


@dataclass(kw_only=True)
class BaselineConfig(DatasetOptions):
    """`zhcls baseline`: the dataset folder and how to read it."""

    task: str = option("auto")
    problem_type: str = option("multi_class")


@dataclass(kw_only=True)
class EvaluateConfig(DatasetOptions, RuntimeOptions, DecisionOptions):
    """`zhcls evaluate`: reports per split of a checkpoint or export folder."""

    test_file: str | None = option(None, "test file name in --dataset_dir (default: test.txt, used when present; a "
                                   "name given here must exist)")
    params_path: str = option("./checkpoint")
    output_dir: str | None = option(None, "where reports go (default: PARAMS_PATH/eval)")
    splits: str | None = option(None, "comma-separated splits to evaluate, each of which must exist (default: "
                                "train, dev, and test when present)")
    plot: bool = option(True, "no confusion-matrix PNG (text reports only)", flags=("--no_plot",))
    backend: str = option("auto")
    baseline: bool = option(True)
    progress: bool = True

    def split_list(self) -> list[str] | None:
        return None if self.splits is None else [s.strip() for s in self.splits.split(",") if s.strip()]
