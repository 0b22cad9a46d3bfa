"""Knowledge distillation: the losses, the teacher, and `zhcls distill` (task distillation into a
smaller student of any architecture).

The student learns the teacher's temperature-softened class distribution (Hinton et al.) mixed with
the gold labels by ``alpha``; optionally it also matches the teacher's hidden states (embedding
output and layers, mapped uniformly as in TinyBERT) through a learned projection when the widths
differ. The teacher's logits on the training texts are computed once, before training. Texts of
``--unlabeled_file`` join the training set with the teacher's prediction as their label.
Teacher and student may tokenise differently (each uses its own vocabulary), except for
hidden-state matching, which pairs token positions and so needs the same vocabulary.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zhcls import data, options
from zhcls.compress.config import DistillConfig
from zhcls.errors import ZhclsError
from zhcls.inference.torch_predictor import TorchPredictor
from zhcls.io import check_writable
from zhcls.models.checkpoint import load_checkpoint, read_json, save_checkpoint
from zhcls.models.pretrained import load_pretrained
from zhcls.training.finetune import dev_scorer, padded_batch
from zhcls.training.loop import Job, TrainResult, fit, start

log = logging.getLogger("zhcls")


# -- losses: each returns one value per example (the loop sums them) -------------------------------

def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the student's softened distribution against the teacher's, per example."""
    target = F.softmax(teacher_logits / temperature, dim=-1)
    return -(target * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1)


