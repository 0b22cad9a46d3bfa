"""zhcls against its peers on the same weights, in one run (TARGETS.md: ratios, not absolute times).

Random-initialised ERNIE 3.0 Micro and Medium shapes (nothing can be downloaded here), KUAKE-QIC dev:
  zhcls                  each backend of `zhcls.deploy.bench`: torch, onnx, onnx-fused, onnx-int8
  transformers-pipeline  pipeline("text-classification") on the same checkpoint folder, batch 32
  transformers-eager     the same transformers model in plain PyTorch, batch 32 padded to 128
                         (and, as its "real" figure, padded to each batch's longest text)
Every measurement runs in a fresh process; rounds go through all systems in turn and medians are
reported. Then the INT8 target on a trained model: Micro trained briefly on KUAKE-QIC, exported with
--quantize int8 and its accuracy gate.

    python benchmarks/peers.py                  # Micro + Medium, 3 rounds, INT8 on a trained Micro
    python benchmarks/peers.py --quick          # Micro only, 320 texts, 1 round, no training (`make bench`)

Writes OUT/peers.json (settings, medians, every round, speed-ups per shape, the INT8 result) and
OUT/precision_latency.png; OUT is --out (default bench_out).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZHCLS_SHARED", REPO.parent / "shared"))
SHAPES = {"micro": "ernie-3.0-micro-zh", "medium": "ernie-3.0-medium-zh"}
PEERS = ("transformers-pipeline", "transformers-eager")
TARGET_SPEEDUP, TARGET_MICRO_MS, TARGET_INT8_DROP = 3.0, 1.5, 0.5


def peer_row(kind: str, checkpoint, dataset_dir, *, batch_size: int, max_seq_length: int, threads: int,
             batch1_samples: int) -> dict:
    """A bench-style row for a transformers baseline (run it through `zhcls.deploy.bench.isolated`)."""
    import torch
    import transformers

    from zhcls import data
    from zhcls.deploy.bench import dev_score, peak_rss_mb

    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    ds = data.load_dataset(dataset_dir, require=("dev",))
    examples = ds.dev
    texts, y, n = [e.text_a for e in examples], data.encode_labels(examples, ds.labels, ds.problem_type), len(examples)
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    row = {"model": None, "backend": kind, "variant": "fp32", "metric": "accuracy", "samples": n, "batch_size": batch_size,
           "max_seq_length": max_seq_length, "threads": threads, "padded_ms": None, "padded_tokenizer_ms": None,
           "real_tokenizer_ms": None, "size_mb": (Path(checkpoint) / "model.safetensors").stat().st_size / 2**20}
    batches = [texts[i:i + batch_size] for i in range(0, n, batch_size)]

    if kind == "transformers-pipeline":
        classify = transformers.pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")

        def predict(batch):
            return classify(batch, batch_size=batch_size, truncation=True, max_length=max_seq_length)

        predict(texts)  # warm-up: every batch shape once
        start = time.perf_counter()
        labels = [r["label"] for r in predict(texts)]
        real_s = time.perf_counter() - start
        index = ds.label_index()
        row["score"] = 100 * float(np.mean(np.array([index[label] for label in labels]) == y))
    else:
        def forward(batch, padding):
            t0 = time.perf_counter()
            enc = tokenizer(batch, padding=padding, truncation=True, max_length=max_seq_length, return_tensors="pt")
            t1 = time.perf_counter()
            with torch.inference_mode():
                logits = model(**enc).logits.numpy()
            return logits, t1 - t0, time.perf_counter() - t1

        def timed(padding):
            runs = [forward(batch, padding) for batch in batches]
            return np.concatenate([r[0] for r in runs]), sum(r[1] for r in runs), sum(r[2] for r in runs)

        forward(batches[0], "max_length")  # warm-up: one shape
        logits, tok_s, model_s = timed("max_length")
        row.update(padded_ms=1000 * (tok_s + model_s) / n, padded_tokenizer_ms=1000 * tok_s / n,
                   score=dev_score(ds.labels, y, logits, ds.problem_type))
        timed("longest")  # warm-up: every batch shape once
        _, tok_s, model_s = timed("longest")
        real_s = tok_s + model_s
        row["real_tokenizer_ms"] = 1000 * tok_s / n

        def predict(batch):
            return forward(batch, "longest")

    latencies = []
    for text in texts[:: max(1, n // batch1_samples)][:batch1_samples]:
        start = time.perf_counter()
        predict([text])
        latencies.append(1000 * (time.perf_counter() - start))
    row.update(real_ms=1000 * real_s / n, throughput=n / real_s, b1_p50_ms=float(np.percentile(latencies, 50)),
               b1_p99_ms=float(np.percentile(latencies, 99)), peak_rss_mb=peak_rss_mb())
    return row


def subset(dataset: Path, out: Path, n: int) -> Path:
    """The dataset's label.txt and its first n dev lines: everything, exports' INT8 gate included, uses only those."""
    out.mkdir(parents=True)
    (out / "label.txt").write_bytes((dataset / "label.txt").read_bytes())
    lines = (dataset / "dev.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    (out / "dev.txt").write_text("".join(lines[:n]), encoding="utf-8")
    return out


def speedups(rows: list[dict]) -> dict:
    """Per zhcls backend: speed-up over the pipeline (real-length texts) and over eager (padded to 128)."""
    by = {r["backend"]: r for r in rows}
    pipe, eager = by["transformers-pipeline"], by["transformers-eager"]
    zhcls_rows = [r for r in rows if r["backend"] not in PEERS]
    best = min(zhcls_rows, key=lambda r: r["real_ms"])
    return {"vs_pipeline_real": {r["backend"]: pipe["real_ms"] / r["real_ms"] for r in zhcls_rows},
            "vs_eager_padded": {r["backend"]: eager["padded_ms"] / r["padded_ms"] for r in zhcls_rows},
            "best": best["backend"], "best_real_ms": best["real_ms"], "pipeline_real_ms": pipe["real_ms"]}


def ratios(rows: list[dict], shape: str) -> str:
    """`speedups` as the lines the script prints, with the targets."""
    s = speedups(rows)
    lines = [f"{shape}: speed-up per sample (higher is better)",
             f"  {'backend':12s} {'vs pipeline, real texts':>24s} {'vs eager, padded 128':>22s}"]
    for backend, ratio in s["vs_pipeline_real"].items():
        lines.append(f"  {backend:12s} {ratio:23.2f}x {s['vs_eager_padded'][backend]:21.2f}x")
    best, best_ms, speedup = s["best"], s["best_real_ms"], s["vs_pipeline_real"][s["best"]]
    lines.append(f"  best: {best} {best_ms:.3f} ms/sample on real texts vs pipeline {s['pipeline_real_ms']:.3f}: "
                 f"{speedup:.2f}x (target >= {TARGET_SPEEDUP:g}x: {'met' if speedup >= TARGET_SPEEDUP else 'MISSED'})")
    if shape == "micro":
        lines.append(f"  Micro best {best_ms:.3f} ms/sample (target <= {TARGET_MICRO_MS} ms: "
                     f"{'met' if best_ms <= TARGET_MICRO_MS else 'MISSED'})")
    return "\n".join(lines)


def int8_on_trained(work: Path, dataset: Path, vocab: Path, epochs: int, progress: bool) -> tuple[str, dict]:
    """Train Micro briefly, export it with the INT8 gate, and say what the gate measured (line, report)."""
    from zhcls.deploy.export import export
    from zhcls.errors import ZhclsError
    from zhcls.training import train

    result = train(dataset_dir=str(dataset), model_name=SHAPES["micro"], init_random=True, vocab_file=str(vocab),
                   save_dir=str(work / "trained"), epochs=epochs, progress=progress)
    try:
        export(work / "trained", work / "trained-export", quantize="int8", dataset_dir=dataset,
               max_accuracy_drop=TARGET_INT8_DROP, progress=progress)
    except ZhclsError as e:
        print(f"export: {e}")
    int8 = json.loads((work / "trained-export" / "export_report.json").read_text(encoding="utf-8"))["variants"]["int8"]
    modes = ", ".join(f"{'per-channel' if a['per_channel'] else 'per-tensor'}{' reduce-range' if a['reduce_range'] else ''}"
                      f" {a['dev_int8']:.2f}" for a in int8["attempts"])
    line = (f"INT8 on a trained Micro ({epochs} epochs from scratch, {result.seconds:.0f} s, best dev {result.best_score:.4f}): "
            f"dev accuracy fp32 {int8['dev_fp32']:.2f} -> int8 {modes}; drop {int8['drop']:.2f} points, agreement "
            f"{100 * int8['prediction_agreement']:.1f} %, {'ACCEPTED' if int8['accepted'] else 'REFUSED'} "
            f"(target drop <= {TARGET_INT8_DROP})")
    return line, {**int8, "train_seconds": result.seconds, "best_dev": result.best_score, "epochs": epochs}


def main(argv=None) -> None:
    from zhcls.data import read_labels
    from zhcls.deploy.bench import BACKENDS, format_table, isolated, measure, median_row, plot, prepare
    from zhcls.evaluation.report_files import write_json
    from zhcls.inference.onnx_predictor import default_threads
    from zhcls.models.checkpoint import save_checkpoint
    from zhcls.models.pretrained import load_pretrained

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="micro,medium", help="comma-separated: micro, medium")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per system; medians are reported")
    parser.add_argument("--samples", type=int, default=None, help="use only the first N dev texts (default: all 1955)")
    parser.add_argument("--batch1_samples", type=int, default=100, help="texts timed one at a time")
    parser.add_argument("--threads", type=int, default=None, help="default: the cores this process may use, at most 8")
    parser.add_argument("--train_epochs", type=int, default=2, help="epochs for the INT8 check (0: skip it)")
    parser.add_argument("--quick", action="store_true", help="Micro, 320 texts, 1 round, 50 batch-1 texts, no training")
    parser.add_argument("--out", default="bench_out", help="folder for peers.json and precision_latency.png")
    args = parser.parse_args(argv)
    if args.quick:
        args.shapes, args.rounds, args.samples, args.batch1_samples, args.train_epochs = "micro", 1, 320, 50, 0
    kuake, vocab = SHARED / "data" / "kuake_qic", SHARED / "vocab" / "ernie-3.0-zh" / "vocab.txt"
    labels = read_labels(kuake / "label.txt")
    threads = args.threads or default_threads()
    options = dict(batch_size=32, max_seq_length=128, threads=threads, batch1_samples=args.batch1_samples)
    print(f"{threads} threads, {args.rounds} round(s), KUAKE-QIC dev ({args.samples or 'all'} texts), batch 32")

    all_rows, all_runs, summaries, results = [], {}, [], {"settings": vars(args), "speedups": {}}
    with tempfile.TemporaryDirectory(prefix="zhcls-peers-") as tmp:
        dataset = subset(kuake, Path(tmp) / "kuake_qic", args.samples) if args.samples else kuake
        for shape in args.shapes.split(","):
            work = Path(tmp) / shape
            model, tokenizer = load_pretrained(SHAPES[shape], labels, init_random=True, vocab_file=str(vocab))
            checkpoint = save_checkpoint(model, tokenizer, work / "checkpoint",
                                         {"task": "text", "problem_type": "multi_class", "max_seq_length": 128})
            del model
            specs = prepare(checkpoint, dataset, work, BACKENDS, max_seq_length=128)
            runs = defaultdict(list)
            for r in range(args.rounds):
                print(f"{shape}: round {r + 1}/{args.rounds}", flush=True)
                for spec in specs:
                    runs[spec["backend"]].append(measure(spec, dataset, **options))
                for kind in PEERS:
                    runs[kind].append(isolated(peer_row, kind, str(checkpoint), str(dataset), **options))
            rows = [{**median_row(v), "model": f"{shape} (random)"} for v in runs.values()]
            all_rows += rows
            all_runs[shape] = runs
            results["speedups"][shape] = speedups(rows)
            summaries.append(f"{format_table(rows)}\n{ratios(rows, shape)}")
            print(summaries[-1], flush=True)
        if args.train_epochs:
            line, results["int8"] = int8_on_trained(Path(tmp), kuake, vocab, args.train_epochs, progress=True)
            summaries.append(line)
    out = Path(args.out)
    write_json(out / "peers.json", {**results, "medians": all_rows, "rounds": all_runs})
    summaries.append(f"results: {out / 'peers.json'}, figure: {plot(all_rows, out / 'precision_latency.png')}")
    print("\n\n".join(summaries))


if __name__ == "__main__":
    main()
