"""The settings of the commands that run a trained model (`zhcls predict`, and `evaluate`, `analyze`,
`explain` above): where it runs, and the decisions a checkpoint stores that a run may override.

Each field is also the command-line option of that name (`zhcls.options`); no torch or numpy here.
"""
from __future__ import annotations

from dataclasses import dataclass

from zhcls.options import option


@dataclass(kw_only=True)
class RuntimeOptions:
    """Where and how a model runs: PaddleNLP predict.py's device, max_seq_length and batch_size."""

    device: str = option("auto")
    max_seq_length: int | None = option(None)
    batch_size: int = option(32)


@dataclass(kw_only=True)
class DecisionOptions:
    """Multi-label decisions and the long-text policy; unset: the checkpoint's own (tuned at training)."""

    threshold: float | None = option(None, "multi-label: one threshold for every label (default: the thresholds "
                                     "tuned on dev at training, else 0.5)")
    min_labels: int = option(0, "multi-label: at least this many labels per text")
    max_labels: int | None = option(None, "multi-label: at most this many labels per text")
    hierarchy_policy: str | None = option(None)
    long_text: str | None = option(None)
    stride: int | None = option(None)
    window_pooling: str | None = option(None)

    def check_threshold(self) -> None:
        if self.threshold is not None:
            from zhcls.inference.predictor import check_threshold

            check_threshold(self.threshold)

    def long_text_override(self, params_path: str):
        """The `LongText` these options make of the checkpoint's policy (None: no override), its stride
        checked against the window before any model is loaded."""
        if self.long_text is None and self.stride is None and self.window_pooling is None:
            return None
        from zhcls.data.long_text import LongText
        from zhcls.inference.loading import read_meta

        meta = read_meta(params_path)
        stored = LongText.from_meta(meta)
        long_text = LongText(self.long_text or stored.policy, stored.stride if self.stride is None else self.stride,
                             self.window_pooling or stored.pooling)
        long_text.check((getattr(self, "max_seq_length", None) or meta.get("max_seq_length", 128)) - 2)
        return long_text


@dataclass(kw_only=True)
class PredictConfig(RuntimeOptions, DecisionOptions):
    """`zhcls predict`: PaddleNLP predict.py's flags, plus top-k and the backend."""

    params_path: str = option("./checkpoint")
    dataset_dir: str = option(".", "folder holding --data_file")
    data_file: str = option("data.txt", "one text (or text_a<TAB>text_b) per line")
    label_file: str | None = option(None, "optional: check the model's labels against this label.txt")
    output_file: str = option("output.txt", "text<TAB>label<TAB>confidence per input line (multi-label: "
                              "text<TAB>label1,label2<TAB>score1,score2)")
    topk: int = option(1, "also write the k best labels")
    backend: str = option("auto")
    progress: bool = True