def hidden_mse(student_states, teacher_states, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real (unpadded) tokens and the hidden units, summed over the
    paired states, per example."""
    mask = attention_mask.to(student_states[0].dtype)[..., None]
    tokens = mask.sum(dim=(1, 2))
    total = 0
    for s, t in zip(student_states, teacher_states):
        total = total + (((s.float() - t.float()) ** 2) * mask).sum(dim=(1, 2)) / (tokens * s.shape[-1])
    return total


# -- the teacher --------------------------------------------------------------------------------------

def check_classifier(path, flag: str, labels: list[str] | None = None) -> dict:
    """The config of a fine-tuned zhcls classifier folder, read without loading weights; refuses
    anything else, and a label set other than ``labels``."""
    folder = Path(path)
    if not folder.is_dir():
        raise ZhclsError(f"{flag} {path}: no such checkpoint folder")
    if not (folder / "config.json").is_file():
        raise ZhclsError(f"{flag} {path}: not a checkpoint folder (no config.json); expected one from `zhcls train`")
    config = read_json(folder / "config.json")
    if "zhcls" not in config or "id2label" not in config:
        raise ZhclsError(f"{flag} {path}: not a fine-tuned zhcls classifier (config.json has no zhcls block); "
                         "fine-tune it first with `zhcls train`")
    own = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    if labels is not None and sorted(own) != sorted(labels):
        extra, missing = sorted(set(own) - set(labels)), sorted(set(labels) - set(own))
        raise ZhclsError(f"{flag} {path}: its label set differs from the dataset's "
                         f"(only in the model: {', '.join(extra[:5]) or '-'}; only in label.txt: {', '.join(missing[:5]) or '-'})")
    return config


def load_teacher(path, flag: str, labels: list[str], device) -> tuple:
    """(model in eval mode on ``device``, tokenizer, meta, column order that puts its logits in ``labels`` order)."""
    check_classifier(path, flag, labels)
    model, tokenizer, meta = load_checkpoint(path)
    order = torch.tensor([model.config.labels.index(label) for label in labels])
    return model.to(device).eval().requires_grad_(False), tokenizer, meta, order


# -- zhcls distill ------------------------------------------------------------------------------------

class StudentWithProjection(nn.Module):
    """What the loop trains: the student and, for hidden-state matching across widths, the projection
    from its hidden size to the teacher's (kept in the training state, dropped from the checkpoint)."""

    def __init__(self, student: nn.Module, teacher_hidden: int | None):
        super().__init__()
        self.student = student
        hidden = student.config.hidden_size
        self.project = nn.Linear(hidden, teacher_hidden) if teacher_hidden and teacher_hidden != hidden else nn.Identity()

    def forward(self, **inputs):
        return self.student(**inputs)


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher state for each student state: embeddings to embeddings, student layer i to teacher
    layer round(i x teacher / student) (TinyBERT's uniform mapping)."""
    return [round(i * teacher_layers / student_layers) for i in range(student_layers + 1)]


def distill(config: DistillConfig | None = None, **kwargs) -> TrainResult:
    """Distil the teacher checkpoint into the student; the best dev checkpoint lands in ``save_dir``."""
    cfg = config or DistillConfig(**kwargs)
    cfg.check()
    ds = data.load_dataset(cfg.dataset_dir, train_file=cfg.train_file, dev_file=cfg.dev_file, label_file=cfg.label_file)
    check_classifier(cfg.teacher, "--teacher", ds.labels)
    if Path(cfg.student).is_dir() and (Path(cfg.student) / "config.json").is_file():
        student_config = read_json(Path(cfg.student) / "config.json")
        if "zhcls" in student_config:  # a fine-tuned classifier as the student: it must know these labels
            check_classifier(cfg.student, "--student", ds.labels)
    # Relative to --dataset_dir, like the other data files (an absolute path stays as it is).
    unlabeled = data.read_texts(Path(cfg.dataset_dir) / cfg.unlabeled_file, ds.task) if cfg.unlabeled_file else []
    rt = start(cfg, inputs=[p for p in (cfg.teacher, cfg.dataset_dir, cfg.student, cfg.vocab_file,
                                        cfg.unlabeled_file and Path(cfg.dataset_dir) / cfg.unlabeled_file) if p])
    if not cfg.resume:
        check_writable(cfg.save_dir, flag="--save_dir")
    teacher, teacher_tokenizer, teacher_meta, order = load_teacher(cfg.teacher, "--teacher", ds.labels, rt.device)
    student, tokenizer = load_pretrained(cfg.student, ds.labels, init_random=cfg.init_random,
                                         vocab_file=cfg.vocab_file, cache_dir=cfg.cache_dir)
    if cfg.hidden_weight and tokenizer.vocab != teacher_tokenizer.vocab:
        raise ZhclsError("--hidden_weight: hidden-state matching pairs token positions, so teacher and student "
                         "must share vocab.txt; pass --hidden_weight 0 for logit distillation only")

    examples = list(ds.train) + list(unlabeled)
    texts = data.predictor_inputs(examples)
    # The teacher's logits on every training text, once (in the dataset's label order).
    teacher_predictor = TorchPredictor(teacher, teacher_tokenizer, teacher_meta, device=str(rt.device),
                                       batch_size=max(64, cfg.batch_size), max_seq_length=cfg.max_seq_length)
    texts_b = [e.text_b for e in examples] if ds.task == "pair" else None
    teacher_logits = torch.from_numpy(teacher_predictor.logits([e.text_a for e in examples], texts_b,
                                                               progress=cfg.progress))[:, order]
    gold = data.encode_labels(ds.train, ds.labels, "multi_class")
    # Unlabeled texts take the teacher's prediction as their gold label.
    labels = torch.from_numpy(np.concatenate([gold, teacher_logits[len(ds.train):].argmax(-1).numpy()]).astype(np.int64))
    train_x = tokenizer.encode([e.text_a for e in examples], texts_b, cfg.max_seq_length)
    log.info("distilling %s into %s on %d texts (%d unlabeled)", cfg.teacher, cfg.student, len(texts), len(unlabeled))

    pairs = layer_map(student.config.num_hidden_layers, teacher.config.num_hidden_layers)
    module = StudentWithProjection(student, teacher.config.hidden_size if cfg.hidden_weight else None)

    def loss(wrapped, idx):
        inputs = padded_batch(tokenizer, train_x, idx, rt.device)
        t_logits, target = teacher_logits[idx].to(rt.device), labels[idx].to(rt.device)
        if cfg.hidden_weight:
            logits, states = wrapped(**inputs, output_hidden_states=True)
        else:
            logits = wrapped(**inputs)
        logits = logits.float()
        per_example = (cfg.alpha * cfg.temperature ** 2 * soft_cross_entropy(logits, t_logits, cfg.temperature)
                       + (1 - cfg.alpha) * F.cross_entropy(logits, target, reduction="none"))
        if cfg.hidden_weight:
            with torch.no_grad():
                _, t_states = teacher(**inputs, output_hidden_states=True)
            project = module.project
            per_example = per_example + cfg.hidden_weight * hidden_mse([project(s) for s in states],
                                                                       [t_states[j] for j in pairs],
                                                                       inputs["attention_mask"])
        return per_example.sum(), {"acc": (logits.argmax(-1) == target).sum()}

    meta = {"task": ds.task, "problem_type": "multi_class", "max_seq_length": cfg.max_seq_length,
            "base_model": cfg.student, "init_random": cfg.init_random, "distilled_from": str(cfg.teacher),
            "temperature": cfg.temperature, "alpha": cfg.alpha}
    evaluate = dev_scorer(student, tokenizer, meta, ds, rt, batch_size=cfg.batch_size, max_seq_length=cfg.max_seq_length)

    def save_best(record: dict) -> None:
        save_checkpoint(student, tokenizer, cfg.save_dir, {**meta, "best_dev_score": record["score"],
                                                           "best_epoch": record["epoch"], "global_step": record["step"]},
                        files=options.checkpoint_run_file(cfg))

    job = Job(module, [len(ids) for ids in train_x.input_ids], loss, evaluate, save_best, name=f"student {cfg.student}")
    return fit(job, cfg, rt)
