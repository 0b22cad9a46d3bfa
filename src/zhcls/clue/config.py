"""The settings of `zhcls clue`; each field is also the command-line option of that name
(`zhcls.options`). No torch here."""
from __future__ import annotations

from dataclasses import dataclass

from zhcls.options import option

ALL_TASKS = "afqmc,tnews,iflytek,cmnli,ocnli,cluewsc2020,csl"
RECIPE_FIELDS = ("learning_rate", "batch_size", "epochs", "max_seq_length")  # each task's own unless given


@dataclass(kw_only=True)
class ClueConfig:
    model_name: str = option(help="zoo name, hub id or local folder")
    tasks: str = option(ALL_TASKS, "comma-separated CLUE tasks")
    data_dir: str | None = option(None, "local copies: DIR/TASK/ with CLUE's JSON files or a dataset folder "
                                  "(default: download CLUE's zips into the cache)")
    output_dir: str = option("./clue_output", "checkpoints, {task}_predict.json, clue_results.json/png")
    overwrite: bool = option(False)
    learning_rate: float | None = option(None, "override every task's recipe")
    batch_size: int | None = option(None, "override every task's recipe")
    epochs: int | None = option(None, "override every task's recipe")
    max_seq_length: int | None = option(None, "override every task's recipe")
    max_train_samples: int = option(0, "first N training examples per task (a quick check; 0: all)")
    init_random: bool = option(False)
    vocab_file: str | None = option(None)
    device: str = option("auto")
    threads: int = option(0)
    seed: int = option(3)
    cache_dir: str | None = option(None)
    progress: bool = True

    def overrides(self) -> dict:
        """The recipe settings given (not None): they replace every task's own."""
        return {k: getattr(self, k) for k in RECIPE_FIELDS if getattr(self, k) is not None}
