"""Loading and saving models: the checkpoint folder is the contract between every step.

A checkpoint folder holds ``config.json`` (a transformers config plus a ``zhcls`` block: task,
problem type, max_seq_length, training metadata), ``model.safetensors``, ``vocab.txt`` and the
tokenizer config. `transformers.AutoModelForSequenceClassification` loads it as it is.

Sources `--model` accepts: a zoo name, a hub id, or a local folder in Hugging Face, PaddleNLP
(``model_state.pdparams``) or TensorFlow 1.x (``*.index``) format. Nothing is unpickled except
through `torch.load(weights_only=True)` or the restricted .pdparams unpickler.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import zoo
from .errors import ZhclsError
from .io import atomic_dir
from .modeling import EncoderConfig, SequenceClassifier
from .tokenizer import Tokenizer

log = logging.getLogger("zhcls")

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HUB_FILES = ["config.json", "*.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer_config.json",
             "special_tokens_map.json", "model_state.pdparams", "model_config.json"]
# Tensors that pretraining checkpoints carry and a classifier does not need.
IGNORED_PREFIXES = ("cls.", "lm_head.", "discriminator_predictions.", "generator", "qa_outputs.")


def source_format(path: Path) -> str | None:
    """'hf', 'paddle' or 'tf' for a local folder with weights, None when there are no weights."""
    if any((path / f).exists() for f in WEIGHT_FILES) or any(path.glob("model-*.safetensors")):
        return "hf"
    if (path / "model_state.pdparams").exists():
        return "paddle"
    if any(path.glob("*.index")):
        return "tf"
    return None


def download(hub_id: str, cache_dir: str | None = None) -> Path:
    """Fetch a hub repository's weights, config and vocab; a clear error when offline."""
    from huggingface_hub import snapshot_download  # only when a download is really needed

    try:
        return Path(snapshot_download(hub_id, allow_patterns=HUB_FILES, cache_dir=cache_dir))
    except Exception as e:  # offline, unknown repo, gated: all mean the same to the user
        local = hub_id.split("/")[-1]
        raise ZhclsError(
            f"cannot download {hub_id!r} from the Hugging Face hub ({type(e).__name__}). On a connected machine run "
            f"`huggingface-cli download {hub_id} --local-dir {local}`, copy the folder here and pass --model {local}/"
        ) from None


def _read_hf_weights(path: Path) -> dict[str, torch.Tensor]:
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


def _read_json(path: Path) -> dict:
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
        from .formats.paddle import convert_paddle

        return convert_paddle(path)
    if fmt == "tf":
        from .formats.tf import convert_tf

        return convert_tf(path)
    if fmt == "hf":
        return _read_json(path / "config.json"), _read_hf_weights(path)
    raise ZhclsError(f"{path}: no weights found (expected model.safetensors, pytorch_model.bin, "
                     "model_state.pdparams or a TensorFlow *.index); pass --init_random to train this architecture from scratch")


def _normalise_names(state: dict, model_type: str) -> dict[str, torch.Tensor]:
    """Old-style names (LayerNorm.gamma/beta, no model prefix) -> the transformers layout, as tensors."""
    out = {}
    for name, value in state.items():
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if name.split(".")[0] in ("embeddings", "encoder", "pooler", "embeddings_project"):
            name = f"{model_type}.{name}"
        out[name] = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
    return out


def _resolve(model: str, cache_dir: str | None) -> Path:
    """A local folder for a zoo name, hub id or path."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists() or model.startswith((".", "/", "~")):
        raise ZhclsError(f"--model {model}: not a folder")
    entry = zoo.find(model)
    return download(entry.hub_id if entry else model, cache_dir)


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
    state = _normalise_names(state, config.model_type)
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


def load_pretrained(model: str, labels: list[str] | None = None, *, init_random: bool = False,
                    vocab_file: str | None = None, cache_dir: str | None = None) -> tuple[SequenceClassifier, Tokenizer]:
    """The model and tokenizer ``--model`` names, with a head for ``labels``.

    ``init_random`` builds the architecture with fresh weights (no download): from the zoo entry,
    or from a folder's config.json. ``vocab_file`` overrides the vocabulary (its size wins).
    """
    entry = zoo.find(model)
    path = Path(model).expanduser()
    if init_random:
        if path.is_dir():
            config = _read_json(path / "config.json")
            vocab_file = vocab_file or path / "vocab.txt"
        elif entry:
            config = entry.config_dict()
        else:
            raise ZhclsError(f"--init_random needs a zoo name or a folder with config.json; got {model!r}")
        if vocab_file is None:
            raise ZhclsError(f"--init_random {model}: no vocabulary; pass --vocab_file or --vocab_from_data")
        tokenizer = Tokenizer(vocab_file)
        config = {**config, "vocab_size": tokenizer.vocab_size, "pad_token_id": tokenizer.pad_token_id}
        log.warning("RANDOM INITIALISATION: %s is built with fresh weights, no pretrained knowledge. "
                    "Expect far lower accuracy than the published results.", model)
        return build_model(config, labels), tokenizer
    folder = _resolve(model, cache_dir)
    if source_format(folder) in ("paddle", "tf"):  # converted once, then loaded from the cache
        from .convert import cached_conversion

        folder = cached_conversion(folder, vocab_file=vocab_file)
    config, state = read_source(folder)
    vocab = Path(vocab_file) if vocab_file else folder / "vocab.txt"
    if not vocab.exists():
        raise ZhclsError(f"{folder}: no vocab.txt beside the weights; pass --vocab_file")
    tokenizer = Tokenizer.from_dir(folder) if vocab == folder / "vocab.txt" else Tokenizer(vocab)
    return build_model(config, labels, state), tokenizer


def write_model_folder(folder: Path, config: dict, state: dict, tokenizer: Tokenizer) -> None:
    """The files of the checkpoint contract: config.json, model.safetensors, tokenizer files, label.txt."""
    save_file({k: v.detach().contiguous() for k, v in state.items()}, folder / "model.safetensors",
              metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    tokenizer.save(folder)
    if "id2label" in config:
        labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
        (folder / "label.txt").write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")


def save_checkpoint(model: SequenceClassifier, tokenizer: Tokenizer, path, meta: dict | None = None) -> Path:
    """Write the checkpoint folder atomically (its training_state/ survives). ``meta`` goes into
    config.json's ``zhcls`` block."""
    config = model.config.to_dict()
    config["zhcls"] = {**config.get("zhcls", {}), **(meta or {})}
    with atomic_dir(path, keep=("training_state",)) as tmp:
        write_model_folder(tmp, config, model.state_dict(), tokenizer)
    return Path(path)


def load_checkpoint(path) -> tuple[SequenceClassifier, Tokenizer, dict]:
    """A checkpoint folder zhcls wrote (or any local model folder): model in eval mode, tokenizer, zhcls block."""
    path = Path(path)
    if not path.is_dir():
        raise ZhclsError(f"--params_path {path}: no such checkpoint folder")
    config, state = read_source(path)
    model = build_model(config, None, state).eval()
    return model, Tokenizer.from_dir(path), config.get("zhcls", {})
