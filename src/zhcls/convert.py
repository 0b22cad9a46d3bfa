"""`zhcls convert` and `zhcls inspect`: PaddleNLP / TensorFlow 1.x / Hugging Face sources -> one Hugging Face folder.

The folder `convert` writes::

    config.json              transformers config (+ a ``zhcls.converted_from`` block: format, source path)
    model.safetensors        float32, transformers names (``bert.*`` / ``ernie.*`` / ``electra.*`` ...)
    vocab.txt, tokenizer_config.json, special_tokens_map.json   (BertTokenizer layout)
    label.txt                only when the source has a sequence-classification head

What is kept: exactly the tensors the zhcls model of that architecture uses (the backbone, and the
classification head when the source has one), plus ELECTRA's ``discriminator_predictions.*`` when
there is no classifier, because its names are those of transformers' ElectraForPreTraining.
Pretraining-only tensors (BERT's ``cls.*`` MLM/NSP heads, ELECTRA's generator, optimizer slots,
``global_step``, ``position_ids`` buffers) are left out and listed by `inspect`. So a backbone-only
source loads in transformers as ``BertModel`` / ``ErnieModel`` / ``ElectraModel`` (or
``ElectraForPreTraining``), and in ``AutoModelForSequenceClassification`` with a fresh head; a source
with a head loads as its ``*ForSequenceClassification``. Floating tensors are stored as float32, so
zhcls and transformers compute the same outputs from the folder.

One exception: an ELECTRA checkpoint fine-tuned by google-research/electra's ``run_finetuning.py`` has
a single dense layer as its head (``classifier_type: "linear"``); transformers'
ElectraClassificationHead cannot express that, so only zhcls reproduces that head's logits (a
warning says so).

`inspect` never loads a model: TensorFlow is read from the ``.index`` alone (the data files may be
absent), safetensors from their header, ``pytorch_model.bin`` memory-mapped; only a PaddleNLP
``.pdparams`` pickle has to be read whole.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import (IGNORED_PREFIXES, WEIGHT_FILES, _normalise_names, _read_hf_weights, _read_json,
                         write_model_folder)
from .errors import ZhclsError
from .io import atomic_dir
from .modeling import EncoderConfig, SequenceClassifier
from .tokenizer import Tokenizer

log = logging.getLogger("zhcls")

FORMATS = ("hf", "paddle", "tf")  # in the order `checkpoint.source_format` prefers them
FORMAT_NAMES = {"hf": "Hugging Face", "paddle": "PaddleNLP", "tf": "TensorFlow 1.x"}
PDPARAMS = "model_state.pdparams"
# Bump when the folder `convert` writes changes: cached conversions made before are then redone.
CONVERTER_VERSION = 1
CACHE_ENV = "ZHCLS_CACHE"
_TF_DATA = re.compile(r"\.data-\d{5}-of-\d{5}$")
_DISCRIMINATOR = tuple(f"discriminator_predictions.{layer}.{kind}" for layer in ("dense", "dense_prediction")
                       for kind in ("weight", "bias"))


# ---------------------------------------------------------------------------------------------------------------
# Finding the source


@dataclass(frozen=True)
class Source:
    """A located checkpoint: its format, its folder (configs, vocab.txt) and what its reader is given."""

    fmt: str
    folder: Path
    path: Path  # the folder, or a TensorFlow prefix when one was named

    def weight_files(self) -> list[Path]:
        if self.fmt == "tf":
            prefix = self._tf_prefix()
            return sorted([Path(f"{prefix}.index"), *prefix.parent.glob(f"{prefix.name}.data-*")])
        if self.fmt == "paddle":
            return [self.folder / PDPARAMS]
        shards = sorted(self.folder.glob("model*.safetensors"))
        return shards or [p for p in (self.folder / f for f in WEIGHT_FILES) if p.is_file()]

    def _tf_prefix(self) -> Path:
        if self.path.is_dir():
            indexes = sorted(self.path.glob("*.index"))
            return indexes[0].with_suffix("") if len(indexes) == 1 else self.path / "?"
        return self.path


def formats_in(folder: Path) -> list[str]:
    """Every checkpoint format with weights in ``folder`` (same tests as `checkpoint.source_format`)."""
    found = []
    if any((folder / f).exists() for f in WEIGHT_FILES) or any(folder.glob("model-*.safetensors")):
        found.append("hf")
    if (folder / PDPARAMS).exists():
        found.append("paddle")
    if any(folder.glob("*.index")):
        found.append("tf")
    return found


def locate(src, from_format: str = "auto") -> Source:
    """The checkpoint ``src`` names: a folder, a TensorFlow prefix / .index / data shard, or a weights file.

    ``from_format`` ('auto', 'hf', 'paddle', 'tf') must agree with what is there; 'auto' takes the
    format `checkpoint.source_format` would.
    """
    if from_format not in ("auto", *FORMATS):
        raise ZhclsError(f"--from {from_format}: expected one of auto, {', '.join(FORMATS)}")
    path = Path(src).expanduser()
    if path.is_dir():
        found = formats_in(path)
        if not found:
            raise ZhclsError(f"{path}: no weights found (expected model.safetensors, pytorch_model.bin, "
                             f"{PDPARAMS} or a TensorFlow *.index)")
        if from_format == "auto":
            fmt = found[0]
        elif from_format in found:
            fmt = from_format
        else:
            raise ZhclsError(f"--from {from_format}: {path} holds a {FORMAT_NAMES[found[0]]} checkpoint, not a "
                             f"{FORMAT_NAMES[from_format]} one; pass --from {found[0]} (or auto)")
        return Source(fmt, path, path)
    # A file, or a TensorFlow prefix (which is not a file itself).
    name = path.name
    if name.endswith(".index") or _TF_DATA.search(name) or Path(f"{path}.index").is_file():
        fmt, folder, reader_path = "tf", path.parent, Path(_TF_DATA.sub("", re.sub(r"\.index$", "", str(path))))
        if not Path(f"{reader_path}.index").is_file():
            raise ZhclsError(f"{reader_path}.index: not found, so {src} is not a TensorFlow checkpoint")
    elif name == PDPARAMS and path.is_file():
        fmt, folder, reader_path = "paddle", path.parent, path.parent
    elif (name in WEIGHT_FILES or re.fullmatch(r"model.*\.safetensors", name)) and path.is_file():
        fmt, folder, reader_path = "hf", path.parent, path.parent
    elif not path.exists():
        raise ZhclsError(f"{src}: no such file or folder")
    else:
        raise ZhclsError(f"{src}: not a checkpoint (expected a folder, {PDPARAMS}, model.safetensors, "
                         "pytorch_model.bin or a TensorFlow prefix / .index)")
    if from_format not in ("auto", fmt):
        raise ZhclsError(f"--from {from_format}: {src} is a {FORMAT_NAMES[fmt]} checkpoint; "
                         f"pass --from {fmt} (or auto)")
    return Source(fmt, folder, reader_path)


# ---------------------------------------------------------------------------------------------------------------
# Conversion


def _read(source: Source, config_path) -> tuple[dict, dict]:
    """(transformers config dict, state dict) through the format's reader."""
    if config_path is not None and source.fmt != "tf":
        raise ZhclsError(f"--config applies to TensorFlow checkpoints only; {source.folder} is "
                         f"{FORMAT_NAMES[source.fmt]} and has its own config.json")
    if source.fmt == "tf":
        from .formats.tf import convert_tf

        return convert_tf(source.path, config_path)
    if source.fmt == "paddle":
        from .formats.paddle import convert_paddle

        return convert_paddle(source.folder)
    return _read_json(source.folder / "config.json"), _read_hf_weights(source.folder)


