"""ONNX export, verified (PaddleNLP's export_model.py): `zhcls export` is a thin shell over `export()`.

The export folder, read by `zhcls.load()` and the ONNX Runtime predictor:

    model.onnx          fp32; fused by ONNX Runtime's transformer optimizer (attention, SkipLayerNorm,
                        bias-GELU, embedding) unless optimize=False
    model.int8.onnx     quantize="int8" (static, then dynamic if refused), "int8-dynamic" (of the fused graph) or "int8-static"
                        (QDQ, calibrated on dev, of the plain graph); kept only within max_accuracy_drop
    model.fp16.onnx     fp16=True: float16 inside, the same int64 inputs and float32 logits (for CUDA)
    config.json         the model config with its zhcls block (labels, task, problem_type, max_seq_length)
    label.txt, vocab.txt, tokenizer_config.json, special_tokens_map.json
    export_report.json  fusions, measured differences, INT8 dev accuracy before and after

Graph: inputs input_ids, token_type_ids, attention_mask (int64, batch x sequence, both dynamic, padded
on the right as the tokenizer pads); outputs logits (float32, batch x labels) and embedding (float32,
batch x hidden: the mean-pooled, L2-normalised sentence embedding `zhcls embed` gives).

Every variant is checked against PyTorch on dev texts (or generated ones without a dataset) plus edge
cases: one character, a text cut to max_seq_length beside a short one, pairs. fp32 must stay within
1e-4 of PyTorch's logits (relative once logits exceed 1), fp16 within 1e-2, and their embeddings at a
cosine of at least 0.9999 (fp16: 0.99) to PyTorch's; INT8 is judged by dev accuracy and agreement with
fp32, and its embeddings' cosine to fp32's is reported. A failed check raises ZhclsError, and the folder is written
atomically, so a failed export leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tqdm.auto import tqdm

from zhcls import __version__, data
from zhcls.data.batching import inference_batches
from zhcls.errors import ZhclsError
from zhcls.evaluation import report_files
from zhcls.evaluation.reports import dev_score
from zhcls.inference.loading import read_meta
from zhcls.inference.onnx_predictor import EMBEDDING_NAME, INPUT_NAMES, OUTPUT_NAME, REPORT, VARIANTS, OnnxPredictor
from zhcls.inference.predictor import Predictor, check_max_seq_length
from zhcls.inference.torch_predictor import TorchPredictor
from zhcls.io import atomic_dir, check_output_dir
from zhcls.models.checkpoint import load_checkpoint
from zhcls.models.modeling import embedding

log = logging.getLogger("zhcls")

OPSET = 17  # LayerNormalization is a single op from 17 on
PLAIN = "plain.onnx"  # the traced graph before fusion, while the variants are made
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
EMBEDDING_COSINE = {"fp32": 0.9999, "fp16": 0.99}  # the lowest cosine to PyTorch's embedding a variant may give
PARITY_TEXTS = 128  # dev texts compared with PyTorch; the INT8 gate scores all of dev
# Dynamic INT8 settings tried in turn until one stays within max_accuracy_drop: per-tensor weights
# first (fastest), then per-channel scales, then 7-bit reduce-range (for CPUs without VNNI).
# Static INT8 (calibrated on dev, QDQ): per-channel weights only. `--quantize int8` means static: at equal
# dev accuracy it was 1.18x dynamic's speed at real lengths (dynamic: 1.09x static's padded to 128;
# benchmarks/results/engine.json, docs/export.md).
INT8_MODES = {"dynamic": ({"per_channel": False, "reduce_range": False},
                          {"per_channel": True, "reduce_range": False},
                          {"per_channel": True, "reduce_range": True}),
              "static": ({"per_channel": True},)}
# --quantize -> the methods tried in turn (each in its modes) until one passes the gate.
QUANTIZE = {"int8": ("static", "dynamic"), "int8-dynamic": ("dynamic",), "int8-static": ("static",)}
CALIBRATE_EVERY = 4  # static INT8 calibrates on every 4th length-sorted dev batch


def fold_task_type(model):
    """A copy of ``model`` with ERNIE 3.0's task-type row 0 added into the token-type table.

    The function is unchanged (row 0 is added at every position, whatever the token type), and the
    graph becomes BERT's word + position + token-type sum, the only embedding ONNX Runtime's fusion
    knows: an extra task-type term is outside its pattern (silently dropped in some graphs; here it
    stops the fusion).
    """
    model = copy.deepcopy(model)
    emb = model.backbone.embeddings
    if hasattr(emb, "task_type_embeddings"):
        with torch.no_grad():
            emb.token_type_embeddings.weight += emb.task_type_embeddings.weight[0]
        del emb.task_type_embeddings
    return model


class LogitsAndEmbedding(torch.nn.Module):
    """The graph's two outputs from one encoder pass: the classifier's logits and the sentence embedding."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, input_ids, token_type_ids, attention_mask):
        hidden, pooled = self.model.backbone(input_ids, token_type_ids, attention_mask)
        return self.model.head(pooled), embedding(hidden, attention_mask)


