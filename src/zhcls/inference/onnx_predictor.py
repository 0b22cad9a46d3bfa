"""ONNX Runtime backend: `zhcls.load(export_dir)` serves an export folder without torch.

An export folder (see export.py) holds up to three variants of one model:
``model.onnx`` (fp32), ``model.int8.onnx`` (passed the export's accuracy gate) and ``model.fp16.onnx``.
``variant="auto"`` takes fp16 on a CUDA GPU when it is there, else INT8 when it is there, else fp32.

Like the PyTorch path, inputs longer than max_seq_length are cut by the checkpoint's long-text policy
(truncated by default, as PaddleNLP does), never rejected. Tokenisation, long-text windows, length-sorted
batching, order restoring and the multi-label thresholds live in `Predictor`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from zhcls.data.tokenizer import Tokenizer, has_tokenizer
from zhcls.errors import ZhclsError, require
from zhcls.hardware import cores
from zhcls.inference.predictor import Predictor, check_max_seq_length

VARIANTS = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
OUTPUT_NAME = "logits"
EMBEDDING_NAME = "embedding"  # the mean-pooled sentence embedding (exports made before `zhcls embed` lack it)
REPORT = "export_report.json"
MAX_DEFAULT_THREADS = 8  # more intra-op threads rarely help encoders this small
CUDA = "CUDAExecutionProvider"


def default_threads() -> int:
    """The cores this process may run on (its affinity, not the machine's count), at most 8."""
    return max(1, min(cores(), MAX_DEFAULT_THREADS))


def onnxruntime():
    """Imported when a session is made: the folder constants above serve installs without onnxruntime."""
    return require("onnxruntime", "onnx", "the ONNX Runtime backend")


def providers(device: str = "auto") -> list:
    """ONNX Runtime execution providers for ``--device`` (auto: CUDA when this onnxruntime has it)."""
    ort = onnxruntime()
    has_cuda = CUDA in ort.get_available_providers()
    if device in ("auto", None):
        return [CUDA, "CPUExecutionProvider"] if has_cuda else ["CPUExecutionProvider"]
    if device in ("gpu", "cuda") or device.startswith("cuda:"):
        if not has_cuda:
            raise ZhclsError("--device gpu: this onnxruntime has no CUDA provider (install onnxruntime-gpu, or use --device cpu)")
        return [(CUDA, {"device_id": int(device.split(":")[1]) if ":" in device else 0}), "CPUExecutionProvider"]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    raise ZhclsError(f"--device {device}: expected cpu, gpu or auto")


def session_options(threads: int | None = None, *, spinning: bool = False):
    """The predictor's ONNX Runtime settings (benchmarks and profiles build their sessions from them too)."""
    options = onnxruntime().SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1  # one op at a time: the graph is a chain
    # Idle threads sleep instead of spinning: on a busy or shared machine spinning threads fight the
    # other processes (measured: 6.7 vs 4.3 ms/sample, INT8 Micro, 2 threads, loaded 2-core machine);
    # on an idle one the cost is small for batched work.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3  # errors only; ORT's notes about unused initializers are noise here
    return options


class OnnxPredictor(Predictor):
    """`Predictor` whose forward pass is one ONNX Runtime session run."""

    def __init__(self, model_path, tokenizer: Tokenizer, labels: list[str], *, device: str = "auto",
                 threads: int | None = None, batch_size: int = 32, max_seq_length: int = 128,
                 problem_type: str = "multi_class", task: str = "text", variant: str = "fp32", **decision):
        super().__init__(tokenizer, labels, max_seq_length=max_seq_length, batch_size=batch_size,
                         problem_type=problem_type, task=task, **decision)
        ort = onnxruntime()
        self.model_path, self.variant = Path(model_path), variant
        chosen = providers(device)
        try:
            self.session = ort.InferenceSession(str(model_path), session_options(threads), providers=chosen)
        except Exception as e:  # onnxruntime's own exception types: missing file, bad protobuf, bad graph
            raise ZhclsError(f"{model_path}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})") from None
        names = tuple(i.name for i in self.session.get_inputs())
        if sorted(names) != sorted(INPUT_NAMES):
            raise ZhclsError(f"{model_path}: inputs {', '.join(names)}; a zhcls export has {', '.join(INPUT_NAMES)}")
        self.outputs = {o.name: o for o in self.session.get_outputs()}

    @property
    def embedding_size(self) -> int:
        if EMBEDDING_NAME not in self.outputs:
            raise ZhclsError(f"{self.model_path}: this export has no {EMBEDDING_NAME} output (made by an older zhcls); "
                             "export the checkpoint again to embed with ONNX Runtime")
        return int(self.outputs[EMBEDDING_NAME].shape[1])

    def _forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], batch)[0]

    def _embed(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([EMBEDDING_NAME], batch)[0]

    @classmethod
    def from_dir(cls, path, device: str = "auto", batch_size: int = 32, max_seq_length: int | None = None,
                 threads: int | None = None, variant: str = "auto") -> OnnxPredictor:
        """The predictor for an export folder; ``variant`` is auto, fp32, int8 or fp16."""
        path = Path(path)
        if not path.is_dir():
            raise ZhclsError(f"{path}: no such export folder (create one with `zhcls export --output_path {path}`)")
        if not (path / VARIANTS["fp32"]).exists() and (path / "model.safetensors").exists():
            raise ZhclsError(f"{path}: a PyTorch checkpoint, not an export; load it with backend='torch' "
                             f"or export it with `zhcls export --params_path {path}`")
        missing = [f for f in (VARIANTS["fp32"], "config.json") if not (path / f).exists()]
        if not has_tokenizer(path):
            missing.append("vocab.txt or tokenizer.json")
        if missing:
            raise ZhclsError(f"{path}: not a complete zhcls export (missing {', '.join(missing)}); "
                             f"export again with `zhcls export --output_path {path}`")
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ZhclsError(f"{path / 'config.json'}: not valid JSON ({e})") from None
        meta, id2label = config.get("zhcls", {}), config.get("id2label")
        if not id2label:
            raise ZhclsError(f"{path / 'config.json'}: no id2label, so the labels are unknown; export the model again")
        labels = [id2label[str(i)] for i in range(len(id2label))]
        max_len = check_max_seq_length(max_seq_length or meta.get("max_seq_length", 128),
                                       config.get("max_position_embeddings", 512))
        on_gpu = providers(device)[0] != "CPUExecutionProvider"
        if variant == "auto":  # dynamic INT8's kernels are CPU ones, fp16 pays off on a GPU only
            variant = next(v for v in ("fp16", "int8", "fp32") if (path / VARIANTS[v]).exists()
                           and (v != "fp16" or on_gpu) and (v != "int8" or not on_gpu))
        elif variant not in VARIANTS:
            raise ZhclsError(f"variant {variant!r}: expected auto, {', '.join(VARIANTS)}")
        elif not (path / VARIANTS[variant]).exists():
            raise ZhclsError(f"{path}: no {VARIANTS[variant]} (export with "
                             f"{'--quantize int8' if variant == 'int8' else '--fp16'} to make it)")
        return cls(path / VARIANTS[variant], Tokenizer.from_dir(path), labels, device=device, threads=threads,
                   batch_size=batch_size, max_seq_length=max_len, problem_type=meta.get("problem_type", "multi_class"),
                   task=meta.get("task", "text"), variant=variant, **Predictor.meta_options(meta))
