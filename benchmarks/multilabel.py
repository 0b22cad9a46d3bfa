"""Multi-label, hierarchical and long-text figures of the README, each from one command (needs scikit-learn,
in the test extra, for the TF-IDF baseline).

    python benchmarks/multilabel.py thresholds --out results   # cail2019_divorce: tuned thresholds vs 0.5, TF-IDF
    python benchmarks/multilabel.py thresholds --class_weights balanced --out results   # the same, pos_weight
    python benchmarks/multilabel.py hierarchy --class_weights balanced --out results   # duee_hier: per level
    python benchmarks/multilabel.py long_text --out results    # chnsenticorp at 64 tokens: truncate / head_tail / sliding

Models are random-initialised (no pretrained weights exist on our machines) at the shape of
uer/chinese_roberta_L-2_H-128 with bert-base-chinese's vocab, trained with one thread. Each run writes
OUT/NAME.json with every number it prints.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZHCLS_SHARED", REPO.parent / "shared"))
MODEL = "uer/chinese_roberta_L-2_H-128"


def train(dataset: str, save_dir: Path, args, **extra):
    """Train into save_dir; with --reuse, a checkpoint already there is evaluated as it is (training is
    deterministic on CPU: the same command gives the same checkpoint)."""
    import zhcls
    from zhcls.training.loop import TrainResult

    if args.reuse and (save_dir / "config.json").exists():
        meta = json.loads((save_dir / "config.json").read_text(encoding="utf-8"))["zhcls"]
        return TrainResult(save_dir, meta["best_dev_score"], meta["best_epoch"], meta["global_step"], [], 0.0), None
    t0 = time.time()
    result = zhcls.train(dataset_dir=str(SHARED / "data" / dataset), model_name=MODEL, init_random=True,
                         vocab_file=str(SHARED / "vocab/bert-base-chinese/vocab.txt"), save_dir=str(save_dir),
                         epochs=args.epochs, threads=args.threads, progress=False, **extra)
    return result, round(time.time() - t0, 1)


def tfidf_one_vs_rest(ds) -> dict:
    """Character 1-3-gram TF-IDF, one logistic regression per label (scikit-learn), decision at 0.5."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from zhcls import data
    from zhcls.evaluation import metrics

    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True)
    x_train = vectorizer.fit_transform([e.text_a for e in ds.train])
    y_train = data.encode_labels(ds.train, ds.labels, ds.problem_type)
    model = OneVsRestClassifier(LogisticRegression(C=10.0, max_iter=2000), n_jobs=1).fit(x_train, y_train)
    out = {}
    for split in ("dev", "test"):
        examples = getattr(ds, split)
        if examples:
            probs = model.predict_proba(vectorizer.transform([e.text_a for e in examples]))
            gold = data.encode_labels(examples, ds.labels, ds.problem_type)
            r = metrics.multilabel_report(ds.labels, gold, probs, 0.5)
            out[split] = {"micro_f1": r["micro_f1"], "macro_f1": r["macro_f1"]}
    return out


def thresholds(args, work: Path) -> dict:
    """Item 1: the same trained model at a fixed 0.5, at the tuned global threshold and at the tuned
    per-class ones, on dev (where they were tuned) and test (held out); the TF-IDF baseline beside it."""
    from zhcls import data, load
    from zhcls.evaluation import metrics

    dataset = "cail2019_divorce"
    result, seconds = train(dataset, work / dataset, args, problem_type="multi_label", max_seq_length=128,
                            class_weights=args.class_weights, loss=args.loss)
    ds = data.load_dataset(SHARED / "data" / dataset, problem_type="multi_label", require=("train", "dev", "test"))
    predictor = load(work / dataset, device="cpu")
    stored = json.loads((work / dataset / "config.json").read_text(encoding="utf-8"))["zhcls"]["thresholds"]
    rows = {}
    for split in ("dev", "test"):
        examples = getattr(ds, split)
        probs = predictor.predict_proba(data.predictor_inputs(examples))
        gold = data.encode_labels(examples, ds.labels, "multi_label")
        for name, t in (("fixed_0.5", 0.5), ("tuned_global", stored["global"]),
                        ("tuned_per_class", np.asarray(stored["per_class"]))):
            r = metrics.multilabel_report(ds.labels, gold, probs, t)
            rows.setdefault(name, {})[split] = {k: r[k] for k in ("micro_f1", "macro_f1", "macro_recall")}
            rows[name][split]["recall"] = {c["label"]: c["recall"] for c in r["per_class"]}
    rows["tfidf_one_vs_rest"] = tfidf_one_vs_rest(ds)
    return {"dataset": dataset, "model": MODEL, "epochs": args.epochs, "class_weights": args.class_weights,
            "loss": args.loss, "best_epoch": result.best_epoch, "train_seconds": seconds, "thresholds": stored,
            "rows": rows}