def to_onnx(model, path, opset: int = OPSET) -> None:
    """Trace ``model`` (eval mode) to ONNX with dynamic batch and sequence axes: logits and embedding."""
    ids = torch.arange(2, 18).reshape(2, 8) % model.config.vocab_size
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    axes = {0: "batch", 1: "sequence"}
    # The TorchScript exporter (deprecated since torch 2.9, still there): its graph is the one ONNX
    # Runtime's transformer optimizer fuses; in the dynamo exporter's graph it finds no attention.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(LogitsAndEmbedding(model.eval()), (ids, types, mask), str(path), dynamo=False,
                              opset_version=opset, input_names=list(INPUT_NAMES),
                              output_names=[OUTPUT_NAME, EMBEDDING_NAME],
                              dynamic_axes={**{name: axes for name in INPUT_NAMES}, OUTPUT_NAME: {0: "batch"},
                                            EMBEDDING_NAME: {0: "batch"}})
        except (torch.onnx.errors.OnnxExporterError, RuntimeError) as e:  # e.g. an opset this torch does not know
            raise ZhclsError(f"ONNX export with opset {opset} failed: {str(e).splitlines()[0]}") from None


def optimize_graph(src, dst) -> dict[str, int]:
    """ONNX Runtime's transformer fusions, src -> dst; returns how many of each fused op were made.

    opt_level 0: only the fusions are written into the file, so it runs on CPU and GPU alike; ONNX
    Runtime applies its own graph optimisations when it loads the model.
    """
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    # Keep the 2-D mask as it is instead of turning it into lengths, which assumes right padding.
    options.attention_mask_format = AttentionMaskFormat.AttentionMask
    # num_heads=0, hidden_size=0: read from each layer's reshape, so pruned layers keep their own head count.
    model = optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0, optimization_options=options,
                           opt_level=0)
    model.save_model_to_file(str(dst))
    return {op: n for op, n in model.get_fused_operator_statistics().items() if n}


def quantize_int8(src, dst, *, per_channel: bool = False, reduce_range: bool = False) -> None:
    """Dynamic INT8: int8 weights, activations quantised per batch at run time (no calibration data)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _root_logger_silenced():
        # The fused ops (Attention, SkipLayerNormalization ...) have no ONNX type inference; without a
        # default type the quantiser cannot tell that their outputs are float.
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                         reduce_range=reduce_range, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def quantize_int8_static(src, dst, calibration: list[dict], *, per_channel: bool = True) -> None:
    """Static INT8 (QDQ): int8 weights (per output channel), uint8 activations whose scales were fixed by
    running ``calibration`` (padded input batches) through the fp32 graph; no per-batch quantisation at
    run time. Only MatMul and Gemm are quantised: the others keep fp32 (their QDQ forms are not faster)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            return next(self.batches, None)

    with _root_logger_silenced():
        quantize_static(str(src), str(dst), Batches(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm"],
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True})


@contextlib.contextmanager
def _root_logger_silenced():
    """onnxruntime.quantization advises pre-processing through logging.warning(), which would also give
    the root logger a stderr handler for the rest of the process: a silent handler and filter prevent both."""
    root, handler = logging.getLogger(), logging.NullHandler()

    def drop(record):
        return False

    root.addHandler(handler)
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
        root.removeHandler(handler)


