"""Accuracy and latency per backend, the way PaddleNLP reports them, and the way real traffic looks.

Workloads, all on the dev texts of a dataset folder:
  padded   PaddleNLP's figure: batches of batch_size in file order, each padded to max_seq_length;
           ms/sample = total time / samples with the tokenizer included, the tokenizer also alone
  real     the texts as they are: length-sorted batches padded to their own longest (what `predict` does)
  batch-1  one text per call through `predict`, p50 / p99 latency (a service without batching)
plus throughput on the real workload, the process's peak RSS and the model file size.

Backends: torch (the checkpoint), torch-bf16 (the same under bf16 autocast; by default only on CPUs
with native bf16), onnx (plain exported graph), onnx-fused (after ONNX Runtime's transformer fusions),
onnx-int8 (dynamic INT8 of the fused graph), onnx-int8-static (QDQ INT8 of the plain graph, calibrated
on dev). Each measurement runs in a fresh spawned process, so its peak RSS is its own and an ONNX
backend never loads torch. Repeats go round the backends in turn (A B C A B C ...) and medians are
reported: a shared machine's load drifts. Each round also measures the machine's ceiling (`ceiling`:
large GEMMs through oneDNN and MLAS), and every row gives its model's GFLOP/s per core as a share of
its own library's and precision's ceiling, with the CPU's instruction sets beside it.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from zhcls import data
from zhcls.data.batching import inference_batches
from zhcls.deploy.ceiling import CEILING_OF, measure_ceiling, model_flops
from zhcls.deploy.config import BACKENDS
from zhcls.errors import ZhclsError, require
from zhcls.evaluation.reports import dev_score
from zhcls.hardware import cpu_info, has_bf16
from zhcls.inference.onnx_predictor import REPORT, VARIANTS, OnnxPredictor, default_threads

log = logging.getLogger("zhcls")


def default_backends() -> tuple[str, ...]:
    """Every backend this CPU can run at speed: torch-bf16 only with native bf16 (AVX512-BF16 / AMX)."""
    return tuple(b for b in BACKENDS if b != "torch-bf16" or has_bf16())

# Timing fields: medians over repeats. The others are the same in every repeat.
TIMINGS = ("padded_ms", "padded_tokenizer_ms", "real_ms", "real_tokenizer_ms", "throughput", "b1_p50_ms", "b1_p99_ms",
           "peak_rss_mb", "padded_gflops", "real_gflops")
NO_GATE = 100.0  # points: the benchmark shows INT8's accuracy instead of refusing it
MAX_DROP = 0.5  # points: the recommended backend is within this of fp32 (the export gate's default)


def isolated(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a fresh spawned process (fn must be importable by module and name)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def prepare(params_path, dataset_dir, work_dir, backends=None, *, max_seq_length: int = 128,
            dev_file: str = "dev.txt", label_file: str = "label.txt", progress: bool = True) -> list[dict]:
    """What to measure for each backend: ``{"backend", "path", "variant"}``; a checkpoint is exported
    into ``work_dir`` as needed. Given an export folder, backends it cannot serve are skipped."""
    params_path, backends = Path(params_path), backends or default_backends()
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise ZhclsError(f"unknown backend(s) {', '.join(sorted(unknown))}: expected {', '.join(BACKENDS)}")
    if not params_path.is_dir():
        raise ZhclsError(f"--params_path {params_path}: no such checkpoint or export folder")
    if set(backends) - {"torch", "torch-bf16"}:
        require("onnxruntime", "onnx", "bench's ONNX backends (--backends torch measures PyTorch alone)")
    specs = []
    if (params_path / VARIANTS["fp32"]).exists():  # an export folder
        report = json.loads((params_path / REPORT).read_text(encoding="utf-8")) if (params_path / REPORT).exists() else {}
        variants = report.get("variants", {})
        fused = variants.get("fp32", {}).get("optimized", False)
        int8 = (params_path / VARIANTS["int8"]).exists()
        static = int8 and variants.get("int8", {}).get("method") == "static"
        files = {"onnx": (not fused, "fp32"), "onnx-fused": (fused, "fp32"),
                 "onnx-int8": (int8 and not static, "int8"), "onnx-int8-static": (static, "int8")}
        for backend in backends:
            if backend in files and files[backend][0]:
                specs.append({"backend": backend, "path": str(params_path), "variant": files[backend][1]})
            else:
                log.warning("bench: %s is an export folder without a %s model; skipping that backend", params_path, backend)
        return specs
    # Imported here: torch is needed to export a checkpoint, never in an ONNX measurement.
    from zhcls.deploy.export import export

    work_dir = Path(work_dir)
    options = dict(dataset_dir=dataset_dir, max_seq_length=max_seq_length, dev_file=dev_file, label_file=label_file,
                   progress=progress)
    if {"onnx", "onnx-int8-static"} & set(backends):
        export(params_path, work_dir / "onnx", optimize=False, max_accuracy_drop=NO_GATE,
               quantize="int8-static" if "onnx-int8-static" in backends else None, **options)
    if {"onnx-fused", "onnx-int8"} & set(backends):
        export(params_path, work_dir / "onnx-fused", quantize="int8-dynamic" if "onnx-int8" in backends else None,
               max_accuracy_drop=NO_GATE, **options)
    where = {"torch": (params_path, None), "torch-bf16": (params_path, "bf16"), "onnx": (work_dir / "onnx", "fp32"),
             "onnx-fused": (work_dir / "onnx-fused", "fp32"), "onnx-int8": (work_dir / "onnx-fused", "int8"),
             "onnx-int8-static": (work_dir / "onnx", "int8")}
    return [{"backend": b, "path": str(where[b][0]), "variant": where[b][1]} for b in backends]


def measure(spec: dict, dataset_dir, *, batch_size: int = 32, max_seq_length: int = 128, threads: int | None = None,
            max_samples: int | None = None, batch1_samples: int = 100, dev_file: str = "dev.txt",
            label_file: str = "label.txt") -> dict:
    """One row for one backend (see the module docstring), measured in a fresh process."""
    return isolated(_measure, spec, str(dataset_dir), batch_size=batch_size, max_seq_length=max_seq_length,
                    threads=threads or default_threads(), max_samples=max_samples, batch1_samples=batch1_samples,
                    dev_file=dev_file, label_file=label_file)


def _measure(spec, dataset_dir, *, batch_size, max_seq_length, threads, max_samples, batch1_samples, dev_file,
             label_file) -> dict:
    path = Path(spec["path"])
    if spec["backend"].startswith("torch"):
        import torch

        from zhcls.inference.loading import load

        torch.set_num_threads(threads)
        predictor = load(path, backend="torch", device="cpu", batch_size=batch_size, max_seq_length=max_seq_length,
                         amp=spec["variant"] or "none")
        model_file = path / "model.safetensors"
    else:
        predictor = OnnxPredictor.from_dir(path, device="cpu", batch_size=batch_size, max_seq_length=max_seq_length,
                                           threads=threads, variant=spec["variant"])
        model_file = predictor.model_path
    ds = data.load_dataset(dataset_dir, dev_file=dev_file, label_file=label_file, task=predictor.task,
                           problem_type=predictor.problem_type, require=("dev",))
    if ds.labels != predictor.labels:
        raise ZhclsError(f"{label_file}: its labels differ from the model's; benchmark on the dataset it was trained on")
    examples = ds.dev[:max_samples]
    if not examples:
        raise ZhclsError(f"{Path(dataset_dir) / dev_file}: no examples to benchmark on")
    texts_a = [e.text_a for e in examples]
    texts_b = [e.text_b for e in examples] if predictor.task == "pair" else None
    inputs = texts_a if texts_b is None else list(zip(texts_a, texts_b))
    n = len(texts_a)

    # Warm-up: oneDNN (torch) and ONNX Runtime prepare kernels per input shape, which costs several
    # times the steady-state time on the first batch of each shape. The padded workload has one shape.
    _timed_pass(predictor, texts_a[:batch_size], None if texts_b is None else texts_b[:batch_size], max_seq_length)
    _timed_pass(predictor, texts_a, texts_b, None)
    logits, padded_tok, padded_model, padded_shapes = _timed_pass(predictor, texts_a, texts_b, max_seq_length)
    _, real_tok, real_model, real_shapes = _timed_pass(predictor, texts_a, texts_b, None)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    lengths = [len(ids) for ids in predictor.tokenizer.encode(texts_a, texts_b, max_seq_length).input_ids]
    latencies = []
    for text in inputs[:: max(1, n // batch1_samples)][:batch1_samples]:
        start = time.perf_counter()
        predictor.predict([text])
        latencies.append(1000 * (time.perf_counter() - start))
    y = data.encode_labels(examples, ds.labels, ds.problem_type)
    ms = 1000 / n
    return {"model": spec.get("model", path.name), "backend": spec["backend"], "variant": spec["variant"] or "fp32",
            "metric": "accuracy" if ds.problem_type == "multi_class" else "micro_f1",
            "score": dev_score(ds.labels, y, logits, ds.problem_type, predictor.thresholds, predictor.hierarchy_policy),
            "samples": n, "mean_tokens": float(np.mean(lengths)),
            "batch_size": batch_size, "max_seq_length": max_seq_length, "threads": threads,
            "padded_ms": (padded_tok + padded_model) * ms, "padded_tokenizer_ms": padded_tok * ms,
            "real_ms": (real_tok + real_model) * ms, "real_tokenizer_ms": real_tok * ms,
            "throughput": n / (real_tok + real_model),
            # The model's arithmetic rate per core (tokenizer excluded), to set against the ceiling.
            "padded_gflops": model_flops(config, padded_shapes) / padded_model / threads / 1e9,
            "real_gflops": model_flops(config, real_shapes) / real_model / threads / 1e9,
            "b1_p50_ms": float(np.percentile(latencies, 50)), "b1_p99_ms": float(np.percentile(latencies, 99)),
            "peak_rss_mb": peak_rss_mb(),
            "size_mb": model_file.stat().st_size / 2**20}


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux: VmHWM, which starts afresh at exec (ru_maxrss would
    carry over the spawning parent's peak)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        scale = 2**20 if sys.platform == "darwin" else 2**10  # ru_maxrss: bytes on macOS, KiB elsewhere
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _timed_pass(predictor, texts_a, texts_b, pad_to: int | None) -> tuple[np.ndarray, float, float, list]:
    """Logits in input order, seconds spent in the tokenizer and in the model, and the batches' shapes.

    ``pad_to``: batches in input order padded to that length (PaddleNLP's benchmark); None: the
    predictor's own length-sorted batches padded to their longest.
    """
    start = time.perf_counter()
    enc = predictor.tokenizer.encode(texts_a, texts_b, predictor.max_seq_length)
    n, size = len(texts_a), predictor.batch_size
    batches = ([np.arange(i, min(i + size, n)) for i in range(0, n, size)] if pad_to
               else inference_batches([len(ids) for ids in enc.input_ids], size))
    tokenizer_s, model_s = time.perf_counter() - start, 0.0
    out = np.zeros((n, len(predictor.labels)), dtype=np.float32)
    shapes = []
    for idx in batches:
        t0 = time.perf_counter()
        batch = predictor.tokenizer.pad([enc.input_ids[i] for i in idx], [enc.token_type_ids[i] for i in idx], pad_to)
        t1 = time.perf_counter()
        out[idx] = predictor._forward(batch)
        tokenizer_s, model_s = tokenizer_s + t1 - t0, model_s + time.perf_counter() - t1
        shapes.append(batch["input_ids"].shape)
    return out, tokenizer_s, model_s, shapes


def median_row(rows: list[dict]) -> dict:
    """One row from repeats of the same measurement: medians of the timings."""
    return {**rows[0], **{k: statistics.median(r[k] for r in rows) for k in TIMINGS if rows[0].get(k) is not None},
            "repeats": len(rows)}


def bench(params_path, dataset_dir, *, backends=None, batch_size: int = 32, max_seq_length: int = 128,
          threads: int | None = None, repeats: int = 3, max_samples: int | None = None, batch1_samples: int = 100,
          work_dir=None, name: str | None = None, dev_file: str = "dev.txt", label_file: str = "label.txt",
          progress: bool = True) -> list[dict]:
    """One row per backend for a checkpoint or export folder on a dataset's dev split (medians of ``repeats``).

    A checkpoint is exported (plain, fused, INT8) into ``work_dir`` (default: a temporary folder).
    """
    if repeats < 1 or batch_size < 1:
        raise ZhclsError("--repeats and --batch_size must be >= 1")
    options = dict(batch_size=batch_size, max_seq_length=max_seq_length, threads=threads, max_samples=max_samples,
                   batch1_samples=batch1_samples, dev_file=dev_file, label_file=label_file)
    with tempfile.TemporaryDirectory(prefix="zhcls-bench-") as tmp:
        specs = prepare(params_path, dataset_dir, work_dir or tmp, backends, max_seq_length=max_seq_length,
                        dev_file=dev_file, label_file=label_file, progress=progress)
        for spec in specs:
            spec["model"] = name or Path(params_path).name
        runs = {spec["backend"]: [] for spec in specs}
        ceilings = []
        with_torch = any(spec["backend"].startswith("torch") for spec in specs)
        with tqdm(total=repeats * (len(specs) + 1), desc="bench", unit="run", disable=not progress) as bar:
            for _ in range(repeats):
                # The machine's ceiling in the same rounds as the backends: the same load drift.
                bar.set_postfix_str("ceiling")
                ceilings.append(isolated(measure_ceiling, threads or default_threads(), with_torch=with_torch))
                bar.update()
                for spec in specs:
                    bar.set_postfix_str(spec["backend"])
                    runs[spec["backend"]].append(measure(spec, dataset_dir, **options))
                    bar.update()
    ceiling = {k: statistics.median(c["per_core"][k] for c in ceilings) for k in ceilings[0]["per_core"]}
    return [with_ceiling(median_row(rows), ceiling) for rows in runs.values()]


def with_ceiling(row: dict, ceiling: dict) -> dict:
    """``row`` with its library's GEMM ceiling (per core) and its model rate as a share of it, and the CPU."""
    peak = ceiling.get(CEILING_OF.get(row["backend"], ""))
    extra = {"ceiling": CEILING_OF.get(row["backend"]), "ceiling_gflops": peak, **cpu_info()}
    for workload in ("padded", "real"):
        rate = row.get(f"{workload}_gflops")
        extra[f"{workload}_ceiling_pct"] = None if rate is None or not peak else 100 * rate / peak
    return {**row, **extra}


COLUMNS = (  # header, key, format
    ("model", "model", "{}"), ("backend", "backend", "{}"), ("dev %", "score", "{:.2f}"),
    ("padded ms", "padded_ms", "{:.3f}"), ("(tokenizer)", "padded_tokenizer_ms", "{:.3f}"),
    ("real ms", "real_ms", "{:.3f}"), ("(tokenizer)", "real_tokenizer_ms", "{:.3f}"),
    ("samples/s", "throughput", "{:.0f}"), ("b1 p50 ms", "b1_p50_ms", "{:.2f}"), ("b1 p99 ms", "b1_p99_ms", "{:.2f}"),
    ("RSS MB", "peak_rss_mb", "{:.0f}"), ("file MB", "size_mb", "{:.1f}"),
    ("% ceil padded", "padded_ceiling_pct", "{:.1f}"), ("% ceil real", "real_ceiling_pct", "{:.1f}"),
)


def format_table(rows: list[dict]) -> str:
    """A plain-text table, one line per row; ms columns are per sample (``padded``: batch and length
    of the rows' settings; ``real``: dynamic padding), "-" where a row has no such figure."""
    cells = [[h for h, _, _ in COLUMNS]]
    cells += [["-" if r.get(k) is None else f.format(r[k]) for _, k, f in COLUMNS] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in cells]
    if rows:
        r = rows[0]
        lines.append(f"ms per sample; padded = batch {r['batch_size']}, padded to {r['max_seq_length']}; "
                     f"real = dev texts as they are ({r.get('mean_tokens', 0):.1f} tokens on average); "
                     f"{r['threads']} threads; medians of {r.get('repeats', 1)} runs")
        best = fastest_correct(rows)
        if best:
            lines.append(f"fastest at real lengths within {MAX_DROP} points of fp32: {best['backend']} ({best['model']})")
        ceilings = dict.fromkeys(f"{r['ceiling']} {r['ceiling_gflops']:.0f}" for r in rows if r.get("ceiling_gflops"))
        if ceilings:
            lines.append(f"% ceil = model GFLOP/s per core / the same library's large-GEMM GFLOP/s per core, measured "
                         f"in the same run ({', '.join(ceilings)}); CPU: {r.get('cpu', '?')}, "
                         f"{' '.join(r.get('flags', []))}")
    return "\n".join(lines)


def fastest_correct(rows: list[dict]) -> dict | None:
    """The row with the fastest real-length figure among those within MAX_DROP points of their model's
    best fp32 score: the backend `zhcls bench` recommends (torch-bf16 and INT8 only where they win)."""
    fp32 = {}
    for r in rows:
        if r.get("variant") == "fp32":
            fp32[r["model"]] = max(fp32.get(r["model"], r["score"]), r["score"])
    fine = [r for r in rows if r.get("real_ms") and r["model"] in fp32 and fp32[r["model"]] - r["score"] <= MAX_DROP]
    return min(fine, key=lambda r: r["real_ms"], default=None)


def plot(rows: list[dict], path) -> Path:
    """Dev score against latency per sample, one point per row (filled: real-length texts, hollow:
    padded), colour per model: the precision-latency figure of the ERNIE 3.0 model card."""
    matplotlib = require("matplotlib", "plot", "the accuracy-latency plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from zhcls.io import atomic_path

    models = list(dict.fromkeys(r["model"] for r in rows))
    markers = dict(zip(dict.fromkeys(r["backend"] for r in rows), "osD^vP*Xh"))
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for r in rows:
        color = f"C{models.index(r['model']) % 10}"
        label = f"{r['model']} {r['backend']}"
        if r.get("real_ms") is not None:
            ax.scatter(r["real_ms"], r["score"], color=color, marker=markers[r["backend"]], s=60, label=label)
            ax.annotate(r["backend"], (r["real_ms"], r["score"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        if r.get("padded_ms") is not None:
            ax.scatter(r["padded_ms"], r["score"], facecolors="none", edgecolors=color, marker=markers[r["backend"]], s=60,
                       label=None if r.get("real_ms") is not None else label)
            if r.get("real_ms") is not None:
                ax.plot([r["real_ms"], r["padded_ms"]], [r["score"]] * 2, color=color, lw=0.6, alpha=0.5)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # 5, 10, 20 rather than 5x10^0
    ax.set_xlabel("latency, ms per sample (log; filled: real-length texts, hollow: padded)")
    ax.set_ylabel(f"dev {rows[0]['metric']} %" if rows else "dev score %")
    ax.set_title("precision vs latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    return path
