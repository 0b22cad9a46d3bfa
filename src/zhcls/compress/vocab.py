"""Vocabulary pruning: keep the vocabulary entries a domain uses, shrinking the vocabulary (vocab.txt, or a
unigram tokenizer.json) and the word embedding matrix together.

Kept: every token id that the model's own tokenizer produces on the dataset's texts (train, dev,
test, data.txt when present) and on any extra corpus, plus the special tokens, in their original
order. WordPiece takes the longest vocabulary match at each step; every match it made is kept, so on
those texts the smaller vocabulary gives the same tokens, and so the same logits. A unigram tokenizer
takes the best-scoring segmentation: removing pieces it did not use leaves that segmentation the best
(ties aside), and the lowest-scoring piece is kept so that an unknown character costs what it did.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from zhcls import data
from zhcls.compress.distill import check_classifier
from zhcls.errors import ZhclsError
from zhcls.evaluation.report_files import write_json
from zhcls.inference.torch_predictor import TorchPredictor
from zhcls.io import check_output_dir, check_writable
from zhcls.models.checkpoint import load_checkpoint, save_checkpoint
from zhcls.models.pretrained import shrink, used_ids

log = logging.getLogger("zhcls")

REPORT = "vocab_report.json"


def domain_texts(dataset_dir, ds: data.DatasetFolder, corpus_files=()) -> list[str]:
    """Every text of the dataset folder (train, dev, test, data.txt) and every field of the corpus files."""
    examples = list(ds.train) + list(ds.dev) + list(ds.test or [])
    if (Path(dataset_dir) / "data.txt").is_file():
        examples += data.read_texts(Path(dataset_dir) / "data.txt", ds.task)
    texts = [t for e in examples for t in (e.text_a, e.text_b) if t]
    for path in corpus_files:
        try:
            with open(path, encoding="utf-8") as f:
                texts += [field for line in f for field in line.rstrip("\n").split("\t") if field]
        except (OSError, UnicodeDecodeError) as e:
            raise ZhclsError(f"--corpus_files {path}: cannot read it as UTF-8 text ({e})") from None
    return texts


def prune_vocab(params_dir, dataset_dir, output_dir, *, corpus_files=(), overwrite: bool = False,
                measure: bool = True, threads: int | None = None, progress: bool = True) -> dict:
    """Write a copy of the classifier in ``params_dir`` with only the vocabulary its domain uses; returns the report."""
    config = check_classifier(params_dir, "--params_dir")
    ds = data.load_dataset(dataset_dir, task=config["zhcls"].get("task", "auto"), require=("dev",),
                           problem_type=config["zhcls"].get("problem_type", "multi_class"))
    check_classifier(params_dir, "--params_dir", ds.labels)
    texts = domain_texts(dataset_dir, ds, corpus_files)
    check_output_dir(output_dir, flag="--output_dir", overwrite=overwrite,
                     inputs=[params_dir, dataset_dir, *corpus_files])
    check_writable(output_dir, flag="--output_dir")
    if threads:
        torch.set_num_threads(threads)
    model, tokenizer, meta = load_checkpoint(params_dir)
    dev = [e.text_a for e in ds.dev], [e.text_b for e in ds.dev] if ds.task == "pair" else None
    before = TorchPredictor(model, tokenizer, meta, device="cpu").logits(*dev, progress=progress)
    keep = used_ids(tokenizer, texts)
    n_before, hidden = tokenizer.vocab_size, model.config.embedding_size
    model, small = shrink(model, tokenizer, keep)
    after = TorchPredictor(model, small, meta, device="cpu").logits(*dev, progress=progress)
    save_checkpoint(model, small, output_dir, {**meta, "vocab_pruned_from": str(params_dir),
                                               "vocab_before": n_before})
    report = {"params_dir": str(params_dir), "output_dir": str(output_dir), "texts": len(texts),
              "vocab_before": n_before, "vocab_after": len(keep),
              "embedding_parameters_before": n_before * hidden, "embedding_parameters_after": len(keep) * hidden,
              "parameters_after": model.num_parameters(),
              "file_mb_before": (Path(params_dir) / "model.safetensors").stat().st_size / 2**20,
              "file_mb_after": (Path(output_dir) / "model.safetensors").stat().st_size / 2**20,
              "dev_max_abs_logit_diff": float(np.abs(before - after).max())}
    if measure:  # peak RSS of loading and serving each model, each in a fresh process (`zhcls bench`)
        from zhcls.deploy.bench import bench

        for key, path in (("before", params_dir), ("after", output_dir)):
            row = bench(path, dataset_dir, backends=("torch",), repeats=1, threads=threads, progress=progress,
                        max_seq_length=meta.get("max_seq_length", 128))[0]
            report[f"peak_rss_mb_{key}"], report[f"dev_accuracy_{key}"] = row["peak_rss_mb"], row["score"]
    write_json(Path(output_dir) / REPORT, report)
    return report

