"""The checkpoint folder, the contract between every step: reading a local folder of any format into
a model, and writing one.

A checkpoint folder holds ``config.json`` (a transformers config plus a ``zhcls`` block: task,
problem type, max_seq_length, training metadata), ``model.safetensors``, ``vocab.txt`` and the
tokenizer config. `transformers.AutoModelForSequenceClassification` loads it as it is. Nothing is
unpickled except through `torch.load(weights_only=True)` or the restricted .pdparams unpickler.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from zhcls.data.tokenizer import Tokenizer
from zhcls.errors import ZhclsError
from zhcls.io import atomic_dir
from zhcls.models.modeling import EncoderConfig, SequenceClassifier
from zhcls.models.sources import source_format

log = logging.getLogger("zhcls")

# Subfolders a new best checkpoint carries over from the one it replaces: training's resumable state and
# `zhcls evaluate`'s reports (a better epoch replaces the weights, not what was measured so far).
KEPT_DIRS = ("training_state", "eval")
# Tensors that pretraining checkpoints carry and a classifier does not need.
IGNORED_PREFIXES = ("cls.", "lm_head.", "discriminator_predictions.", "generator", "qa_outputs.")


def read_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    shards = sorted(path.glob("model*.safetensors"))
    if shards:
        state = {}
        for shard in shards:
            state.update(load_file(shard))
        return state
    try:
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    except Exception as e:
        raise ZhclsError(f"{path / 'pytorch_model.bin'}: not a plain tensor checkpoint ({e}); refusing to load it") from None


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ZhclsError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ZhclsError(f"{path}: not valid JSON ({e})") from None


def read_source(path: Path) -> tuple[dict, dict]:
    """(transformers config dict, state dict with transformers names) of a local folder in any format."""
    fmt = source_format(path)
    if fmt == "paddle":
        from zhcls.models.formats.paddle import convert_paddle

        return convert_paddle(path)
    if fmt == "tf":
        from zhcls.models.formats.tf import convert_tf

        return convert_tf(path)
    if fmt == "hf":
        return read_json(path / "config.json"), read_hf_weights(path)
    raise ZhclsError(f"{path}: no weights found (expected model.safetensors, pytorch_model.bin, "
                     "model_state.pdparams or a TensorFlow *.index); `zhcls train --init_random` trains this architecture from scratch")


def normalise_names(state: dict, model_type: str) -> dict[str, torch.Tensor]:
    """Old-style names (LayerNorm.gamma/beta, no model prefix) -> the transformers layout, as tensors."""
    out = {}
    for name, value in state.items():
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if name.split(".")[0] in ("embeddings", "encoder", "pooler", "embeddings_project"):
            name = f"{model_type}.{name}"
        out[name] = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
    return out


def build_model(config_dict: dict, labels: list[str] | None, state: dict | None = None) -> SequenceClassifier:
    """A classifier of this architecture for these labels, with the given weights where they fit.

    A checkpoint's classification head is kept only when its label set matches; otherwise the head
    starts fresh (fine-tuning a model on a new dataset), which is logged.
    """
    config = EncoderConfig.from_dict(config_dict)
    if labels is not None:
        head_fits = config.labels == list(labels)
        config.id2label = dict(enumerate(labels))
        if state is not None and not head_fits:
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    model = SequenceClassifier(config)
    if state is None:
        return model
    state = normalise_names(state, config.model_type)
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if k in own and v.shape != own[k].shape]
    if wrong:
        raise ZhclsError(f"checkpoint does not match its config: {'; '.join(wrong[:3])}")
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    unexpected = [k for k in state if k not in own and not k.startswith(IGNORED_PREFIXES) and not k.endswith("position_ids")]
    fresh = [k for k in missing if not k.startswith("classifier.")]
    if fresh:
        log.warning("weights not in the checkpoint, initialised randomly: %s", ", ".join(fresh[:8]))
    if unexpected:
        log.warning("unused tensors in the checkpoint: %s", ", ".join(unexpected[:8]))
    return model


def write_model_folder(folder: Path, config: dict, state: dict, tokenizer: Tokenizer) -> None:
    """The files of the checkpoint contract: config.json, model.safetensors, tokenizer files, label.txt."""
    save_file({k: v.detach().contiguous() for k, v in state.items()}, folder / "model.safetensors",
              metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    tokenizer.save(folder)
    if "id2label" in config:
        labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
        (folder / "label.txt").write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")


def save_checkpoint(model: SequenceClassifier, tokenizer: Tokenizer, path, meta: dict | None = None,
                    files: dict[str, str] | None = None) -> Path:
    """Write the checkpoint folder atomically (its training_state/ and eval/ survive, `KEPT_DIRS`).
    ``meta`` goes into config.json's ``zhcls`` block; ``files`` (name -> text) beside it (the run file)."""
    config = model.config.to_dict()
    config["zhcls"] = {**config.get("zhcls", {}), **(meta or {})}
    with atomic_dir(path, keep=KEPT_DIRS) as tmp:
        write_model_folder(tmp, config, model.state_dict(), tokenizer)
        for name, text in (files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return Path(path)


def load_checkpoint(path, require_head: bool = True) -> tuple[SequenceClassifier, Tokenizer, dict]:
    """A checkpoint folder zhcls wrote (or any local model folder): model in eval mode, tokenizer, zhcls block.
    ``require_head=False`` also takes a pretrained encoder (its head stays random): for embeddings only."""
    path = Path(path)
    if not path.is_dir():
        raise ZhclsError(f"--params_path {path}: no such checkpoint folder")
    config, state = read_source(path)
    if require_head and not any(name.startswith("classifier.") for name in state):
        # build_model would give it a random head: garbage predictions with exit 0.
        raise ZhclsError(f"{path}: no trained classifier head (a pretrained encoder, e.g. a `zhcls convert` output); "
                         f"fine-tune it first: zhcls train --model {path} --dataset_dir DATASET")
    model = build_model(config, None, state).eval()
    return model, Tokenizer.from_dir(path), config.get("zhcls", {})
