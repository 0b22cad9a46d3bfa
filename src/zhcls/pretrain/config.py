"""The settings of `zhcls pretrain`: the loop's (`LoopConfig`) plus the corpus, the model and the objective.
Each field is also the command-line option of that name (`zhcls.options`); no torch here."""
from __future__ import annotations

from dataclasses import dataclass

from zhcls.errors import ZhclsError
from zhcls.options import option
from zhcls.training.config import LoopConfig

OBJECTIVES = ("mlm", "electra")


@dataclass(kw_only=True)
class PretrainConfig(LoopConfig):
    """The loop's settings plus the corpus, the model and the objective."""

    corpus: list[str] = option(help="text files or folders, one sentence or document per line (streamed)")
    model_name: str = option("uer/chinese_roberta_L-4_H-256", "zoo name, hub id or folder to continue from (a zhcls "
                             "pretrain folder keeps its heads)")
    save_dir: str = option("./pretrained", "checkpoint folder (`zhcls train --model` takes it)")
    vocab_file: str | None = option(None)
    vocab_from_data: bool = option(False, "build a WordPiece vocab from the corpus")
    vocab_size: int = option(8000, "size of the --vocab_from_data vocab")
    objective: str = option("mlm", "masked language model, or ELECTRA's replaced-token detection", choices=OBJECTIVES)
    mask_prob: float = option(0.15, "share of the tokens masked")
    whole_word_masking: bool = option(False, "mask whole Chinese words (jieba), as HFL's wwm models")
    max_seq_length: int = option(128, "lines are packed into sequences of this length")
    epochs: int = option(1)  # one pass over a real corpus is long: --max_steps is the usual budget
    cache_dir: str | None = option(None)

    def check(self) -> None:
        super().check()
        if self.objective not in OBJECTIVES:
            raise ZhclsError(f"--objective {self.objective}: choose from {', '.join(OBJECTIVES)}")
        if not 0 < self.mask_prob < 1:
            raise ZhclsError(f"--mask_prob {self.mask_prob}: must be between 0 and 1")
        if not self.corpus:
            raise ZhclsError("--corpus: name at least one text file or folder")