def hierarchy(args, work: Path) -> dict:
    """Item 2: per-level metrics on duee_hier dev, and the broken paths before and after consistency."""
    from zhcls import data, evaluate, load
    from zhcls.data.hierarchy import inconsistent_paths

    dataset = "duee_hier"
    result, seconds = train(dataset, work / dataset, args, problem_type="hierarchical", max_seq_length=64,
                            class_weights=args.class_weights, loss=args.loss)
    report = evaluate(work / dataset, SHARED / "data" / dataset, splits=("dev",), output_dir=work / "eval",
                      plot=False, progress=False)["dev"]
    predictor = load(work / dataset, device="cpu")
    ds = data.load_dataset(SHARED / "data" / dataset, problem_type="hierarchical")
    probs = predictor.predict_proba(data.predictor_inputs(ds.dev))
    raw = probs >= predictor.thresholds  # thresholds alone, before the paths are made consistent
    return {"dataset": dataset, "model": MODEL, "epochs": args.epochs, "max_seq_length": 64,
            "class_weights": args.class_weights, "loss": args.loss, "best_epoch": result.best_epoch,
            "train_seconds": seconds,
            "dev": {k: report[k] for k in ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss", "levels",
                                           "inconsistent_paths")},
            "broken_paths_before_consistency": inconsistent_paths(raw, ds.labels)}


def long_text(args, work: Path) -> dict:
    """Item 3: chnsenticorp at max_seq_length 64, one model per training policy, each evaluated under all
    three policies; the ONNX predictor checked against torch under each."""
    from zhcls import data, load
    from zhcls.data.long_text import POLICIES, LongText
    from zhcls.deploy.export import export

    dataset = "chnsenticorp"
    ds = data.load_dataset(SHARED / "data" / dataset)
    texts, gold = data.predictor_inputs(ds.dev), data.encode_labels(ds.dev, ds.labels, "multi_class")
    rows = {}
    for trained_with in args.policies:
        save = work / f"{dataset}_{trained_with}"
        result, seconds = train(dataset, save, args, max_seq_length=64, long_text=trained_with)
        torch_predictor = load(save, device="cpu")
        export(save, work / f"{save.name}_onnx", dataset_dir=None, progress=False, threads=args.threads)
        onnx_predictor = load(work / f"{save.name}_onnx", device="cpu", threads=args.threads)
        row = {"train_seconds": seconds, "best_epoch": result.best_epoch, "dev_accuracy": {}, "onnx_agreement": {}}
        for policy in POLICIES:
            torch_predictor.long_text = onnx_predictor.long_text = LongText(policy)
            labels = [r["label"] for r in torch_predictor.predict(texts)]
            row["dev_accuracy"][policy] = float(np.mean([ds.labels[g] == p for g, p in zip(gold, labels)]))
            row["onnx_agreement"][policy] = float(np.mean([r["label"] == p for r, p in
                                                           zip(onnx_predictor.predict(texts), labels)]))
        rows[trained_with] = row
    return {"dataset": dataset, "model": MODEL, "epochs": args.epochs, "max_seq_length": 64,
            "trained_with": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=["thresholds", "hierarchy", "long_text"])
    parser.add_argument("--epochs", type=int, default=None, help="default: 20 thresholds, 6 hierarchy, 3 long_text")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--policies", default="truncate,head_tail,sliding", help="long_text: training policies")
    parser.add_argument("--class_weights", default="none", help="thresholds, hierarchy: none or balanced")
    parser.add_argument("--loss", default="ce", help="thresholds, hierarchy: ce or focal")
    parser.add_argument("--out", default="results", help="folder for NAME.json")
    parser.add_argument("--work", default=None, help="keep the checkpoints here (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true", help="evaluate the checkpoints already in --work")
    args = parser.parse_args()
    args.epochs = args.epochs or {"thresholds": 20, "hierarchy": 6, "long_text": 3}[args.experiment]
    args.policies = [p for p in args.policies.split(",") if p]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        result = globals()[args.experiment](args, work)
    suffix = "".join(f"_{v}" for v in (args.class_weights, args.loss) if v not in ("none", "ce"))
    out = Path(args.out) / f"{args.experiment}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
