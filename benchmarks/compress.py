"""Issue 7's experiment on KUAKE-QIC (real data), one command per step, all on one CPU thread:

  1. teacher   ERNIE 3.0 Mini shape (6 x 384, 12 heads) trained from random init (`zhcls train`)
  2. prune     the teacher cut to 3/4, 2/3, 1/2 and distilled (`zhcls prune`); every width and the
               teacher benched in the same run (real-length ONNX, `zhcls.deploy.bench`): speed-up = the
               teacher's ms per text / the width's
  3. student   a 2 x 256 student (<= 1/4 of the teacher's non-embedding parameters), same seed and
               epochs, trained alone (`zhcls train`) and distilled from the teacher (`zhcls distill`)
  4. vocab     the teacher's vocabulary cut to the tokens KUAKE-QIC uses (`zhcls prune --vocab`)

A step whose output already exists is not run again (an interrupted prune is resumed), so the
script can be stopped and restarted. Results (and the targets met or not) go to WORK/results.json.

    nice -n 5 python benchmarks/compress.py --work /tmp/compress
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZHCLS_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data/kuake_qic"
ERNIE_VOCAB = SHARED / "vocab/ernie-3.0-zh/vocab.txt"
BERT_VOCAB = SHARED / "vocab/bert-base-chinese/vocab.txt"
STUDENT = "uer/chinese_roberta_L-2_H-256"
COMMON = ["--dataset_dir", DATA, "--max_seq_length", "64", "--threads", "1"]
MAX_DROP_POINTS, MIN_SPEEDUP_HALF, MAX_STUDENT_SHARE = 1.0, 1.5, 0.25


def zhcls(*args) -> None:
    cmd = [sys.executable, "-m", "zhcls", *map(str, args)]
    print("$ zhcls " + " ".join(map(str, args)), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})


def best_dev(folder: Path) -> float:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))["zhcls"]["best_dev_score"]


def non_embedding_parameters(folder: Path) -> int:
    from zhcls.models.modeling import EncoderConfig, count_parameters

    config = EncoderConfig.from_dict(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size
                  + (config.task_type_vocab_size if config.use_task_id else 0) + 2) * config.embedding_size
    return count_parameters(config) - embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="compress_results")
    parser.add_argument("--teacher_epochs", type=int, default=8)
    parser.add_argument("--prune_epochs", type=int, default=1)
    parser.add_argument("--prune_lr", type=float, default=2e-4)
    parser.add_argument("--student_epochs", type=int, default=8)
    args = parser.parse_args()
    work = Path(args.work)
    teacher, pruned, alone, distilled, small = (work / n for n in ("teacher", "prune", "student_alone",
                                                                   "student_distilled", "teacher_vocab"))
    if not (teacher / "config.json").exists():
        zhcls("train", "--model", "ernie-3.0-mini-zh", "--init_random", "--vocab_file", ERNIE_VOCAB, "--save_dir", teacher,
              "--epochs", args.teacher_epochs, "--batch_size", 32, *COMMON)
    if not (pruned / "prune_report.json").exists():
        resume = ["--resume"] if (pruned / "importance.safetensors").exists() else []
        zhcls("prune", "--params_dir", teacher, "--output_dir", pruned, "--num_train_epochs", args.prune_epochs,
              "--learning_rate", args.prune_lr, *resume, *COMMON)
    if not (alone / "config.json").exists():
        zhcls("train", "--model", STUDENT, "--init_random", "--vocab_file", BERT_VOCAB, "--save_dir", alone,
              "--epochs", args.student_epochs, "--seed", 3, *COMMON)
    if not (distilled / "config.json").exists():
        zhcls("distill", "--teacher", teacher, "--student", STUDENT, "--init_random", "--vocab_file", BERT_VOCAB,
              "--save_dir", distilled, "--epochs", args.student_epochs, "--seed", 3, *COMMON)
    if not (small / "vocab_report.json").exists():
        zhcls("prune", "--vocab", "--params_dir", teacher, "--dataset_dir", DATA, "--output_dir", small, "--threads", 1)

    prune_report = json.loads((pruned / "prune_report.json").read_text(encoding="utf-8"))
    widths = prune_report["widths"]
    half = next(r for r in widths if r["width_mult"] == "1/2")
    share = non_embedding_parameters(alone) / non_embedding_parameters(teacher)
    results = {
        "teacher_dev_accuracy": best_dev(teacher),
        "prune": widths,
        "student": {"model": STUDENT, "non_embedding_share_of_teacher": share,
                    "alone_dev_accuracy": best_dev(alone), "distilled_dev_accuracy": best_dev(distilled)},
        "vocab": json.loads((small / "vocab_report.json").read_text(encoding="utf-8")),
    }
    results["targets"] = {
        "every_width_within_1_point": all(r["change_points"] >= -MAX_DROP_POINTS for r in widths),
        "half_width_1.5x_faster": half.get("speedup", 0) >= MIN_SPEEDUP_HALF,
        "student_quarter_size": share <= MAX_STUDENT_SHARE,
        "distilled_beats_alone": results["student"]["distilled_dev_accuracy"] > results["student"]["alone_dev_accuracy"],
        "vocab_logits_identical": results["vocab"]["dev_max_abs_logit_diff"] <= 1e-5,
    }
    (work / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    from zhcls.compress.prune import format_table

    print(format_table(prune_report))
    s = results["student"]
    print(f"student {STUDENT} ({share:.1%} of the teacher's non-embedding parameters): alone "
          f"{s['alone_dev_accuracy']:.2%}, distilled {s['distilled_dev_accuracy']:.2%}")
    v = results["vocab"]
    print(f"vocabulary {v['vocab_before']} -> {v['vocab_after']}; file {v['file_mb_before']:.1f} -> "
          f"{v['file_mb_after']:.1f} MB; peak RSS {v.get('peak_rss_mb_before', 0):.0f} -> {v.get('peak_rss_mb_after', 0):.0f} MB; "
          f"dev logits max diff {v['dev_max_abs_logit_diff']:.1e}")
    print("targets:", json.dumps(results["targets"]))


if __name__ == "__main__":
    main()
