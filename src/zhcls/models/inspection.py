"""`zhcls inspect`: format, architecture, parameters, missing / unused / skipped tensors of a checkpoint,
without loading a model (TensorFlow from the ``.index`` alone, safetensors from their header)."""
from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from zhcls.errors import ZhclsError
from zhcls.models.checkpoint import IGNORED_PREFIXES, normalise_names, read_json
from zhcls.models.convert import DISCRIMINATOR, expected_shapes, summarise
from zhcls.models.modeling import EncoderConfig
from zhcls.models.sources import FORMAT_NAMES, PDPARAMS, Source, locate

log = logging.getLogger("zhcls")

def _architecture(config: dict) -> dict:
    hidden = config.get("hidden_size")
    arch = {
        "model_type": config.get("model_type"),
        "architecture": (config.get("architectures") or [None])[0],
        "layers": config.get("num_hidden_layers"),
        "hidden": hidden,
        "heads": config.get("num_attention_heads"),
        "ffn": config.get("intermediate_size"),
        "vocab": config.get("vocab_size"),
        "embedding_size": config.get("embedding_size") or hidden,
        "max_position": config.get("max_position_embeddings"),
        "type_vocab": config.get("type_vocab_size"),
        "hidden_act": config.get("hidden_act"),
    }
    labels = len(config["id2label"]) if config.get("id2label") else config.get("num_labels")
    if labels and str(arch["architecture"]).endswith("ForSequenceClassification"):
        arch["num_labels"] = labels
    return arch


_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _dtype_name(dtype) -> str:
    if isinstance(dtype, str):
        return _SAFETENSORS_DTYPES.get(dtype, dtype)
    return str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else np.dtype(dtype).name


def _inspect_tf(source: Source, config_path, info: dict) -> None:
    from zhcls.models.formats import tf as tf_format
    from zhcls.models.formats.tf_bundle import TFCheckpoint

    ckpt = TFCheckpoint(source.path)  # the index only; a corrupt index is an error, not a report
    tensors = ckpt.tensors()
    info["files"] = [str(ckpt.index_path)]
    info["tensors"] = len(tensors)
    info["dtypes"] = dict(Counter(_dtype_name(t.dtype) for t in tensors.values()))
    info["stored_values"] = sum(math.prod(t.shape) for t in tensors.values())
    for shard in range(ckpt.num_shards):
        data = ckpt.data_path(shard)
        info["files"].append(str(data))
        needed = max((t.offset + t.size for t in tensors.values() if t.shard == shard), default=0)
        if not data.is_file():
            info["problems"].append(f"{data.name}: missing; the index lists the tensors but conversion needs the data")
        elif data.stat().st_size < needed:
            info["problems"].append(f"{data.name}: truncated ({data.stat().st_size} bytes, the index needs {needed})")
    try:
        config, plan, report = tf_format._plan(ckpt, config_path)
    except ZhclsError as e:
        info["problems"].append(str(e))
        return
    info["architecture"] = _architecture(config)
    info["parameters"] = sum(math.prod(tensors[tf].shape) for tf, _, _ in plan.values())
    info["model_tensors"] = len(plan)
    info.update(missing=report["missing"], unused=report["unused"], skipped=report["skipped"])


def _inspect_paddle(source: Source, info: dict) -> None:
    from zhcls.models.formats import paddle as paddle_format

    info["files"] = [str(source.folder / PDPARAMS)]
    try:
        config, state, left_out = paddle_format._convert(source.folder)  # reads the whole pickle: no other way
    except ZhclsError as e:  # still list what is stored
        info["problems"].append(str(e))
        params = paddle_format.load_pdparams(source.folder)
        info["tensors"] = len(params)
        info["dtypes"] = dict(Counter(v.dtype.name for v in params.values()))
        info["stored_values"] = sum(v.size for v in params.values())
        return
    info["tensors"] = len(state) + len(left_out)
    info["dtypes"] = dict(Counter(v.dtype.name for v in state.values()))
    info["architecture"] = _architecture(config)
    info["parameters"] = sum(v.size for v in state.values())
    info["model_tensors"] = len(state)
    info.update(missing=[], unused=[n for n in left_out if not n.startswith(IGNORED_PREFIXES)],
                skipped=[n for n in left_out if n.startswith(IGNORED_PREFIXES)])


def _hf_shapes(folder: Path, files: list[Path]) -> dict[str, tuple[list[int], str]]:
    """name -> (shape, dtype) from safetensors headers, or a memory-mapped pytorch_model.bin."""
    shapes = {}
    for path in files:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(path, framework="pt") as f:
                    for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                        part = f.get_slice(name)
                        shapes[name] = (list(part.get_shape()), _dtype_name(part.get_dtype()))
            except Exception as e:  # a damaged header: safetensors raises its own error types
                raise ZhclsError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
        else:
            try:
                try:
                    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
                    state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:
                raise ZhclsError(f"{path}: not a plain tensor checkpoint ({e}); refusing to load it") from None
            shapes.update({k: (list(v.shape), _dtype_name(v.dtype)) for k, v in state.items()
                           if isinstance(v, torch.Tensor)})
    return shapes


