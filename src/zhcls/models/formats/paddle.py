"""PaddleNLP checkpoints (``model_state.pdparams`` + config) -> transformers config and state dict.

Neither Paddle nor torch is needed: a ``.pdparams`` file is a pickle of numpy arrays, read here by
an unpickler that can build numpy arrays and nothing else, so a hostile file cannot run code.
Covers PaddleNLP's ERNIE (1.0 / 3.0), BERT and ELECTRA, bare or ``*ForSequenceClassification``.
"""
from __future__ import annotations

import json
import logging
import pickle
import re
from pathlib import Path

import numpy as np

from zhcls.errors import ZhclsError, data_error

try:  # numpy >= 2 (and the 1.26 compatibility shim)
    from numpy._core import multiarray as _multiarray
except ImportError:  # older numpy 1.x
    from numpy.core import multiarray as _multiarray

log = logging.getLogger("zhcls")

PDPARAMS = "model_state.pdparams"
CONFIG_FILES = ("config.json", "model_config.json")  # new PaddleNLP layout, then the pre-2.5 one
BOOKKEEPING_KEY = "StructuredToParameterName@@"  # paddle.save's name map, not a tensor
SUPPORTED = {"bert": "Bert", "ernie": "Ernie", "electra": "Electra"}

# The only globals a .pdparams pickle needs: numpy's array and scalar reconstruction. Files written
# under numpy 1.x name numpy.core.multiarray, numpy 2 writes numpy._core.multiarray.
_ALLOWED_GLOBALS = {
    **{(module, name): getattr(_multiarray, name)
       for module in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

# One Paddle nn.TransformerEncoderLayer (post-norm) -> one transformers BertLayer.
_EMBEDDING, _NORM, _LINEAR = "embedding", "norm", "linear"
_LAYER = (
    ("self_attn.q_proj", "attention.self.query", _LINEAR),
    ("self_attn.k_proj", "attention.self.key", _LINEAR),
    ("self_attn.v_proj", "attention.self.value", _LINEAR),
    ("self_attn.out_proj", "attention.output.dense", _LINEAR),
    ("norm1", "attention.output.LayerNorm", _NORM),
    ("linear1", "intermediate.dense", _LINEAR),
    ("linear2", "output.dense", _LINEAR),
    ("norm2", "output.LayerNorm", _NORM),
)


class _ArrayUnpickler(pickle.Unpickler):
    """Builds dicts, lists, tuples, strings, numbers and numpy arrays; refuses every other global."""

    def __init__(self, file, source: Path):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ZhclsError(f"refusing to unpickle {module}.{name} from {self.source}: "
                             "not a plain array checkpoint") from None


def is_paddle_dir(path) -> bool:
    """True for a folder holding PaddleNLP weights (``model_state.pdparams``)."""
    return (Path(path) / PDPARAMS).is_file()


def load_pdparams(path) -> dict[str, np.ndarray]:
    """``{structured name: array}`` of a ``.pdparams`` file (or of the one in folder ``path``), as stored."""
    path = Path(path)
    if path.is_dir():
        path = path / PDPARAMS
    try:
        with open(path, "rb") as f:
            state = _ArrayUnpickler(f, path).load()
    except ZhclsError:
        raise
    except OSError as e:
        raise data_error(path, None, f"cannot read: {e.strerror or e}") from None
    except Exception as e:  # a truncated or foreign file can make the unpickler raise almost anything
        reason = " ".join(f"{type(e).__name__}: {e}".split())  # some messages span lines; the CLI prints one
        raise data_error(path, None, f"not a readable .pdparams pickle, truncated or corrupt? ({reason})") from None
    if not isinstance(state, dict):
        raise data_error(path, None, f"holds a {type(state).__name__}, not a dict of arrays: not a plain array checkpoint")
    state.pop(BOOKKEEPING_KEY, None)
    for name, value in state.items():
        if not (isinstance(name, str) and isinstance(value, np.ndarray) and value.dtype.kind in "biuf"):
            raise data_error(path, None, f"entry {name!r} is not a numeric array: not a plain array checkpoint")
    return state


def convert_paddle(path) -> tuple[dict, dict[str, np.ndarray]]:
    """(transformers config dict, state dict with transformers names) of a PaddleNLP model folder.

    Tensors the transformers model has no place for are left out and logged; `unused_paddle_names`
    lists them.
    """
    config, state, unused = _convert(Path(path))
    if unused:
        log.warning("unused tensors in %s: %s%s", Path(path) / PDPARAMS, ", ".join(unused[:8]),
                    f" and {len(unused) - 8} more" if len(unused) > 8 else "")
    return config, state


def unused_paddle_names(path) -> list[str]:
    """Sorted names of the tensors in a PaddleNLP folder that `convert_paddle` leaves out."""
    return _convert(Path(path))[2]


def _convert(folder: Path) -> tuple[dict, dict[str, np.ndarray], list[str]]:
    params = load_pdparams(folder / PDPARAMS)
    pd_config, config_file = _read_config(folder)
    model_type = _model_type(pd_config, params, config_file)
    architecture = (pd_config.get("architectures") or [None])[0]
    # A checkpoint saved from the bare model has no "ernie." prefix; one from a task model has.
    prefix = f"{model_type}." if any(k.startswith(f"{model_type}.") for k in params) else ""
    # A token-classification or QA head is also called "classifier": keep it only for sequence classifiers.
    has_head = any(k.startswith("classifier.") for k in params) and (
        architecture is None or architecture.endswith("ForSequenceClassification"))
    num_layers = len({m.group(1) for k in params if (m := re.match(rf"{re.escape(prefix)}encoder\.layers\.(\d+)\.", k))})
    if num_layers == 0:
        raise data_error(folder / PDPARAMS, None, f"no {prefix}encoder.layers.* tensors: not a {model_type} checkpoint")

    def shape(name: str) -> tuple[int, ...]:
        if name not in params:
            raise data_error(folder / PDPARAMS, None, f"missing tensor {name}")
        return params[name].shape

    vocab_size, embedding_size = shape(f"{prefix}embeddings.word_embeddings.weight")
    hidden_size = shape(f"{prefix}encoder.layers.0.norm1.weight")[0]
    use_task_id = model_type == "ernie" and bool(pd_config.get("use_task_id", False))
    if "num_attention_heads" not in pd_config:
        raise data_error(config_file, None, "num_attention_heads missing")
    hidden_act = pd_config.get("hidden_act", "gelu")
    if model_type != "electra" and pd_config.get("pool_act", "tanh") != "tanh":
        raise data_error(config_file, None, f"pool_act {pd_config['pool_act']!r}: transformers' pooler is always tanh")
    if model_type == "electra" and has_head and hidden_act != "gelu":
        # Newer PaddleNLP applies hidden_act between the head's two layers; transformers always gelu.
        raise data_error(config_file, None, f"ELECTRA classifier with hidden_act {hidden_act!r}: "
                         "transformers' ElectraClassificationHead always uses gelu, the logits would differ")

    config = {
        "model_type": model_type,
        "architectures": [SUPPORTED[model_type] + ("ForSequenceClassification" if has_head else "Model")],
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": pd_config["num_attention_heads"],
        "intermediate_size": shape(f"{prefix}encoder.layers.0.linear1.weight")[1],
        "hidden_act": hidden_act,
        "hidden_dropout_prob": pd_config.get("hidden_dropout_prob", 0.1),
        "attention_probs_dropout_prob": pd_config.get("attention_probs_dropout_prob", 0.1),
        "max_position_embeddings": shape(f"{prefix}embeddings.position_embeddings.weight")[0],
        "type_vocab_size": shape(f"{prefix}embeddings.token_type_embeddings.weight")[0],
        "initializer_range": pd_config.get("initializer_range", 0.02),
        # PaddleNLP's _init_weights resets every LayerNorm epsilon when the model is built, whatever
        # the layer was created with: BERT takes config.layer_norm_eps, ERNIE and ELECTRA hard-code 1e-12.
        "layer_norm_eps": pd_config.get("layer_norm_eps", 1e-12) if model_type == "bert" else 1e-12,
        "pad_token_id": pd_config.get("pad_token_id", 0),
    }
    if model_type == "ernie":
        config["use_task_id"] = use_task_id
        if use_task_id:
            config["task_type_vocab_size"] = shape(f"{prefix}embeddings.task_type_embeddings.weight")[0]
    if model_type == "electra":
        config["embedding_size"] = embedding_size
    if has_head:
        num_labels = shape("classifier.out_proj.weight" if model_type == "electra" else "classifier.weight")[1]
        config.update(_labels(pd_config, num_labels))
        if "classifier_dropout" in pd_config:
            config["classifier_dropout"] = pd_config["classifier_dropout"]

    plan = _name_plan(model_type, prefix, num_layers, use_task_id, embedding_size != hidden_size, has_head)
    missing = [p for p, _, _ in plan if p not in params]
    if missing:
        raise data_error(folder / PDPARAMS, None, f"missing {len(missing)} tensor(s) for {config['architectures'][0]}, "
                         f"e.g. {', '.join(missing[:3])}")
    state = {hf: _to_torch_layout(params[p], transpose) for p, hf, transpose in plan}
    if use_task_id:
        _move_task_row_first(state, pd_config.get("task_id", 0))
    used = {p for p, _, _ in plan}
    return config, state, sorted(k for k in params if k not in used)


def _read_config(folder: Path) -> tuple[dict, Path]:
    """The folder's PaddleNLP config as one flat dict, and the file it came from."""
    for name in CONFIG_FILES:
        path = folder / name
        if path.is_file():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise data_error(path, None, f"not readable JSON ({e})") from None
            if not isinstance(raw, dict):
                raise data_error(path, None, "not a JSON object")
            return _flatten_legacy(raw), path
    raise data_error(folder, None, f"{PDPARAMS} without config.json or model_config.json beside it")


def _flatten_legacy(raw: dict) -> dict:
    """Lift the backbone's arguments of an old ``{"init_args": [...], "init_class": ...}`` config to the top.

    A task model saved by PaddleNLP < 2.5 keeps its own arguments (num_classes, dropout) at the top
    and the backbone's under ``init_args`` (or under a keyword such as ``"ernie"``), each with its
    own ``init_class``. The outer values win, as in PaddleNLP's own conversion.
    """
    config = {k: v for k, v in raw.items() if k != "init_args"}
    nested = [a for a in raw.get("init_args", []) if isinstance(a, dict)]
    nested += [v for v in raw.values() if isinstance(v, dict) and "init_class" in v]
    for backbone in nested:
        for key, value in backbone.items():
            config.setdefault(key, value)
    if "architectures" not in config and "init_class" in config:
        config["architectures"] = [config["init_class"]]
    if "num_labels" not in config and "num_classes" in config:
        config["num_labels"] = config["num_classes"]
    return config


def _model_type(pd_config: dict, params: dict, config_file: Path) -> str:
    """bert / ernie / electra, from the config's model_type, else its class name, else the tensor names."""
    model_type = pd_config.get("model_type")
    architecture = (pd_config.get("architectures") or [""])[0]
    if not model_type and (m := re.fullmatch(r"(Bert|Ernie|Electra)(Model|For[A-Za-z]+|Discriminator)", architecture)):
        model_type = m.group(1).lower()
    if not model_type:
        model_type = next((t for t in SUPPORTED if any(k.startswith(f"{t}.") for k in params)), None)
    if model_type not in SUPPORTED:
        raise data_error(config_file, None, f"model type {model_type or architecture or 'unknown'!r} is not supported "
                         f"(supported: {', '.join(SUPPORTED)})")
    return model_type


def _labels(pd_config: dict, num_labels: int) -> dict:
    """num_labels / id2label / label2id; the classifier's width wins over a config that disagrees."""
    id2label = pd_config.get("id2label") or {}
    if len(id2label) != num_labels:
        id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
    id2label = {str(i): label for i, label in id2label.items()}
    return {"num_labels": num_labels, "id2label": id2label, "label2id": {label: int(i) for i, label in id2label.items()}}


def _name_plan(model_type: str, prefix: str, num_layers: int, use_task_id: bool, has_projection: bool,
               has_head: bool) -> list[tuple[str, str, bool]]:
    """(Paddle name, transformers name, transpose?) of every tensor the transformers model expects."""
    modules = [(f"embeddings.{n}", f"embeddings.{n}", _EMBEDDING)
               for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
    if use_task_id:
        modules.append(("embeddings.task_type_embeddings", "embeddings.task_type_embeddings", _EMBEDDING))
    modules.append(("embeddings.layer_norm", "embeddings.LayerNorm", _NORM))
    if has_projection:  # ELECTRA with embedding_size != hidden_size
        modules.append(("embeddings_project", "embeddings_project", _LINEAR))
    for i in range(num_layers):
        modules += [(f"encoder.layers.{i}.{p}", f"encoder.layer.{i}.{hf}", kind) for p, hf, kind in _LAYER]
    if model_type != "electra":
        modules.append(("pooler.dense", "pooler.dense", _LINEAR))
    modules = [(prefix + p, f"{model_type}.{hf}", kind) for p, hf, kind in modules]
    if has_head:
        # Same names on both sides: BERT/ERNIE a single Linear, ELECTRA dense -> gelu -> out_proj.
        heads = ("classifier.dense", "classifier.out_proj") if model_type == "electra" else ("classifier",)
        modules += [(h, h, _LINEAR) for h in heads]
    plan = []
    for paddle_module, hf_module, kind in modules:
        plan.append((f"{paddle_module}.weight", f"{hf_module}.weight", kind == _LINEAR))
        if kind != _EMBEDDING:
            plan.append((f"{paddle_module}.bias", f"{hf_module}.bias", False))
    return plan


def _to_torch_layout(array: np.ndarray, transpose: bool) -> np.ndarray:
    """Paddle's Linear weight is [in, out], torch's [out, in]; bfloat16 arrives as raw uint16 bits."""
    if array.dtype == np.uint16:  # paddle.save writes bfloat16 tensors as their uint16 bit patterns
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return np.ascontiguousarray(array.T if transpose else array)


def _move_task_row_first(state: dict[str, np.ndarray], task_id: int) -> None:
    """Put task_type_embeddings[task_id] in row 0, the row transformers (and zhcls) add by default.

    PaddleNLP adds the row of ``config.task_id`` at every position when no task_type_ids are given.
    """
    if task_id:
        name = "ernie.embeddings.task_type_embeddings.weight"
        rows = state[name].copy()
        rows[[0, task_id]] = rows[[task_id, 0]]
        state[name] = rows
