"""Does domain pretraining pay on these machines? The README's experiment, end to end:

1. pretrain a 4-layer encoder (UER L-4 H-256 shape, bert-base-chinese vocab, random init) on the
   training texts of ../shared/data with labels dropped (benchmarks/domain_corpus.py: no dev or test
   text of the target), once with MLM (whole-word masking), once with ELECTRA, each for a fixed
   number of steps chosen to fit the same wall-clock budget;
2. fine-tune both, and the same architecture from random init, with ONE recipe on the target;
3. write every number (pretraining time, fixed-mask accuracies, dev accuracy per fine-tuning epoch)
   as JSON and the dev curves as a PNG.

    nice -n 5 python benchmarks/domain_pretraining.py --out runs/domain --mlm_steps 360 --electra_steps 180

The stages can run as separate processes (a shared machine gives each its own share of the CPUs):
``--pretrain ""`` skips pretraining, ``--finetune random,mlm,electra,random-lr5e-4`` picks the
fine-tuning runs (mlm and electra read ``--pretrained_dir``), and ``--merge A.json B.json`` joins
the results.json of several runs into --out's results.json and curve.png.
"""
import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import zhcls
from zhcls.pretrain import pretrain

MODEL = "uer/chinese_roberta_L-4_H-256"
FINETUNE_RUNS = {"random": "random init", "mlm": "MLM (wwm)", "electra": "ELECTRA", "random-lr5e-4": "random init, lr 5e-4"}
OBJECTIVE_OF = {"MLM (wwm)": "mlm", "ELECTRA": "electra"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data"))
    ap.add_argument("--vocab", default=None, help="default: ../shared/vocab/bert-base-chinese/vocab.txt")
    ap.add_argument("--target", default="kuake_qic")
    ap.add_argument("--out", required=True)
    ap.add_argument("--mlm_steps", type=int, default=360)
    ap.add_argument("--electra_steps", type=int, default=180)
    ap.add_argument("--pretrain_lr", type=float, default=1e-3)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--max_seq_length", type=int, default=64)
    ap.add_argument("--finetune_lr", type=float, default=2e-4)
    ap.add_argument("--finetune_epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pretrain", default="mlm,electra", help="objectives to pretrain ('' for none)")
    ap.add_argument("--finetune", default=",".join(FINETUNE_RUNS), help="fine-tuning runs ('' for none)")
    ap.add_argument("--pretrained_dir", default=None, help="where mlm/ and electra/ are (default: --out)")
    ap.add_argument("--merge", nargs="*", default=[], help="results.json files to join into --out's")
    ap.add_argument("--similarity", nargs="*", default=[], help="encoder folders ('random': random init) whose "
                    "collapse to print: mean cosine of the [CLS] states of 8 target dev texts, and of their tokens")
    args = ap.parse_args()
    if args.similarity:
        return _similarity(args)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    vocab = args.vocab or str(data.parent / "vocab/bert-base-chinese/vocab.txt")
    results = {"args": vars(args), "pretrain": {}, "finetune": {}}
    for other in args.merge:  # runs of several budgets side by side: names carry steps and learning rate
        merged = json.loads(Path(other).read_text(encoding="utf-8"))
        lr = merged["args"]["pretrain_lr"]
        label = {objective: f"{r['steps']} steps, lr {lr:g}" for objective, r in merged["pretrain"].items()}
        results["pretrain"].update({f"{objective}, {label[objective]}": r for objective, r in merged["pretrain"].items()})
        for name, r in merged["finetune"].items():
            objective = OBJECTIVE_OF.get(name)
            results["finetune"][f"{name}, {label[objective]}" if objective in label else name] = r
        results.setdefault("merged_args", []).append(merged["args"])
    objectives = [o for o in args.pretrain.split(",") if o]
    corpus = out / "corpus"
    if objectives:
        subprocess.run([sys.executable, str(Path(__file__).with_name("domain_corpus.py")), "--data", str(data),
                        "--target", args.target, "--out", str(corpus)], check=True)
    for objective in objectives:
        steps = args.mlm_steps if objective == "mlm" else args.electra_steps
        cpu = time.process_time()
        r = pretrain(corpus=[str(corpus)], model_name=MODEL, init_random=True, vocab_file=vocab, objective=objective,
                     whole_word_masking=True, save_dir=str(out / objective), max_seq_length=args.max_seq_length,
                     batch_size=args.batch_size, learning_rate=args.pretrain_lr, max_steps=steps,
                     threads=args.threads, progress=False, overwrite=True)
        meta = json.loads((out / objective / "config.json").read_text(encoding="utf-8"))["zhcls"]["pretrain"]
        # Wall time depends on what else runs on a shared machine; CPU time is the budget actually spent.
        results["pretrain"][objective] = {"steps": r.global_step, "seconds": round(r.seconds, 1),
                                          "cpu_seconds": round(time.process_time() - cpu, 1), **meta}
        _write(out, results)
    common = dict(dataset_dir=str(data / args.target), max_seq_length=args.max_seq_length, batch_size=32,
                  epochs=args.finetune_epochs, warmup_proportion=0.1, threads=args.threads, progress=False)
    pretrained = Path(args.pretrained_dir or out)
    runs = {"random": dict(model_name=MODEL, init_random=True, vocab_file=vocab, learning_rate=args.finetune_lr),
            "mlm": dict(model_name=str(pretrained / "mlm"), learning_rate=args.finetune_lr),
            "electra": dict(model_name=str(pretrained / "electra"), learning_rate=args.finetune_lr),
            "random-lr5e-4": dict(model_name=MODEL, init_random=True, vocab_file=vocab, learning_rate=5e-4)}
    for run in (r for r in args.finetune.split(",") if r):
        name = FINETUNE_RUNS[run]
        cpu = time.process_time()
        r = zhcls.train(save_dir=str(out / f"ft-{run}"), **common, **runs[run])
        results["finetune"][name] = {"best_dev_accuracy": round(100 * r.best_score, 2), "best_epoch": r.best_epoch,
                                     "seconds": round(r.seconds, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
                                     "dev_by_epoch": [round(100 * h["dev_score"], 2) for h in r.history]}
        _write(out, results)
    _write(out, results)
    if results["finetune"]:
        _plot(out, results)
    print(json.dumps(results, ensure_ascii=False, indent=1))


def _similarity(args) -> None:
    """How much an encoder's output still depends on its input: 1.0 means not at all (collapsed)."""
    import torch
    import torch.nn.functional as F

    from zhcls.models.pretrained import load_pretrained

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    lines = (data / args.target / "dev.txt").read_text(encoding="utf-8").splitlines()[:8]
    texts = [line.split("\t")[0] for line in lines]
    vocab = args.vocab or str(data.parent / "vocab/bert-base-chinese/vocab.txt")

    def mean_offdiagonal(x):
        c = F.cosine_similarity(x[:, None], x[None], dim=-1)
        return float((c.sum() - c.diagonal().sum()) / (len(x) * (len(x) - 1)))

    for folder in args.similarity:
        random = folder == "random"
        model, tokenizer = load_pretrained(MODEL if random else folder, ["a", "b"], init_random=random,
                                           vocab_file=vocab if random else None)
        enc = tokenizer.encode(texts)
        batch = {k: torch.from_numpy(v) for k, v in tokenizer.pad(enc.input_ids, enc.token_type_ids).items()}
        with torch.no_grad():
            hidden, _ = model.eval().backbone(**batch)
        tokens = sum(mean_offdiagonal(hidden[i, 1:len(ids) - 1]) for i, ids in enumerate(enc.input_ids)) / len(texts)
        print(f"{folder}: [CLS] cosine between texts {mean_offdiagonal(hidden[:, 0]):.4f}, "
              f"between the tokens of a text {tokens:.4f}")


def _write(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")


def _plot(out: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = 1
    for name, r in results["finetune"].items():
        epochs = max(epochs, len(r["dev_by_epoch"]))
        ax.plot(range(1, len(r["dev_by_epoch"]) + 1), r["dev_by_epoch"], marker="o", label=name)
    ax.set_xticks(range(1, epochs + 1))
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("KUAKE-QIC dev accuracy (%)")
    ax.set_title("4-layer H-256: domain pretraining vs random init")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)


if __name__ == "__main__":
    main()