def _expected_shapes(config: EncoderConfig) -> dict[str, torch.Size]:
    """Name -> shape of every tensor of the zhcls model, built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = SequenceClassifier(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def _select(config: dict, state: dict, where: Path) -> tuple[dict, dict[str, torch.Tensor], list[str]]:
    """(config to write, float32 tensors to write, names left out). Raises when the backbone is incomplete."""
    config = {k: v for k, v in config.items() if k not in ("torch_dtype", "dtype", "transformers_version")}
    encoder_config = EncoderConfig.from_dict(config)  # unsupported model types / activations fail here
    model_type = encoder_config.model_type
    state = _normalise_names(state, model_type)
    has_head = any(k.startswith("classifier.") for k in state)
    if not has_head:  # no head: the config's labels describe nothing; transformers gets a fresh head
        for key in ("id2label", "label2id", "num_labels", "problem_type"):
            config.pop(key, None)
        encoder_config = EncoderConfig.from_dict(config)
    expected = _expected_shapes(encoder_config)
    if model_type == "electra" and not has_head and all(k in state for k in _DISCRIMINATOR):
        hidden = encoder_config.hidden_size
        expected |= dict(zip(_DISCRIMINATOR, map(torch.Size, ([hidden, hidden], [hidden], [1, hidden], [1]))))
    wanted = {k: s for k, s in expected.items() if has_head or not k.startswith("classifier.")}
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ZhclsError(f"{where}: {len(missing)} tensor(s) the {model_type} model needs are missing: "
                         f"{', '.join(missing[:5])}")
    wrong = [f"{k} {list(state[k].shape)} (expected {list(s)})" for k, s in wanted.items() if state[k].shape != s]
    if wrong:
        raise ZhclsError(f"{where}: tensor shapes do not match the config: {'; '.join(wrong[:3])}")
    # float32 copies: zhcls computes in float32, and transformers would otherwise load fp16 weights as fp16.
    # (A copy also unties shared storage, which safetensors refuses.)
    out = {k: (state[k].to(torch.float32, copy=True) if state[k].is_floating_point() else state[k].clone()).contiguous()
           for k in wanted}
    left_out = sorted(k for k in state if k not in wanted)

    family = {"bert": "Bert", "ernie": "Ernie", "electra": "Electra"}[model_type]
    if has_head:
        arch = f"{family}ForSequenceClassification"
        config["id2label"] = {str(i): label for i, label in encoder_config.id2label.items()}
        config["label2id"] = {label: i for i, label in encoder_config.id2label.items()}
        config.pop("num_labels", None)  # transformers derives it from id2label
        if encoder_config.classifier_type == "linear":
            log.warning("%s: the classifier is one dense layer on [CLS] (google-research/electra fine-tuning); "
                        "zhcls reproduces it, transformers' ElectraForSequenceClassification cannot (it would add "
                        "a fresh dense+gelu layer)", where)
    elif "discriminator_predictions.dense.weight" in out:
        arch = "ElectraForPreTraining"
    else:
        arch = f"{family}Model"
    if encoder_config.is_pruned:
        log.warning("%s: a pruned model (per-layer head counts / FFN widths): zhcls loads it, transformers cannot",
                    where)
    config["architectures"] = [arch]
    return config, out, left_out


def _tokenizer(source: Source, vocab_file, vocab_size: int) -> Tokenizer:
    if vocab_file is not None:
        tokenizer = Tokenizer(vocab_file)
    elif (source.folder / "vocab.txt").is_file():
        tokenizer = Tokenizer.from_dir(source.folder)
    else:
        raise ZhclsError(f"{source.folder}: no vocab.txt beside the weights; pass the vocabulary (--vocab_file), "
                         "e.g. the vocab.txt published with the model")
    if tokenizer.vocab_size > vocab_size:
        raise ZhclsError(f"{vocab_file or source.folder / 'vocab.txt'}: {tokenizer.vocab_size} tokens but the model "
                         f"embeds only {vocab_size}: not this model's vocabulary")
    return tokenizer


@dataclass
class _Conversion:
    source: Source
    config: dict
    state: dict[str, torch.Tensor]
    left_out: list[str]
    tokenizer: Tokenizer

    def write(self, folder: Path) -> None:
        write_model_folder(folder, self.config, self.state, self.tokenizer)

def _prepare(source: Source, *, vocab_file=None, config_path=None) -> _Conversion:
    """Read, check and select everything before anything is written."""
    raw_config, raw_state = _read(source, config_path)
    config, state, left_out = _select(raw_config, raw_state, source.path)
    tokenizer = _tokenizer(source, vocab_file, config["vocab_size"])
    if tokenizer.pad_token_id != config.get("pad_token_id", 0):
        log.warning("%s: [PAD] is id %d in the vocabulary but pad_token_id is %s in the config", source.folder,
                    tokenizer.pad_token_id, config.get("pad_token_id", 0))
    zhcls_block = config.get("zhcls") if isinstance(config.get("zhcls"), dict) else {}
    config["zhcls"] = {**zhcls_block, "converted_from": {"format": source.fmt, "source": str(source.path.resolve())}}
    if left_out:
        log.info("left out of the conversion (%d): %s", len(left_out), _summarise(left_out, "."))
    return _Conversion(source, config, state, left_out, tokenizer)


def _is_conversion(folder: Path) -> bool:
    try:
        block = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("zhcls", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(block, dict) and "converted_from" in block


def _check_destination(source: Source, dst: Path) -> None:
    """The destination is replaced whole: never the source, a folder holding it, or someone else's folder."""
    out = dst.resolve()
    src = source.folder.resolve()
    if out == src or out in src.parents:
        raise ZhclsError(f"--to {dst}: must not be the source folder or contain it (the conversion replaces it whole)")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _is_conversion(out))):
        raise ZhclsError(f"--to {dst}: exists and is not an earlier `zhcls convert` output; refusing to replace it")


