"""`zhcls fewshot`: a classifier from K labelled examples per class, SetFit's recipe on the one training loop.

1. Draw K training rows of every class (``sample_seed``: one draw).
2. Contrastive fine-tuning of the encoder on pairs of those rows (SetFit's sampling: every pair, the sample
   with itself included, shuffled; as many negatives as positives, the rarer kind repeated; or
   ``num_iterations`` x rows of each): the cosine of the two mean-pooled embeddings is pulled to 1 for the
   same class and to 0 for different ones (sentence-transformers' CosineSimilarityLoss, a squared error).
3. A logistic regression on the K x C mean-pooled vectors (SetFit's default head, on the model's output
   without normalisation), written into the model's linear classifier over them (``pooling="mean"``).

The output is an ordinary checkpoint folder: evaluate, predict, export and serve read it as any other.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from zhcls import data, options
from zhcls.errors import ZhclsError
from zhcls.evaluation import metrics
from zhcls.fewshot.config import STRATEGIES, FewshotConfig
from zhcls.inference.predictor import check_max_seq_length
from zhcls.models.checkpoint import save_checkpoint
from zhcls.models.pretrained import load_pretrained
from zhcls.training.finetune import dev_predictor_for, padded_batch
from zhcls.training.loop import Job, TrainResult, fit, start

log = logging.getLogger("zhcls")


def dev_subset(examples: list[data.Example], n: int, seed: int = 0) -> list[data.Example]:
    """``n`` rows drawn at random (in file order), or all of them when n is 0 or not smaller."""
    if not n or n >= len(examples):
        return list(examples)
    return [examples[i] for i in sorted(np.random.default_rng(seed).choice(len(examples), n, replace=False))]


def draw_shots(examples: list[data.Example], labels: list[str], shots: int, seed: int, path) -> list[data.Example]:
    """K examples of every class, drawn at random (``seed``), in label order; refuses classes with fewer."""
    if shots < 1:
        raise ZhclsError(f"--shots {shots}: must be at least 1")
    if shots > len(examples):
        raise ZhclsError(f"--shots {shots}: more than the {len(examples)} rows of {path}")
    by_label: dict[str, list[data.Example]] = {label: [] for label in labels}
    for e in examples:
        by_label[e.labels[0]].append(e)
    for label, rows in by_label.items():
        if not rows:
            raise ZhclsError(f"{path}: label {label!r} has no examples (--shots {shots} needs {shots} of each class)")
        if len(rows) < shots:
            raise ZhclsError(f"{path}: label {label!r} has {len(rows)} examples, fewer than --shots {shots}")
    rng = np.random.default_rng(seed)
    return [rows[i] for rows in by_label.values() for i in sorted(rng.choice(len(rows), shots, replace=False))]


def contrastive_pairs(y: np.ndarray, strategy: str = "oversampling", num_iterations: int = 0, max_pairs: int = 0,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SetFit's pairs of rows (a, b, target: 1.0 same class, 0.0 not), positives and negatives interleaved.

    Every pair (i <= j, a row with itself included) in a shuffled order; then as many of each kind as the
    strategy says, cycling through the rarer kind: ``oversampling`` max(#pos, #neg), ``undersampling``
    min, ``unique`` each pair once; ``num_iterations`` N overrides them with N x rows of each kind."""
    if strategy not in STRATEGIES:
        raise ZhclsError(f"--sampling_strategy {strategy}: choose one of {', '.join(STRATEGIES)}")
    a, b = np.triu_indices(len(y))
    order = np.random.default_rng(seed).permutation(len(a))
    a, b = a[order], b[order]
    same = y[a] == y[b]
    pos, neg = np.stack([a[same], b[same]], 1), np.stack([a[~same], b[~same]], 1)
    if max_pairs:  # as SetFit: at most half of the budget of each kind is generated
        pos, neg = pos[:max(1, max_pairs // 2)], neg[:max(1, max_pairs // 2)]
    if num_iterations:
        n_pos = n_neg = num_iterations * len(y)
    elif strategy == "unique":
        n_pos, n_neg = len(pos), len(neg)
    else:
        n = (max if strategy == "oversampling" else min)(len(pos), len(neg))
        n_pos, n_neg = (n, n) if len(neg) else (len(pos), 0)  # one class: positives only
    pos, neg = np.resize(pos, (n_pos, 2)), np.resize(neg, (n_neg, 2))
    pairs, targets = [], []
    for i in range(max(n_pos, n_neg)):  # zip_longest, as SetFit yields them
        for kind, target in ((pos, 1.0), (neg, 0.0)):
            if i < len(kind):
                pairs.append(kind[i])
                targets.append(target)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1], np.asarray(targets, dtype=np.float32)


class SentenceEncoder(torch.nn.Module):
    """The classifier's embedding as a module's forward, so that the loop's DDP wrapper sees the call."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        return self.model.embed(input_ids, token_type_ids, attention_mask)


def linear_head(model) -> torch.nn.Linear:
    """The Linear that maps the pooled vector to logits (ELECTRA's head with classifier_type linear)."""
    return model.classifier if isinstance(model.classifier, torch.nn.Linear) else model.classifier.out_proj


def fit_head(model, x: np.ndarray, y: np.ndarray, c: float, seed: int) -> None:
    """Logistic regression on the embeddings, copied into the model's linear head: the checkpoint's softmax
    equals the regression's predict_proba (two classes: logits 0 and w.x + b)."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(x, y)
    weight, bias = lr.coef_, lr.intercept_
    if weight.shape[0] == 1:  # binary: scikit-learn keeps one row, for class 1
        weight, bias = np.vstack([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
    head = linear_head(model)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(bias, dtype=head.bias.dtype))


def with_linear_head_on_mean(model):
    """The model with ``pooling="mean"`` (the vector the contrastive loss trains) and a single Linear head on it
    (ELECTRA's two-layer head becomes `classifier_type` linear): the same encoder weights, the pooler dropped."""
    config = model.config
    if config.pooling == "mean" and (config.model_type != "electra" or config.classifier_type == "linear"):
        return model
    config.pooling = "mean"
    if config.model_type == "electra":
        config.classifier_type = "linear"
    encoder = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.") and ".pooler." not in k}
    rebuilt = type(model)(config)
    rebuilt.load_state_dict(encoder, strict=False)
    return rebuilt


def fewshot(config: FewshotConfig | None = None, **kwargs) -> TrainResult:
    """Train a few-shot classifier (see the module doc); the checkpoint lands in ``save_dir``."""
    cfg = config or FewshotConfig(**kwargs)
    for flag in ("num_iterations", "max_pairs", "max_dev"):
        if getattr(cfg, flag) < 0:
            raise ZhclsError(f"--{flag} {getattr(cfg, flag)}: must be >= 0")
    if cfg.head_c <= 0:
        raise ZhclsError(f"--head_c {cfg.head_c}: must be > 0")
    ds = data.load_dataset(cfg.dataset_dir, train_file=cfg.train_file, dev_file=cfg.dev_file,
                           label_file=cfg.label_file, task="text")
    train_path = Path(cfg.dataset_dir) / cfg.train_file
    shots = draw_shots(ds.train, ds.labels, cfg.shots, cfg.sample_seed, train_path)
    if len(ds.labels) < 2:
        raise ZhclsError(f"{Path(cfg.dataset_dir) / cfg.label_file}: a classifier needs at least two labels")
    dev = dev_subset(ds.dev, cfg.max_dev)
    y = data.encode_labels(shots, ds.labels, "multi_class")
    a, b, target = contrastive_pairs(y, cfg.sampling_strategy, cfg.num_iterations, cfg.max_pairs, cfg.seed)
    inputs = [cfg.dataset_dir] + ([cfg.model_name] if Path(cfg.model_name).expanduser().exists() else [])
    rt = start(cfg, inputs=inputs)
    model, tokenizer = load_pretrained(cfg.model_name, ds.labels, init_random=cfg.init_random, cache_dir=cfg.cache_dir)
    check_max_seq_length(cfg.max_seq_length, model.config.max_position_embeddings)
    model = with_linear_head_on_mean(model)
    if not cfg.train_embeddings:  # the loop's optimizer takes only parameters that require gradients
        model.backbone.embeddings.word_embeddings.weight.requires_grad_(False)
    prefixes = model.config.extra.get("zhcls", {}).get("prefixes") or {}
    text_prefix = prefixes.get("query", "")
    meta = {"task": "text", "problem_type": "multi_class", "max_seq_length": cfg.max_seq_length,
            "base_model": cfg.model_name, "metric": "accuracy", "prefixes": prefixes, "text_prefix": text_prefix,
            "fewshot": {"shots": cfg.shots, "sample_seed": cfg.sample_seed, "pairs": len(target),
                        "sampling_strategy": cfg.sampling_strategy, "num_iterations": cfg.num_iterations,
                        "train_lines": [e.line for e in shots]}}
    encoded = tokenizer.encode([text_prefix + e.text_a for e in shots], None, cfg.max_seq_length)
    targets = torch.from_numpy(target)
    encoder = SentenceEncoder(model).to(rt.device)

    def loss(module, idx):
        u = module(**padded_batch(tokenizer, encoded, a[idx], rt.device)).float()
        v = module(**padded_batch(tokenizer, encoded, b[idx], rt.device)).float()
        cosine = (u * v).sum(-1)  # both unit length
        return ((cosine - targets[idx].to(rt.device)) ** 2).sum(), {}

    predictor = dev_predictor_for(model, tokenizer, meta, rt, batch_size=cfg.batch_size,
                                  max_seq_length=cfg.max_seq_length)
    dev_y = data.encode_labels(dev, ds.labels, "multi_class")

    def evaluate() -> float:
        """Fit the head on the K-shot embeddings of the encoder as it is now; dev accuracy of the whole model."""
        fit_head(model, predictor.sentence_features([e.text_a for e in shots]), y, cfg.head_c, cfg.seed)
        if not dev:
            return 0.0
        probs = predictor.predict_proba([e.text_a for e in dev])
        return metrics.classification_report(ds.labels, dev_y, probs)["accuracy"]

    def save_best(record: dict) -> None:
        save_checkpoint(model, tokenizer, cfg.save_dir, {**meta, "best_dev_score": record["score"],
                                                         "best_epoch": record["epoch"], "global_step": record["step"]},
                        files=options.checkpoint_run_file(cfg))  # `zhcls fewshot --config CKPT` reruns it

    log.info("%s: %d shots x %d labels, %d contrastive pairs (%s)", cfg.model_name, cfg.shots, len(ds.labels),
             len(target), f"num_iterations {cfg.num_iterations}" if cfg.num_iterations else cfg.sampling_strategy)
    lengths = [max(len(encoded.input_ids[i]), len(encoded.input_ids[j])) for i, j in zip(a, b)]
    job = Job(encoder, lengths, loss, evaluate, save_best, metric="accuracy", name=f"{cfg.model_name} (few-shot)")
    return fit(job, cfg, rt)
