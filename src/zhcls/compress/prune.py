"""`zhcls prune`: PaddleNLP prune.py's width pruning (DynaBERT), as ordinary checkpoints.

Steps: score every head and FFN neuron of the fine-tuned model on the training set (`importance`),
cut a copy to each width (`width`), and train each width by distillation from the unpruned model
(soft cross-entropy on logits plus MSE on the embedding output and every layer's hidden states) on
the one training loop, keeping the best dev checkpoint per width in ``OUTPUT_DIR/width_mult_W/``.
Then ``prune_report.json``, a table (width, parameters, dev accuracy, change vs unpruned,
real-length ONNX latency and speed-up from `zhcls bench`) and an accuracy-latency PNG.

An interrupted run continues with ``--resume``: the importance scores are stored, finished widths are
kept, and the width in progress resumes from its training state.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from zhcls import data
from zhcls.compress.config import PruneConfig
from zhcls.compress.distill import check_classifier, hidden_mse, load_teacher, soft_cross_entropy
from zhcls.compress.importance import importance_scores
from zhcls.compress.width import parse_width, prune_width, width_dir_name
from zhcls.data.batching import inference_batches
from zhcls.errors import ZhclsError
from zhcls.io import atomic_dir, atomic_open, atomic_path, check_writable
from zhcls.models.checkpoint import save_checkpoint
from zhcls.training.finetune import dev_scorer, padded_batch
from zhcls.training.loop import STATE_DIR, Job, fit, start

log = logging.getLogger("zhcls")

REPORT = "prune_report.json"
SCORES = "importance.safetensors"  # kept for --resume: a resumed run prunes exactly the same heads
PLOT = "prune_accuracy_latency.png"


def prune(config: PruneConfig | None = None, **kwargs) -> dict:
    """Prune the fine-tuned classifier in ``params_dir`` to every width; returns the report."""
    cfg = config or PruneConfig(**kwargs)
    cfg.check()
    ds = data.load_dataset(cfg.dataset_dir, train_file=cfg.train_file, dev_file=cfg.dev_file, label_file=cfg.label_file)
    if ds.problem_type != "multi_class":
        raise ZhclsError("zhcls prune supports multi_class datasets")
    teacher_config = check_classifier(cfg.params_dir, "--params_dir", ds.labels)
    widths = list(dict.fromkeys(parse_width(w, teacher_config["num_attention_heads"]) for w in cfg.width_mult_list))
    if not widths:
        raise ZhclsError("--width_mult_list: no width given")
    out = Path(cfg.output_dir)
    if cfg.resume and not (out / SCORES).is_file():
        raise ZhclsError(f"--resume: {out} holds no interrupted prune (no {SCORES}); run without --resume")
    # The loop's guard checks --output_dir (each width then trains into its own subfolder).
    rt = start(dataclasses.replace(cfg, save_dir=str(out)), inputs=[cfg.params_dir, cfg.dataset_dir],
               flag="--output_dir")
    if not cfg.resume:
        check_writable(out, flag="--output_dir")
        with atomic_dir(out):  # a fresh, empty output folder (with zhcls's marker), replacing an old one whole
            pass
    teacher, tokenizer, meta, order = load_teacher(cfg.params_dir, "--params_dir", ds.labels, rt.device)
    if order.tolist() != list(range(len(ds.labels))):
        raise ZhclsError(f"--params_dir {cfg.params_dir}: label order differs from {cfg.label_file}; "
                         "use the label.txt the model was trained with")
    train_x = tokenizer.encode([e.text_a for e in ds.train], [e.text_b for e in ds.train] if ds.task == "pair" else None,
                               cfg.max_seq_length)
    train_y = torch.from_numpy(data.encode_labels(ds.train, ds.labels, ds.problem_type))
    lengths = [len(ids) for ids in train_x.input_ids]

    if (out / SCORES).is_file():
        stored = load_file(out / SCORES)
        n = teacher.config.num_hidden_layers
        heads, neurons = [stored[f"heads.{i}"] for i in range(n)], [stored[f"neurons.{i}"] for i in range(n)]
    else:
        batches = ((padded_batch(tokenizer, train_x, idx, rt.device), train_y[idx].to(rt.device))
                   for idx in inference_batches(lengths, cfg.eval_batch_size))
        teacher.requires_grad_(True)  # the scores need the weights' gradients
        heads, neurons = importance_scores(teacher, batches, progress=cfg.progress)
        teacher.requires_grad_(False)
        with atomic_path(out / SCORES) as tmp:
            save_file({**{f"heads.{i}": h for i, h in enumerate(heads)},
                       **{f"neurons.{i}": v for i, v in enumerate(neurons)}}, tmp)
    teacher_score = dev_scorer(teacher, tokenizer, meta, ds, rt, batch_size=cfg.eval_batch_size,
                               max_seq_length=cfg.max_seq_length)()
    log.info("unpruned model: dev accuracy %.4f, %d parameters", teacher_score, teacher.num_parameters())

    rows = [{"name": "unpruned", "width": 1.0, "width_mult": "1", "path": str(cfg.params_dir), "parameters": teacher.num_parameters(),
             "dev_accuracy": teacher_score, "change_points": 0.0}]
    for width in widths:
        rows.append(_train_width(cfg, width, teacher, tokenizer, meta, ds, rt, train_x, train_y, lengths, heads,
                                 neurons, teacher_score))
    report = {"params_dir": str(cfg.params_dir), "dataset_dir": str(cfg.dataset_dir),
              "settings": cfg.fingerprint(), "widths": rows}
    if cfg.bench:
        report["bench"] = _bench(cfg, rows)
    with atomic_open(out / REPORT) as f:
        json.dump(report, f, ensure_ascii=False, indent=1)
    return report


def _train_width(cfg: PruneConfig, width, teacher, tokenizer, meta, ds, rt, train_x, train_y, lengths, heads, neurons,
                 teacher_score: float) -> dict:
    folder = Path(cfg.output_dir) / width_dir_name(width)
    torch.manual_seed(cfg.seed)  # each width starts from the same RNG state, whatever ran before it
    student = prune_width(teacher, width, heads, neurons).requires_grad_(True)

    def loss(module, idx):
        inputs = padded_batch(tokenizer, train_x, idx, rt.device)
        with torch.no_grad():
            t_logits, t_states = teacher(**inputs, output_hidden_states=True)
        logits, states = module(**inputs, output_hidden_states=True)
        per_example = (soft_cross_entropy(logits.float(), t_logits.float(), cfg.temperature)
                       + cfg.hidden_weight * hidden_mse(states, t_states, inputs["attention_mask"]))
        return per_example.sum(), {"acc": (logits.argmax(-1) == train_y[idx].to(rt.device)).sum()}

    width_meta = {**meta, "pruned_from": str(cfg.params_dir), "width_mult": float(width)}
    evaluate = dev_scorer(student, tokenizer, width_meta, ds, rt, batch_size=cfg.eval_batch_size,
                          max_seq_length=cfg.max_seq_length)

    def save_best(record: dict) -> None:
        save_checkpoint(student, tokenizer, folder, {**width_meta, "best_dev_score": record["score"],
                                                     "best_epoch": record["epoch"], "global_step": record["step"]})

    resume = cfg.resume and (folder / STATE_DIR / "state.json").is_file()
    result = fit(Job(student, lengths, loss, evaluate, save_best, name=f"width {width}"),
                 dataclasses.replace(cfg, save_dir=str(folder), resume=resume), rt)
    return {"name": folder.name, "width": float(width), "width_mult": str(width), "path": str(folder),
            "parameters": student.num_parameters(), "layer_num_heads": student.config.layer_num_heads,
            "layer_intermediate_sizes": student.config.layer_intermediate_sizes,
            "dev_accuracy": result.best_score, "change_points": 100 * (result.best_score - teacher_score),
            "best_epoch": result.best_epoch}


def _bench(cfg: PruneConfig, rows: list[dict]) -> list[dict]:
    """Real-length ONNX latency of every model in one run (`zhcls bench`); speed-up vs the unpruned one."""
    from zhcls.deploy.bench import bench, plot

    measured = []
    for row in rows:
        measured += bench(row["path"], cfg.dataset_dir, backends=("onnx",), batch_size=cfg.eval_batch_size,
                          max_seq_length=cfg.max_seq_length, threads=cfg.threads or None, name=row["name"],
                          dev_file=cfg.dev_file, label_file=cfg.label_file, progress=cfg.progress)
    for row, m in zip(rows, measured):
        row["real_ms"], row["onnx_dev_accuracy"] = m["real_ms"], m["score"]
        row["speedup"] = measured[0]["real_ms"] / m["real_ms"]
    plot(measured, Path(cfg.output_dir) / PLOT)
    return measured


COLUMNS = (("width", "width_mult", "{}"), ("params", "parameters", "{:,}"), ("dev acc", "dev_accuracy", "{:.2%}"),
           ("change (points)", "change_points", "{:+.2f}"), ("real ms", "real_ms", "{:.3f}"),
           ("speed-up", "speedup", "{:.2f}x"))


def format_table(report: dict) -> str:
    rows = report["widths"]
    cells = [[h for h, _, _ in COLUMNS]] + [["-" if r.get(k) is None else f.format(r[k]) for _, k, f in COLUMNS]
                                            for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells]
    if report.get("bench"):
        b = report["bench"][0]
        lines.append(f"real ms: ONNX Runtime, ms per dev text, length-sorted batches of {b['batch_size']} "
                     f"({b['mean_tokens']:.1f} tokens on average), {b['threads']} threads")
    return "\n".join(lines)
