"""The settings of `zhcls analyze dirty|sparse`, `augment` and `explain`; each field is also the
command-line option of that name (`zhcls.options`). No torch or numpy here."""
from __future__ import annotations

from dataclasses import dataclass

from zhcls.inference.config import RuntimeOptions
from zhcls.options import option


@dataclass(kw_only=True)
class AnalyzeOptions(RuntimeOptions):
    """What both analyses read: the dataset folder and, optionally, a trained checkpoint's view."""

    dataset_dir: str = option()
    train_file: str = option("train.txt")
    label_file: str = option("label.txt")
    params_path: str | None = option(None, "a trained checkpoint: adds its view (optional)")
    output_dir: str | None = option(None, "where the files go (default: --dataset_dir)")
    seed: int = option(0)
    progress: bool = True


@dataclass(kw_only=True)
class AugmentOptions:
    aug_strategy: str = option("mix", "mix, or a comma list of synonym (substitute), homophone, insert, delete, swap")
    create_n: int = option(2, "new rows per row (at most)")
    aug_percent: float = option(0.1, "share of words changed, in (0, 1]")


@dataclass(kw_only=True)
class DirtyConfig(AnalyzeOptions):
    dirty_num: int | None = option(None, "rows to flag (default: confident learning's estimate)")
    method: str | None = option(None, "oof: out-of-fold TF-IDF baseline; model: the checkpoint's scores; both "
                                "(default with --params_path)", choices=("oof", "model", "both"))
    folds: int = option(5, "folds of the out-of-fold scores")


@dataclass(kw_only=True)
class SparseConfig(AnalyzeOptions, AugmentOptions):
    strategy: str | None = option(None, "augment the support of the sparse examples, or pick rows of "
                                  "--unlabeled_file to annotate", choices=("augment", "annotate"))
    sparse_num: int = option(100, "least supported dev examples to report")
    support_num: int = option(100, "supporting training rows to augment")
    annotate_num: int = option(100, "rows of --unlabeled_file to pick for annotation")
    support_k: int = option(5, "support = mean similarity to this many neighbours")
    dev_file: str = option("dev.txt")
    unlabeled_file: str = option("data.txt", "unlabelled rows in --dataset_dir (annotate)")


@dataclass(kw_only=True)
class AugmentConfig(AugmentOptions):
    train_path: str = option(help="dataset file to augment")
    aug_path: str = option(help="where the augmented rows go (a dataset file)")
    label_file: str | None = option(None, "default: label.txt beside --train_path")
    seed: int = option(0)
    task: str = option("auto")
    problem_type: str = option("multi_class")
    progress: bool = True


@dataclass(kw_only=True)
class ExplainConfig(RuntimeOptions):
    params_path: str = option("./checkpoint", "checkpoint folder")
    text: list[str] | None = option(None, "texts to explain (a pair: 'text_a<TAB>text_b')")
    data_file: str | None = option(None, "or a file of texts, one per line")
    dataset_dir: str | None = option(None, "adds the supporting training rows (sentence level)")
    train_file: str = option("train.txt")
    label_file: str = option("label.txt")
    support_num: int = option(3, "supporting training rows per text")
    steps: int = option(20, "integrated-gradients steps")
    output_file: str = option("explain.html", "HTML highlight of the attributions")
