"""Training from scratch: the README's table (dev accuracy and time of the demo's recipe per dataset).

No pretrained weights exist on our machines, so the recipe is `zhcls train --model MODEL --init_random
--vocab_from_data --epochs 3 --early_stop --threads 1` on each dataset folder of ../shared/data. Each
row sets the model against two references on the same dev split: the majority class (measured here)
and the classical character 1-3-gram TF-IDF + linear SVM figure that ../shared/data/README.md publishes.

    python benchmarks/train_from_scratch.py                  # `make bench`: 2000 train lines (a few minutes)
    python benchmarks/train_from_scratch.py --max_train 0    # the README's table (the whole train files)

Writes OUT/train_from_scratch.json: settings, and per dataset the dev accuracy, epochs, seconds, history.
"""
from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZHCLS_SHARED", REPO.parent / "shared"))


def tfidf_reference(readme: Path) -> dict[str, float]:
    """The dev accuracies the shared data README gives for TF-IDF + linear SVM (its line ending in 'dev accuracy.')."""
    line = next((line for line in readme.read_text(encoding="utf-8").splitlines() if line.endswith("dev accuracy.")), "")
    return {name: float(value) for name, value in re.findall(r"(\w+) (\d+\.\d+)", line)}


def subset(src: Path, dst: Path, max_train: int) -> Path:
    """The dataset folder with only its first max_train training lines (dev and labels whole)."""
    dst.mkdir(parents=True)
    for name in ("label.txt", "dev.txt"):
        (dst / name).write_bytes((src / name).read_bytes())
    lines = (src / "train.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    (dst / "train.txt").write_text("".join(lines[:max_train]), encoding="utf-8")
    return dst


def majority_share(dev: Path) -> float:
    labels = [line.rstrip("\n").rsplit("\t", 1)[-1] for line in dev.open(encoding="utf-8") if line.strip()]
    return Counter(labels).most_common(1)[0][1] / len(labels)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="kuake_qic,waimai_10k", help="comma-separated folders of ../shared/data")
    parser.add_argument("--model", default="uer/chinese_roberta_L-4_H-256", help="the architecture (the demo's)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max_train", type=int, default=2000, help="first N training lines (0: all)")
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench_out", help="folder for train_from_scratch.json")
    args = parser.parse_args(argv)

    from zhcls.evaluation.report_files import write_json
    from zhcls.training import train

    reference = tfidf_reference(SHARED / "data" / "README.md")
    rows = []
    with tempfile.TemporaryDirectory(prefix="zhcls-scratch-") as tmp:
        for name in args.datasets.split(","):
            dataset = SHARED / "data" / name
            if args.max_train:
                dataset = subset(dataset, Path(tmp) / name, args.max_train)
            load_before = os.getloadavg()[0]  # a shared machine's load moves the seconds, not the accuracy
            start = time.perf_counter()
            result = train(dataset_dir=str(dataset), model_name=args.model, init_random=True, vocab_from_data=True,
                           epochs=args.epochs, early_stop=True, max_seq_length=args.max_seq_length,
                           threads=args.threads, save_dir=str(Path(tmp) / f"{name}-ckpt"))
            rows.append({"dataset": name, "train_lines": sum(1 for _ in (dataset / "train.txt").open(encoding="utf-8")),
                         "dev_accuracy": 100 * result.best_score, "best_epoch": result.best_epoch,
                         "epochs_run": len(result.history), "seconds": round(time.perf_counter() - start, 1),
                         "load_average": [load_before, os.getloadavg()[0]],
                         "majority_class": 100 * majority_share(dataset / "dev.txt"),
                         "tfidf_svm_reference": reference.get(name), "history": result.history})
    print(f"\n{args.model}, random init, vocab from data, {args.epochs} epoch(s), early stop, {args.threads} thread(s)")
    print(f"{'dataset':12} {'train':>6} {'dev acc':>8} {'seconds':>8} {'majority':>9} {'TF-IDF+SVM':>11}")
    for r in rows:
        ref = "-" if r["tfidf_svm_reference"] is None else f"{r['tfidf_svm_reference']:.2f}"
        print(f"{r['dataset']:12} {r['train_lines']:6d} {r['dev_accuracy']:8.2f} {r['seconds']:8.0f} "
              f"{r['majority_class']:9.2f} {ref:>11}")
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    path = Path(args.out) / "train_from_scratch.json"
    write_json(path, {"settings": settings, "rows": rows})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