def convert(src, dst, from_format: str = "auto", *, vocab_file=None, config_path=None) -> Path:
    """Convert a Hugging Face / PaddleNLP / TensorFlow 1.x checkpoint into a Hugging Face folder at ``dst``.

    ``src``: a folder, a TensorFlow prefix or ``.index``, or a weights file. ``from_format``: 'auto',
    'hf', 'paddle' or 'tf'; it must agree with what is found. ``vocab_file`` replaces the vocab.txt
    expected beside the source; ``config_path`` names the TensorFlow config (bert_config.json, HFL's
    discriminator config) when it is not beside the checkpoint. Everything is read and checked before
    ``dst`` is touched, and ``dst`` is written atomically: a failure leaves it as it was.
    """
    source = locate(src, from_format)
    dst = Path(dst).expanduser()
    _check_destination(source, dst)
    conversion = _prepare(source, vocab_file=vocab_file, config_path=config_path)
    try:
        with atomic_dir(dst) as tmp:
            conversion.write(tmp)
    except OSError as e:  # disk full, no permission: atomic_dir has removed its temporary folder
        raise ZhclsError(f"--to {dst}: cannot write ({e.strerror or e})") from None
    log.info("converted %s (%s, %s) to %s", src, FORMAT_NAMES[source.fmt], conversion.config["architectures"][0], dst)
    return dst


