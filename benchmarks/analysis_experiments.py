"""The data-analysis claims of the README, measured on the real datasets in ../shared (issue 10, items 1-4).

    python benchmarks/analysis_experiments.py dirty     # waimai_10k, 5 % of train labels flipped (seeded)
    python benchmarks/analysis_experiments.py sparse    # KUAKE-QIC: 500 training rows + 100 picked vs 100 random
    python benchmarks/analysis_experiments.py augment   # KUAKE-QIC: 500 training rows vs the same + augmented
    python benchmarks/analysis_experiments.py baseline  # TF-IDF baseline vs the README references, with its time

Every dev score comes from two learners trained on the same files: the TF-IDF baseline and a 2-layer
transformer from scratch (uer/chinese_roberta_L-2_H-128 shape, real vocabulary, one thread;
``--no_model`` skips it). Each run writes ``--out/NAME.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZHCLS_SHARED", REPO.parent / "shared"))
SMALL = "uer/chinese_roberta_L-2_H-128"
REFERENCES = {"kuake_qic": 76.98, "waimai_10k": 89.98}  # ../shared/data/README.md, TF-IDF + linear SVM


def dev_scores(folder: Path, args, work: Path, train_file: str = "train.txt") -> dict:
    """Dev score (points) of the baseline and, unless --no_model, of the small transformer, trained on train_file."""
    import zhcls
    from zhcls.evaluation.baseline import baseline

    scores = {"baseline": round(baseline(folder, train_file=train_file).score, 2)}
    if not args.no_model:
        save = work / f"ckpt-{folder.name}-{Path(train_file).stem}"
        result = zhcls.train(dataset_dir=str(folder), train_file=train_file, model_name=SMALL, init_random=True,
                             vocab_file=str(SHARED / "vocab/bert-base-chinese/vocab.txt"), save_dir=str(save),
                             epochs=args.epochs, max_seq_length=64, threads=1, progress=False, seed=args.seed)
        scores["transformer"] = round(100 * result.best_score, 2)
        shutil.rmtree(save, ignore_errors=True)
    return scores


def copy_folder(src: Path, dst: Path, train_lines: list[str] | None = None) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("label.txt", "dev.txt", "train.txt"):
        shutil.copyfile(src / name, dst / name)
    if train_lines is not None:
        (dst / "train.txt").write_text("".join(f"{line}\n" for line in train_lines), encoding="utf-8")
    return dst


def lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def exp_dirty(args, work: Path) -> dict:
    from zhcls.analysis.dirty import analyze_dirty

    src = SHARED / "data/waimai_10k"
    labels = lines(src / "label.txt")
    train = lines(src / "train.txt")
    rng = random.Random(args.seed)
    flipped = sorted(rng.sample(range(len(train)), round(0.05 * len(train))))
    noisy = list(train)
    for i in flipped:
        text, label = noisy[i].rsplit("\t", 1)
        noisy[i] = f"{text}\t{rng.choice([lab for lab in labels if lab != label])}"
    folder = copy_folder(src, work / "waimai_noisy", noisy)
    t0 = time.time()
    result = analyze_dirty(folder, dirty_num=2 * len(flipped), progress=False)
    seconds = time.time() - t0
    hits = len(set(result.dirty.tolist()) & set(flipped))
    row = {"train_rows": len(train), "flipped": len(flipped), "flagged": len(result.dirty),
           "flipped_in_flagged": hits, "precision": round(hits / len(result.dirty), 4),
           "recall": round(hits / len(flipped), 4), "estimated_noisy": result.estimated_noisy,
           "analyze_seconds": round(seconds, 1)}
    print(json.dumps(row))
    clean = copy_folder(src, work / "waimai_orig")
    row["dev"] = {"original": dev_scores(clean, args, work), "noisy": dev_scores(folder, args, work),
                  "cleaned": dev_scores(folder, args, work, "train_clean.txt")}
    for learner in row["dev"]["original"]:
        cost = row["dev"]["original"][learner] - row["dev"]["noisy"][learner]
        gain = row["dev"]["cleaned"][learner] - row["dev"]["noisy"][learner]
        row[f"{learner}_noise_cost"], row[f"{learner}_recovered"] = round(cost, 2), round(gain, 2)
    return row


def kuake_subset(work: Path, n: int, seed: int) -> tuple[Path, list[str]]:
    """The first-rows-free subset: ``n`` seeded random training rows; the rest of train is the unlabelled pool."""
    src = SHARED / "data/kuake_qic"
    train = lines(src / "train.txt")
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    subset = [train[i] for i in order[:n]]
    pool = [train[i] for i in order[n:]]
    folder = copy_folder(src, work / f"kuake_{n}", subset)
    (folder / "data.txt").write_text("".join(line.rsplit("\t", 1)[0] + "\n" for line in pool), encoding="utf-8")
    return folder, pool


def exp_sparse(args, work: Path) -> dict:
    from zhcls.analysis.sparse import analyze_sparse

    folder, pool = kuake_subset(work, 500, args.seed)
    answers = {}
    for line in pool:  # the pool's own labels play the annotator
        text, label = line.rsplit("\t", 1)
        answers.setdefault(text, label)
    t0 = time.time()
    result = analyze_sparse(folder, strategy="annotate", annotate_num=100, progress=False)
    seconds = time.time() - t0
    picked = [answers[text] for text in lines(result.support_path)]
    picked_lines = lines(folder / "train.txt") + [f"{t}\t{lab}" for t, lab in zip(lines(result.support_path), picked)]
    random_lines = lines(folder / "train.txt") + random.Random(args.seed).sample(pool, 100)
    (folder / "train_annotated.txt").write_text("\n".join(picked_lines) + "\n", encoding="utf-8")
    (folder / "train_random.txt").write_text("\n".join(random_lines) + "\n", encoding="utf-8")
    return {"train_rows": 500, "pool_rows": len(pool), "analyze_seconds": round(seconds, 1),
            "sparse_dev_rows": len(result.sparse),
            "dev": {"500": dev_scores(folder, args, work),
                    "500+100 annotate": dev_scores(folder, args, work, "train_annotated.txt"),
                    "500+100 random": dev_scores(folder, args, work, "train_random.txt")}}


def exp_augment(args, work: Path) -> dict:
    from zhcls import data
    from zhcls.analysis.augment import augment_file

    folder, _ = kuake_subset(work, 500, args.seed)
    t0 = time.time()
    written = augment_file(folder / "train.txt", folder / "train_aug.txt", label_file=folder / "label.txt",
                           strategies=args.aug_strategy.split(","), create_n=args.create_n,
                           aug_percent=args.aug_percent, seed=args.seed)
    seconds = time.time() - t0
    examples, _ = data.read_examples(folder / "train_aug.txt", data.read_labels(folder / "label.txt"))
    merged = lines(folder / "train.txt") + lines(folder / "train_aug.txt")
    (folder / "train_merged.txt").write_text("\n".join(merged) + "\n", encoding="utf-8")
    return {"train_rows": 500, "augmented_rows": written, "valid_rows_read_back": len(examples),
            "strategy": args.aug_strategy, "create_n": args.create_n, "aug_percent": args.aug_percent,
            "augment_seconds": round(seconds, 1),
            "dev": {"500": dev_scores(folder, args, work), "500+augmented": dev_scores(folder, args, work,
                                                                                     "train_merged.txt")}}


def exp_baseline(args, work: Path) -> dict:
    from zhcls.evaluation.baseline import baseline

    rows = {}
    for name, reference in REFERENCES.items():
        result = baseline(SHARED / "data" / name)
        rows[name] = {"score": round(result.score, 2), "reference": reference,
                      "difference": round(result.score - reference, 2), "seconds": round(result.seconds, 1)}
        print(name, rows[name])
    return rows


EXPERIMENTS = {"dirty": exp_dirty, "sparse": exp_sparse, "augment": exp_augment, "baseline": exp_baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("--out", default="results", help="folder for NAME.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2, help="transformer epochs")
    parser.add_argument("--no_model", action="store_true", help="baseline only (seconds instead of minutes)")
    parser.add_argument("--aug_strategy", default="synonym,homophone,insert,delete,swap")
    parser.add_argument("--create_n", type=int, default=2)
    parser.add_argument("--aug_percent", type=float, default=0.1)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        row = {"experiment": args.experiment, "seed": args.seed, "epochs": args.epochs, "model": SMALL,
               **EXPERIMENTS[args.experiment](args, Path(tmp))}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.experiment}.json").write_text(json.dumps(row, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(row, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