def to_fp16(src, dst) -> None:
    """float16 weights and activations; inputs and logits keep their types."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(dst))


def probe_texts(tokenizer, n: int, max_len: int, seed: int = 0) -> list[str]:
    """Texts of vocabulary characters, lengths spread from 1 to past max_len (when there is no dev set)."""
    chars = [t for t in tokenizer.vocab if len(t) == 1 and "\u4e00" <= t <= "\u9fff"]
    chars = chars or [t for t in tokenizer.vocab if t.isalpha() and not t.startswith("##")]
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(chars, k)) for k in np.linspace(1, max_len + 8, n).astype(int)]


def check_cases(texts_a: list[str], texts_b: list[str] | None, max_len: int) -> dict[str, tuple]:
    """Named (texts_a, texts_b) sets that PyTorch and ONNX must agree on: the texts and the edge cases."""
    pick = np.linspace(0, len(texts_a) - 1, min(len(texts_a), PARITY_TEXTS)).astype(int)
    texts_a, texts_b = [texts_a[i] for i in pick], None if texts_b is None else [texts_b[i] for i in pick]
    too_long = " ".join([max(texts_a, key=len) or "长"] * max_len)  # at least max_len tokens: cut to max_len
    one = next((c for c in texts_a[0] if not c.isspace()), "长")
    return {"texts": (texts_a, texts_b),
            "one character": ([one], None if texts_b is None else [one]),
            "max length beside one character": ([too_long, one], None if texts_b is None else [too_long, one]),
            "pairs": (texts_a[:32] + [too_long], texts_a[::-1][:32] + [one]),
            "pair cut to max length": ([too_long], [too_long])}


def compare(ref: np.ndarray, got: np.ndarray, problem_type: str) -> dict:
    """Largest logit difference and how often the decisions (argmax, or each label's sign) agree."""
    decide = (lambda z: z.argmax(-1)[:, None]) if problem_type == "multi_class" else (lambda z: z > 0)
    diff = np.abs(ref.astype(np.float64) - got)
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "prediction_agreement": float((decide(ref) == decide(got)).all(-1).mean())}


def embedding_agreement(ref: np.ndarray, got: np.ndarray) -> dict:
    """Cosine between two sets of unit-length embeddings, row by row: its mean and minimum."""
    cosine = (ref.astype(np.float64) * got).sum(axis=1)
    return {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min())}


class Int8Refused(ZhclsError):
    """The INT8 gate refused every mode: the fp32 export IS written. `zhcls export` exits 3 (not 2, which
    means nothing was written), so a script can tell; export_report.json has variants.int8.accepted false."""

    exit_code = 3


