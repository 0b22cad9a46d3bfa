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
    """`zhcls predict`: PaddleNLP predict.py's flags, plus top-k and the backend; streamed inputs of any size
    (`inference.streaming`) and the Ray engine (`zhcls.distributed`)."""

    params_path: str = option("./checkpoint")
    dataset_dir: str = option(".", "folder holding --data_file")
    data_file: list[str] = option(["data.txt"], "one text (or text_a<TAB>text_b) per line; or .jsonl / .parquet "
                                  "files; several files or globs ('logs/*.jsonl') are read in order")
    input_format: str = option("auto", "auto: from each file's suffix (.jsonl/.json, .parquet, else text lines)",
                               choices=("auto", "text", "jsonl", "parquet"))
    text_field: str = option("text", "JSONL / Parquet: the field holding the text")
    text_pair_field: str = option("text_pair", "JSONL / Parquet: the second text of a pair model")
    label_file: str | None = option(None, "optional: check the model's labels against this label.txt")
    output_file: str = option("output.txt", "text<TAB>label<TAB>confidence per input line (multi-label: "
                              "text<TAB>label1,label2<TAB>score1,score2); a .jsonl name: one JSON object per line")
    topk: int = option(1, "also write the k best labels")
    on_error: str = option("fail", "a malformed input record (FILE:LINE): stop with an error, or skip it "
                           "(counted in the summary)", choices=("fail", "skip"))
    resume: bool = option(False, "continue an interrupted run from OUTPUT_FILE.partial")
    chunk_size: int = option(4096, "texts read, scored and written at a time (memory is bounded by a chunk)")
    backend: str = option("auto")
    threads: int | None = option(None, "ONNX Runtime intra-op threads (default: the cores, at most 8; "
                                 "with --engine ray: per worker, default 1)")
    engine: str = option("local", "local: this process; ray: Ray Data actors on a Ray cluster (the [ray] extra)",
                         choices=("local", "ray"))
    address: str | None = option(None, "--engine ray: the cluster's address (default: a local Ray for this run)")
    num_workers: int = option(1, "--engine ray: predictor actors (one ONNX model each)")
    progress: bool = True

    def decision(self) -> dict:
        """The keyword arguments of `Predictor.predict` these options set."""
        return {"topk": self.topk, "threshold": self.threshold, "min_labels": self.min_labels,
                "max_labels": self.max_labels, "hierarchy_policy": self.hierarchy_policy}

    def inputs(self, paths) -> list:
        """Everything the command reads (the data files ``paths``, the model, the label file): the output
        may be none of them."""
        label_file = [f"{self.dataset_dir}/{self.label_file}"] if self.label_file else []
        return [*paths, self.params_path, *label_file]

    def check(self) -> None:
        """The flags checked before any file is read or model loaded."""
        from zhcls.errors import ZhclsError

        if self.chunk_size < 1:
            raise ZhclsError(f"--chunk_size {self.chunk_size}: must be >= 1")
        if self.topk < 1:
            raise ZhclsError(f"--topk {self.topk}: must be at least 1")
        self.check_threshold()