# ---------------------------------------------------------------------------------------------------------------
# Cached conversion for --model


def cache_root() -> Path:
    """Where conversions are cached: ``$ZHCLS_CACHE/converted``, by default ``~/.cache/zhcls/converted``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "zhcls") / "converted"


def _stamp(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def cache_key(source: Source, vocab_file=None) -> str:
    """Hash of the source's absolute path and the size + mtime of its weight files, its JSON configs and its
    vocabulary (a changed config or vocab changes the output too), and of the converter version."""
    files = [*source.weight_files(), *sorted(source.folder.glob("*.json")), source.folder / "vocab.txt"]
    if vocab_file is not None:
        files.append(Path(vocab_file))
    stamps = [_stamp(p) for p in files if p.is_file()]
    payload = {"version": CONVERTER_VERSION, "format": source.fmt, "source": str(source.path.resolve()),
               "files": stamps}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _complete(entry: Path) -> bool:
    return all((entry / name).is_file() for name in ("config.json", "model.safetensors", "vocab.txt"))


def cached_conversion(src, cache_dir=None, *, vocab_file=None) -> Path:
    """A Hugging Face folder for ``src``: a Hugging Face source is returned as it is; a PaddleNLP or TensorFlow
    one is converted once into ``cache_dir`` (default `cache_root()`) and reused while its files are unchanged.

    Entries are named ``<source folder>-<key>``; when a source changes, its older entries are removed.
    Concurrent callers are safe: each converts into its own temporary folder and the first rename wins.
    """
    source = locate(src)
    if source.fmt == "hf":
        return source.folder
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    name = re.sub(r"[^\w.-]", "_", source.path.name if source.path.is_dir() else source.path.parent.name) or "model"
    entry = root / f"{name}-{cache_key(source, vocab_file)[:16]}"
    if _complete(entry):
        log.debug("using the cached conversion %s of %s", entry, src)
        return entry
    conversion = _prepare(source, vocab_file=vocab_file)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=root))
    except OSError as e:  # a read-only home must not stop training: convert for this process only
        log.warning("cannot write the conversion cache %s (%s); converting into a temporary folder instead "
                    "(set %s to a writable folder to keep conversions)", root, e.strerror or e, CACHE_ENV)
        tmp = Path(tempfile.mkdtemp(prefix="zhcls-converted-"))
        atexit.register(shutil.rmtree, tmp, True)
        _write_or_explain(conversion, tmp)
        return tmp
    try:
        _write_or_explain(conversion, tmp)
        if entry.exists() and not _complete(entry):  # a leftover without its files: never a valid entry
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not _complete(entry):  # not a concurrent conversion that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s (%s) into the cache: %s", src, FORMAT_NAMES[source.fmt], entry)
    _prune(root, entry, conversion.config["zhcls"]["converted_from"]["source"])
    return entry


def _write_or_explain(conversion: _Conversion, folder: Path) -> None:
    try:
        conversion.write(folder)
    except OSError as e:  # disk full, quota
        raise ZhclsError(f"cannot write the conversion into {folder.parent} ({e.strerror or e})") from None


def _prune(root: Path, keep: Path, source: str) -> None:
    """Remove older cache entries of the same source (its files changed since)."""
    prefix = keep.name.rsplit("-", 1)[0] + "-"
    for other in root.glob(f"{glob_escape(prefix)}*"):
        if other == keep or not other.is_dir():
            continue
        try:
            block = json.loads((other / "config.json").read_text(encoding="utf-8")).get("zhcls", {})
        except (OSError, ValueError, AttributeError):
            continue
        if block.get("converted_from", {}).get("source") == source:
            shutil.rmtree(other, ignore_errors=True)


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


# ---------------------------------------------------------------------------------------------------------------
# Inspection


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
    from .formats import tf as tf_format
    from .formats.tf_bundle import TFCheckpoint

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
    from .formats import paddle as paddle_format

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
        config = _read_json(source.folder / "config.json")
        encoder_config = EncoderConfig.from_dict(config)
    except (ZhclsError, TypeError) as e:
        info["problems"].append(str(e))
        return
    model_type = encoder_config.model_type
    names = {_normalise_names({k: None}, model_type).popitem()[0]: k for k in shapes}  # zhcls name -> stored name
    has_head = any(n.startswith("classifier.") for n in names)
    expected = _expected_shapes(encoder_config)
    if model_type == "electra" and not has_head:
        expected |= {k: None for k in _DISCRIMINATOR if k in names}
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


def _summarise(names: list[str], sep: str) -> str:
    """Long name lists in a line: optimizer slots and scopes are counted, not listed."""
    groups: Counter = Counter()
    for name in names:
        if name.endswith(("/adam_m", "/adam_v")):
            groups[f"*/{name.rsplit('/', 1)[1]}"] += 1
        elif sep in name:
            groups[name.split(sep, 1)[0] + sep + "*"] += 1
        else:
            groups[name] += 1
    return ", ".join(key if n == 1 and key in names else f"{key} ({n})" for key, n in groups.items())


def _names(names: list[str] | None, sep: str, limit: int = 8) -> str:
    if names is None:
        return "not known (see problems)"
    if not names:
        return "none"
    if len(names) <= limit:
        return ", ".join(names)
    return f"{len(names)}: {_summarise(names, sep)}"


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