def export(params_path, output_path, *, opset: int = OPSET, fp16: bool = False, quantize: str | None = None,
           max_accuracy_drop: float = 0.5, dataset_dir=None, optimize: bool = True, max_seq_length: int | None = None,
           dev_file: str = "dev.txt", label_file: str = "label.txt", batch_size: int = 32, device: str = "cpu",
           threads: int | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Export a checkpoint folder to a verified ONNX folder; returns the report (also in export_report.json).

    ``quantize`` ("int8", "int8-dynamic", "int8-static") needs ``dataset_dir``: INT8 is kept when dev
    accuracy drops by at most ``max_accuracy_drop`` points (dynamic: per-tensor, then per-channel, then
    reduce-range are tried; static: per-channel); ``optimize=False``: no fusions anywhere; otherwise
    the fp32 export is still written and `Int8Refused` (a ZhclsError) says why INT8 was refused.
    ``output_path`` must be missing, empty or a folder zhcls wrote, unless ``overwrite``.
    """
    t0 = time.time()
    params_path, output_path = Path(params_path), Path(output_path)
    if quantize not in (None, *QUANTIZE):
        raise ZhclsError(f"--quantize {quantize}: expected one of {', '.join(QUANTIZE)}")
    methods = QUANTIZE.get(quantize)
    if quantize and dataset_dir is None:
        raise ZhclsError("--quantize int8 needs --dataset_dir: INT8 is kept only if dev accuracy stays within --max_accuracy_drop")
    if opset < 14:
        raise ZhclsError(f"--opset {opset}: attention needs opset 14 or newer")
    check_output_dir(output_path, flag="--output_path", overwrite=overwrite,
                     inputs=[params_path] + ([dataset_dir] if dataset_dir is not None else []))
    if not params_path.is_dir():
        raise ZhclsError(f"--params_path {params_path}: no such checkpoint folder")
    # The data is read and checked before the model is loaded: fail fast.
    meta = read_meta(params_path) if (params_path / "config.json").exists() else {}
    task, problem_type = meta.get("task", "text"), meta.get("problem_type", "multi_class")
    dev = None
    if dataset_dir is not None:
        ds = data.load_dataset(dataset_dir, dev_file=dev_file, label_file=label_file, task=task,
                               problem_type=problem_type, require=("dev",))  # an empty dev file is an error there
        dev = ds.dev
    model, tokenizer, meta = load_checkpoint(params_path)
    config = model.config
    if dev is not None and ds.labels != config.labels:
        raise ZhclsError(f"{label_file}: its labels differ from the model's ({len(ds.labels)} vs {len(config.labels)} "
                         "labels, or another order); use the dataset the model was trained on")
    max_len = check_max_seq_length(max_seq_length or meta.get("max_seq_length", 128), config.max_position_embeddings)
    if dev is not None:
        texts_a = [e.text_a for e in dev]
        texts_b = [e.text_b for e in dev] if task == "pair" else None
    else:
        texts_a, texts_b = probe_texts(tokenizer, 64, max_len), None
    cases = check_cases(texts_a, texts_b, max_len)
    # The checkpoint's decision settings (thresholds, long-text policy) hold in verification and the INT8 gate too.
    runtime = dict(device=device, threads=threads, batch_size=batch_size, max_seq_length=max_len,
                   problem_type=problem_type, task=task, **Predictor.meta_options(meta))

    report = {"source": str(params_path), "zhcls": __version__, "torch": torch.__version__,
              "onnxruntime": ort.__version__, "opset": opset, "model_type": config.model_type,
              "max_seq_length": max_len, "task_type_folded": hasattr(model.backbone.embeddings, "task_type_embeddings"),
              "checked_on": {"texts_from": "dev" if dev else "generated", **{k: len(a) for k, (a, _) in cases.items()}}}
    steps = 3 + optimize + fp16 + (quantize is not None)
    with atomic_dir(output_path) as tmp, tqdm(total=steps, desc="export", unit="step", disable=not progress) as bar:
        def step(name):  # the step shown so far is done; show the next
            bar.update()
            bar.set_postfix_str(name)

        bar.set_postfix_str("PyTorch reference")
        torch_predictor = TorchPredictor(model, tokenizer, meta, device="cpu", batch_size=batch_size, max_seq_length=max_len)
        reference = {k: torch_predictor.logits(a, b) for k, (a, b) in cases.items()}
        embedding_reference = torch_predictor.embed(cases["texts"][0])

        def verify(variant: str, path: Path) -> dict:
            got = OnnxPredictor(path, tokenizer, config.labels, **runtime, variant=variant)
            checks = {k: compare(reference[k], got.logits(a, b), problem_type) for k, (a, b) in cases.items()}
            scale = max(1.0, max(float(np.abs(r).max()) for r in reference.values()))
            worst = max(checks, key=lambda k: checks[k]["max_abs_diff"])
            result = {"max_abs_diff": checks[worst]["max_abs_diff"], "tolerance": TOLERANCE[variant] * scale, "cases": checks,
                      "embedding": embedding_agreement(embedding_reference, got.embed(cases["texts"][0]))}
            if result["max_abs_diff"] > result["tolerance"]:
                raise ZhclsError(f"{variant} ONNX logits differ from PyTorch by {result['max_abs_diff']:.2e} on "
                                 f"'{worst}' (tolerance {result['tolerance']:.1e}); the export is wrong, nothing written"
                                 + ("; try optimize=False (--no_optimize)" if optimize else ""))
            if result["embedding"]["min_cosine"] < EMBEDDING_COSINE[variant]:
                raise ZhclsError(f"{variant} ONNX embeddings differ from PyTorch's: cosine "
                                 f"{result['embedding']['min_cosine']:.6f} < {EMBEDDING_COSINE[variant]}; the export is "
                                 "wrong, nothing written")
            return result

        step("tracing")
        plain = tmp / PLAIN
        to_onnx(fold_task_type(model), plain, opset)
        report["plain"] = verify("fp32", plain)
        fused = plain
        if optimize:
            step("fusing")
            fused = tmp / VARIANTS["fp32"]
            report["fusions"] = optimize_graph(plain, fused)
            report["fused"] = verify("fp32", fused)
        report["variants"] = {"fp32": {"file": VARIANTS["fp32"], "optimized": optimize}}
        if fp16:
            step("fp16")
            to_fp16(fused, tmp / VARIANTS["fp16"])
            report["variants"]["fp16"] = {"file": VARIANTS["fp16"], **verify("fp16", tmp / VARIANTS["fp16"])}
        if quantize:
            step("INT8")
            # Static INT8 quantises the plain graph (QDQ has no quantised fused Attention), dynamic the fused one.
            sources = {"static": plain, "dynamic": fused}
            report["variants"]["int8"] = _gate_int8(sources, tmp / VARIANTS["int8"], methods, dev, texts_a, texts_b,
                                                    config.labels, tokenizer, runtime,
                                                    max_accuracy_drop)
        if optimize:
            plain.unlink()
        else:
            plain.rename(tmp / VARIANTS["fp32"])
        for variant in report["variants"].values():
            if (tmp / variant["file"]).exists():
                variant["bytes"] = (tmp / variant["file"]).stat().st_size
        step("writing")
        _write_folder(tmp, model, tokenizer, {**meta, "task": task, "problem_type": problem_type, "max_seq_length": max_len})
        report["seconds"] = round(time.time() - t0, 1)
        report_files.write_json(tmp / REPORT, report)
        bar.update()
    log.info("exported %s to %s (%s)", params_path, output_path, ", ".join(
        f"{v}: {info['file']}" for v, info in report["variants"].items() if info.get("accepted", True)))
    int8 = report["variants"].get("int8")
    if int8 and not int8["accepted"]:
        raise Int8Refused(f"INT8 refused: dev {int8['metric']} drops {int8['drop']:.2f} points (> --max_accuracy_drop "
                         f"{max_accuracy_drop}) in every mode tried; the fp32 export is in {output_path}")
    return report


def calibration_batches(predictor, texts_a, texts_b=None, every: int = CALIBRATE_EVERY) -> list[dict]:
    """Every ``every``-th of the predictor's own length-sorted, padded batches of these texts: static
    INT8's activation ranges are then those of the lengths (and paddings) it will run on."""
    enc = predictor.tokenizer.encode(texts_a, texts_b, predictor.max_seq_length)
    batches = inference_batches([len(ids) for ids in enc.input_ids], predictor.batch_size)[::every]
    return [predictor.tokenizer.pad([enc.input_ids[i] for i in idx], [enc.token_type_ids[i] for i in idx])
            for idx in batches]


def _gate_int8(sources: dict[str, Path], dst: Path, methods, dev, texts_a, texts_b, labels, tokenizer, runtime,
               max_drop: float) -> dict:
    """Quantise a source graph -> dst (``methods``, static and/or dynamic, in turn) in the first mode that keeps
    dev accuracy within max_drop points of fp32 (the dynamic source's); else no dst."""
    y = data.encode_labels(dev, labels, runtime["problem_type"])
    fp32_predictor = OnnxPredictor(sources["dynamic"], tokenizer, labels, **runtime)
    base = fp32_predictor.logits(texts_a, texts_b)

    def score(logits) -> float:  # multi-label: micro-F1 at the checkpoint's tuned thresholds
        return dev_score(labels, y, logits, runtime["problem_type"], fp32_predictor.thresholds,
                         runtime["hierarchy_policy"])

    result = {"file": VARIANTS["int8"], "metric": "accuracy" if runtime["problem_type"] == "multi_class" else "micro_f1",
              "dev_fp32": score(base), "attempts": []}
    for method, mode in ((m, mode) for m in methods for mode in INT8_MODES[m]):
        if method == "static":
            quantize_int8_static(sources[method], dst, calibration_batches(fp32_predictor, texts_a, texts_b), **mode)
        else:
            quantize_int8(sources[method], dst, **mode)
        int8 = OnnxPredictor(dst, tokenizer, labels, **runtime, variant="int8")
        logits = int8.logits(texts_a, texts_b)
        score_int8 = score(logits)
        attempt = {"method": method, **mode, "dev_int8": score_int8, "drop": result["dev_fp32"] - score_int8,
                   **compare(base, logits, runtime["problem_type"]),
                   "embedding": embedding_agreement(fp32_predictor.embed(texts_a[:PARITY_TEXTS]),
                                                    int8.embed(texts_a[:PARITY_TEXTS]))}
        result["attempts"].append(attempt)
        if attempt["drop"] <= max_drop:
            return {**result, **attempt, "accepted": True}
    dst.unlink()
    best = min(result["attempts"], key=lambda a: a["drop"])
    return {**result, **best, "accepted": False}


def _write_folder(path: Path, model, tokenizer, meta: dict) -> None:
    """config.json (with the zhcls block), label.txt and the tokenizer files beside the ONNX models."""
    config = model.config.to_dict()
    config["zhcls"] = {**config.get("zhcls", {}), **meta, "labels": model.config.labels}
    (path / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    (path / "label.txt").write_text("".join(f"{label}\n" for label in model.config.labels), encoding="utf-8")
    tokenizer.save(path)
