"""`zhcls pretrain`: continue pretraining an encoder (or pretrain one from scratch) on a text corpus,
with masked-LM (optionally whole-word masking) or ELECTRA's replaced-token detection, as a `Job` on
the one training loop. The output is a checkpoint folder that `zhcls train --model DIR` fine-tunes
and transformers loads as ``*ForMaskedLM`` / ``ElectraForPreTraining``; the MLM head (and the
ELECTRA generator, in ``generator/``) stays beside the encoder so pretraining can continue from it.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zhcls import options
from zhcls.data.tokenizer import MASK, Tokenizer
from zhcls.errors import ZhclsError
from zhcls.io import atomic_dir
from zhcls.models.checkpoint import normalise_names, read_source, write_model_folder
from zhcls.models.modeling import EncoderConfig
from zhcls.models.pretrained import load_pretrained
from zhcls.pretrain.config import PretrainConfig
from zhcls.pretrain.corpus import Corpus, jieba_word_starts, pack, read_lines, scan, shuffled
from zhcls.pretrain.heads import MLM_ARCHITECTURES, Electra, MaskedLM
from zhcls.pretrain.masking import mask_batch
from zhcls.training.finetune import temporary_vocab
from zhcls.training.loop import STATE_DIR, Job, TrainResult, fit, start

log = logging.getLogger("zhcls")

SHUFFLE_BUFFER = 10_000  # packed sequences held for shuffling (bounded memory, whatever the corpus size)
EVAL_SEQUENCES = 128  # the first sequences of the corpus, with fixed masks: the score after each epoch
GENERATOR_DIR = "generator"


@dataclass
class Batch:
    input_ids: torch.Tensor  # corrupted
    attention_mask: torch.Tensor
    labels: torch.Tensor  # original id where predicted, else IGNORE

    def __len__(self) -> int:
        return len(self.input_ids)


class Batches:
    """Packed, shuffled, masked batches of a streamed corpus; the same (seed, epoch) gives the same batches."""

    def __init__(self, corpus: Corpus, tokenizer: Tokenizer, cfg: PretrainConfig):
        self.corpus, self.tokenizer, self.cfg = corpus, tokenizer, cfg
        self.word_starts = jieba_word_starts() if cfg.whole_word_masking else None
        self.mask_id = tokenizer.vocab.index(MASK)

    def sequences(self) -> Iterator[tuple[list[int], list[bool]]]:
        return pack(self.tokenizer, read_lines(self.corpus), self.cfg.max_seq_length, self.word_starts)

    def count(self) -> int:
        """Packed sequences in one pass (tokenised once, nothing kept; word boundaries do not change packing)."""
        return sum(1 for _ in pack(self.tokenizer, read_lines(self.corpus), self.cfg.max_seq_length))

    def batch(self, sequences: list, rng: np.random.Generator) -> Batch:
        ids = [s for s, _ in sequences]
        padded = self.tokenizer.pad(ids, [[0] * len(s) for s in ids])
        starts = self.tokenizer.pad([[int(f) for f in flags] for _, flags in sequences], [[0] * len(s) for s in ids])
        input_ids = padded["input_ids"]
        specials = [self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.tokenizer.pad_token_id]
        maskable = ~np.isin(input_ids, specials)
        inputs, labels = mask_batch(input_ids, starts["input_ids"].astype(bool), maskable, self.cfg.mask_prob,
                                    self.mask_id, self.tokenizer.vocab_size, rng)
        return Batch(torch.from_numpy(inputs), torch.from_numpy(padded["attention_mask"]), torch.from_numpy(labels))

    def __call__(self, epoch: int) -> Iterator[Batch]:
        rng = np.random.default_rng([self.cfg.seed, epoch])
        stream = shuffled(self.sequences(), SHUFFLE_BUFFER, rng)
        while chunk := [s for _, s in zip(range(self.cfg.batch_size), stream)]:
            yield self.batch(chunk, rng)

    def eval_batch(self) -> Batch:
        first = [s for _, s in zip(range(EVAL_SEQUENCES), self.sequences())]
        return self.batch(first, np.random.default_rng([self.cfg.seed, 2**31 - 1]))


def _head_state(folder: Path, model_type: str) -> dict:
    """The tensors of a local folder (its pretraining heads among them), or none for a zoo name."""
    if not (folder.is_dir() and (folder / "config.json").exists()):
        return {}
    return normalise_names(read_source(folder)[1], model_type)


def build(cfg: PretrainConfig, vocab_file: str | None) -> tuple[torch.nn.Module, Tokenizer]:
    """The pretraining model and tokenizer: --model's encoder with its heads where the folder has them."""
    encoder, tokenizer = load_pretrained(cfg.model_name, None, init_random=cfg.init_random, vocab_file=vocab_file,
                                         cache_dir=cfg.cache_dir)
    if MASK not in tokenizer.vocab:
        raise ZhclsError(f"{vocab_file or cfg.model_name}: the vocabulary has no {MASK} token to mask with")
    config, backbone = encoder.config, encoder.backbone
    folder = Path(cfg.model_name).expanduser()
    state = {} if cfg.init_random else _head_state(folder, config.model_type)
    generator = None
    if cfg.objective == "mlm":
        model = MaskedLM(config, backbone)
    else:
        if not cfg.init_random and (folder / GENERATOR_DIR / "config.json").exists():
            gen_config, gen_state = read_source(folder / GENERATOR_DIR)
            generator = MaskedLM(EncoderConfig.from_dict(gen_config))
            generator.load_state_dict(normalise_names(gen_state, "electra"), strict=False)
        model = Electra(config, backbone, generator)
    heads = {k: v for k, v in state.items() if not k.startswith((f"{config.model_type}.", "classifier."))}
    own = model.state_dict()
    usable = {k: v for k, v in heads.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    loaded = {k.split(".")[0] for k in usable} | ({"generator"} if cfg.objective == "electra" and generator else set())
    fresh = sorted({k.split(".")[0] for k in own if not k.startswith(f"{config.model_type}.")} - loaded)
    if fresh and not cfg.init_random:
        log.info("pretraining heads initialised fresh: %s", ", ".join(fresh))
    return model, tokenizer


def _folder_config(config: EncoderConfig, architecture: str, meta: dict) -> dict:
    d = config.to_dict()
    d.pop("id2label")
    d.pop("label2id")
    d["architectures"] = [architecture]
    d["zhcls"] = {**d.get("zhcls", {}), **meta}
    return d


def save_pretrained(model: torch.nn.Module, tokenizer: Tokenizer, path, meta: dict,
                    files: dict[str, str] | None = None) -> None:
    """The checkpoint folder: encoder + MLM head (or discriminator head, and the generator in generator/);
    ``files`` (name -> text) beside them (the run file)."""
    with atomic_dir(path, keep=(STATE_DIR,)) as tmp:
        for name, text in (files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("generator.")}
        if isinstance(model, MaskedLM):
            architecture = MLM_ARCHITECTURES[model.config.model_type]
        else:
            # transformers has an ELECTRA pretraining class only for the ELECTRA architecture
            architecture = "ElectraForPreTraining" if model.config.model_type == "electra" else "BertModel"
            (tmp / GENERATOR_DIR).mkdir()
            gen = model.generator
            write_model_folder(tmp / GENERATOR_DIR, _folder_config(gen.config, "ElectraForMaskedLM", meta),
                               gen.state_dict(), tokenizer)
        write_model_folder(tmp, _folder_config(model.config, architecture, meta), state, tokenizer)


def pretrain(config: PretrainConfig | None = None, **kwargs) -> TrainResult:
    """Pretrain ``model_name`` on ``corpus``; the checkpoint lands in ``save_dir``."""
    cfg = config or PretrainConfig(**kwargs)
    cfg.check()
    corpus = scan(cfg.corpus)  # every line checked before any model is built
    log.info("corpus: %d files, %d lines, %.1fM characters", len(corpus.files), corpus.lines, corpus.chars / 1e6)
    model_dir = [cfg.model_name] if Path(cfg.model_name).expanduser().exists() else []
    rt = start(cfg, inputs=[*cfg.corpus, *model_dir, *([cfg.vocab_file] if cfg.vocab_file else [])])  # save_dir must be ours to replace, and no input
    # --vocab_from_data: the corpus is streamed into the vocabulary trainer
    vocab_file = temporary_vocab(read_lines(corpus), cfg.vocab_size) if cfg.vocab_from_data else cfg.vocab_file
    try:
        model, tokenizer = build(cfg, vocab_file)
    finally:
        if cfg.vocab_from_data:
            os.unlink(vocab_file)
    if cfg.max_seq_length > model.config.max_position_embeddings:
        raise ZhclsError(f"--max_seq_length {cfg.max_seq_length}: {cfg.model_name} has "
                         f"{model.config.max_position_embeddings} positions")
    model.to(rt.device)
    batches = Batches(corpus, tokenizer, cfg)
    n_sequences = batches.count()
    log.info("%d packed sequences of up to %d tokens", n_sequences, cfg.max_seq_length)
    eval_batch = batches.eval_batch()
    last_eval: dict = {}

    def loss(module, batch: Batch):
        value, stats = module(batch.input_ids.to(rt.device), batch.attention_mask.to(rt.device), batch.labels.to(rt.device))
        return value * len(batch), {k: v * len(batch) for k, v in stats.items()}

    def evaluate() -> float:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):  # ELECTRA samples: keep the training RNG untouched
            _, stats = model(eval_batch.input_ids.to(rt.device), eval_batch.attention_mask.to(rt.device),
                             eval_batch.labels.to(rt.device))
        last_eval.clear()
        last_eval.update({k: round(float(v), 4) for k, v in stats.items()})
        log.info("fixed-mask check on the first %d sequences: %s", len(eval_batch),
                 ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))
        return last_eval["mlm_acc" if cfg.objective == "mlm" else "disc_acc"]

    def save_best(record: dict) -> None:
        meta = {"max_seq_length": cfg.max_seq_length, "base_model": cfg.model_name, "init_random": cfg.init_random,
                "pretrain": {"objective": cfg.objective, "whole_word_masking": cfg.whole_word_masking,
                             "mask_prob": cfg.mask_prob, "global_step": record["step"], "epoch": record["epoch"],
                             "sequences": n_sequences, **last_eval}}
        save_pretrained(model, tokenizer, cfg.save_dir, meta, files=options.checkpoint_run_file(cfg))

    job = Job(model, (), loss, evaluate, save_best, metric="mlm_acc" if cfg.objective == "mlm" else "disc_acc",
              name=f"{cfg.model_name} ({cfg.objective})", batches=batches,
              num_batches=math.ceil(n_sequences / cfg.batch_size))
    return fit(job, cfg, rt)
