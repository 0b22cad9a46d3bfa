"""The domain-pretraining corpus of the README's experiment: the training texts of every dataset in
../shared/data with the labels dropped (both sides of a pair, one line each), minus any line that
is a dev or test text of the target dataset. Writes one file per dataset into --out.

    python benchmarks/domain_corpus.py --data ../shared/data --target kuake_qic --out corpus/
"""
import argparse
from pathlib import Path


def texts(path: Path) -> list[str]:
    """The text columns of a dataset file (every column but the label, the last)."""
    if not path.exists():
        return []
    rows = [line.rstrip("\n").split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [t for row in rows for t in row[:-1] if t.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--target", default="kuake_qic")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    root, out = Path(args.data), Path(args.out)
    held_out = set(texts(root / args.target / "dev.txt")) | set(texts(root / args.target / "test.txt"))
    out.mkdir(parents=True, exist_ok=True)
    for folder in sorted(p for p in root.iterdir() if (p / "train.txt").exists()):
        lines = [t for t in texts(folder / "train.txt") if t not in held_out]
        (out / f"{folder.name}.txt").write_text("".join(t + "\n" for t in lines), encoding="utf-8")
        print(f"{folder.name}: {len(lines)} lines, {sum(map(len, lines)) / 1e6:.2f}M characters")


if __name__ == "__main__":
    main()