def _inspect_hf(source: Source, info: dict) -> None:
    files = source.weight_files()
    info["files"] = [str(p) for p in files]
    shapes = _hf_shapes(source.folder, files)
    info["tensors"] = len(shapes)
    info["dtypes"] = dict(Counter(dtype for _, dtype in shapes.values()))
    info["stored_values"] = sum(math.prod(s) for s, _ in shapes.values())
    try:
        config = read_json(source.folder / "config.json")
        encoder_config = EncoderConfig.from_dict(config)
    except (ZhclsError, TypeError) as e:
        info["problems"].append(str(e))
        return
    model_type = encoder_config.model_type
    names = {normalise_names({k: None}, model_type).popitem()[0]: k for k in shapes}  # zhcls name -> stored name
    has_head = any(n.startswith("classifier.") for n in names)
    expected = expected_shapes(encoder_config)
    if model_type == "electra" and not has_head:
        expected |= {k: None for k in DISCRIMINATOR if k in names}
    wanted = {k: s for k, s in expected.items() if has_head or not k.startswith("classifier.")}
    info["architecture"] = _architecture(config)
    info["missing"] = [k for k in wanted if k not in names]
    used = [k for k in wanted if k in names]
    info["parameters"] = sum(math.prod(shapes[names[k]][0]) for k in used)
    info["model_tensors"] = len(used)
    rest = [names[n] for n in names if n not in wanted]
    info["skipped"] = [n for n in rest if n.startswith(IGNORED_PREFIXES) or n.endswith("position_ids")]
    info["unused"] = [n for n in rest if n not in info["skipped"]]
    wrong = [f"{k} {shapes[names[k]][0]} (expected {list(wanted[k])})" for k in used
             if wanted[k] is not None and list(wanted[k]) != shapes[names[k]][0]]
    if wrong:
        info["problems"].append(f"tensor shapes do not match config.json: {'; '.join(wrong[:3])}")


def inspect(src, *, from_format: str = "auto", config_path=None) -> dict:
    """What a checkpoint holds and what `convert` would make of it, without loading the model.

    Keys: ``source``, ``format``, ``files``, ``tensors`` (stored), ``dtypes``, ``stored_values`` (elements in
    all stored tensors), ``architecture`` (model_type, architecture, layers, hidden, heads, ffn, vocab,
    embedding_size, max_position, type_vocab, hidden_act, num_labels with a head), ``parameters`` and
    ``model_tensors`` (what conversion keeps), ``missing`` / ``unused`` / ``skipped`` (tensor names; skipped =
    optimizer slots, global_step, pretraining heads, generator), ``vocab`` and ``problems`` (why `convert`
    would fail; empty when it would work). ``architecture``, ``parameters`` and the name lists are None when
    the config cannot be read.
    """
    source = locate(src, from_format)
    info: dict = {"source": str(source.path), "format": source.fmt, "format_name": FORMAT_NAMES[source.fmt],
                  "files": [], "tensors": 0, "dtypes": {}, "stored_values": None, "architecture": None,
                  "parameters": None, "model_tensors": None, "missing": None, "unused": None, "skipped": None,
                  "vocab": None, "problems": []}
    if config_path is not None and source.fmt != "tf":
        raise ZhclsError("--config applies to TensorFlow checkpoints only")
    if source.fmt == "tf":
        _inspect_tf(source, config_path, info)
    elif source.fmt == "paddle":
        _inspect_paddle(source, info)
    else:
        _inspect_hf(source, info)
    if info["missing"]:
        info["problems"].append(f"{len(info['missing'])} tensor(s) the model needs are missing")
    vocab = source.folder / "vocab.txt"
    if vocab.is_file():
        with open(vocab, "rb") as f:
            tokens = sum(1 for _ in f)  # as Tokenizer counts: lines, the last one without a newline too
        info["vocab"] = {"file": str(vocab), "tokens": tokens}
        embedded = (info["architecture"] or {}).get("vocab")
        if embedded is not None and tokens > embedded:
            info["problems"].append(f"vocab.txt: {tokens} tokens but the model embeds only {embedded}")
    else:
        info["problems"].append("no vocab.txt beside the weights: convert needs --vocab_file")
    return info



def _names(names: list[str] | None, sep: str, limit: int = 8) -> str:
    if names is None:
        return "not known (see problems)"
    if not names:
        return "none"
    if len(names) <= limit:
        return ", ".join(names)
    return f"{len(names)}: {summarise(names, sep)}"


def format_inspect(info: dict) -> str:
    """`inspect`'s result as the lines `zhcls inspect` prints."""
    sep = "/" if info["format"] == "tf" else "."
    lines = [f"source      {info['source']} ({info['format_name']})"]
    arch = info.get("architecture")
    if arch:
        parts = [f"{arch['layers']} layers", f"hidden {arch['hidden']}", f"{arch['heads']} heads",
                 f"FFN {arch['ffn']}", f"vocab {arch['vocab']}"]
        if arch["embedding_size"] != arch["hidden"]:
            parts.append(f"embedding {arch['embedding_size']}")
        parts += [f"positions {arch['max_position']}", f"type vocab {arch['type_vocab']}", f"act {arch['hidden_act']}"]
        if "num_labels" in arch:
            parts.append(f"{arch['num_labels']} labels")
        lines.append(f"model       {arch['model_type']} ({arch['architecture']}): {', '.join(parts)}")
    dtypes = ", ".join(f"{n} {d}" for d, n in info["dtypes"].items())
    stored = f"{info['tensors']} stored ({dtypes})" if dtypes else f"{info['tensors']} stored"
    if info.get("parameters") is not None:
        lines.append(f"parameters  {info['parameters']:,} in the {info['model_tensors']} tensors conversion keeps")
    lines.append(f"tensors     {stored}")
    lines.append(f"missing     {_names(info['missing'], sep)}")
    lines.append(f"unused      {_names(info['unused'], sep)}")
    lines.append(f"skipped     {_names(info['skipped'], sep, limit=4)}")
    vocab = info.get("vocab")
    lines.append(f"vocab       {vocab['tokens']} tokens ({vocab['file']})" if vocab else "vocab       none found")
    if info["problems"]:
        lines += [f"problem     {p}" for p in info["problems"]]
    else:
        lines.append("convertible yes")
    return "\n".join(lines)
