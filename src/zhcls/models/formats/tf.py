"""Convert TensorFlow 1.x BERT-family (CLUE, google-research/bert) and ELECTRA (HFL, google-research/electra)
checkpoints into the transformers layout: a config dict and a state dict named like BertForSequenceClassification
/ ElectraForPreTraining / ElectraForSequenceClassification (``bert.*`` / ``electra.*`` backbone plus heads).

Fine-tuned heads:

- BERT ``run_classifier.py``: ``output_weights [num_labels, H]`` / ``output_bias`` -> ``classifier.weight/bias``
  (applied to the pooler output, exactly like BertForSequenceClassification).
- ELECTRA ``run_finetuning.py``: ``task_specific/<task>/dense`` -> ``classifier.out_proj.weight/bias`` with
  config ``"classifier_type": "linear"``: the head is ONE dense layer on the [CLS] hidden state. transformers'
  ElectraClassificationHead is dense + gelu + out_proj, which cannot represent it, so there is deliberately no
  ``classifier.dense``; a model must apply ``out_proj`` to the [CLS] state directly when it sees this key.
- ELECTRA ``discriminator_predictions`` -> ElectraForPreTraining's ``discriminator_predictions.*``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from zhcls.errors import ZhclsError
from zhcls.models.formats.tf_bundle import TensorInfo, TFCheckpoint, looks_like_index

# "gelu" is the tanh approximation in bert's modeling.py but the exact erf in electra's; transformers' names.
_ACTIVATIONS = {
    "bert": {"gelu": "gelu_new", "relu": "relu", "tanh": "tanh", "linear": "linear"},
    "electra": {"gelu": "gelu", "relu": "relu", "tanh": "tanh", "linear": "linear"},
}
_LINEARS = ("attention/self/query", "attention/self/key", "attention/self/value", "attention/output/dense",
            "intermediate/dense", "output/dense")
_NORMS = ("attention/output/LayerNorm", "output/LayerNorm")
_SKIP_PREFIXES = ("cls/", "generator/", "generator_predictions/")  # pretraining heads, ELECTRA's generator
_TASK_KERNEL = re.compile(r"task_specific/([^/]+)/dense/kernel")

# name in transformers -> (name in TF, transpose?, expected TF shape)
_Plan = dict[str, tuple[str, bool, tuple[int, ...]]]


def is_tf_dir(path: str | Path) -> bool:
    """True for a folder holding a TensorFlow checkpoint index."""
    path = Path(path)
    return path.is_dir() and any(looks_like_index(p) for p in path.glob("*.index"))


def _family(ckpt: TFCheckpoint) -> str:
    tensors = ckpt.tensors()
    found = [s for s in ("bert", "electra") if f"{s}/embeddings/word_embeddings" in tensors]
    if len(found) != 1:
        raise ZhclsError(f"{ckpt.index_path}: not a BERT or ELECTRA checkpoint (expected exactly one of "
                         f"bert/embeddings/word_embeddings, electra/embeddings/word_embeddings)")
    return found[0]


def _find_config(folder: Path, family: str) -> Path:
    """bert_config.json (CLUE, google) or HFL's *discriminator_config.json / discriminator.json, else config.json."""
    if family == "bert":
        found = [p for p in [folder / "bert_config.json"] if p.is_file()]
    else:
        found = sorted(p for p in folder.glob("*.json")
                       if p.name == "discriminator.json" or p.name.endswith("discriminator_config.json"))
    found = found or [p for p in [folder / "config.json"] if p.is_file()]
    if len(found) != 1:
        what = ", ".join(p.name for p in found) if found else "none found"
        wanted = "bert_config.json" if family == "bert" else "*discriminator_config.json or discriminator.json"
        raise ZhclsError(f"{folder}: need exactly one {wanted} beside the checkpoint ({what}); pass config_path")
    return found[0]


def _read_json(path: Path) -> dict:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ZhclsError(f"{path}: cannot read ({e.strerror})") from e
    except ValueError as e:
        raise ZhclsError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ZhclsError(f"{path}: expected a JSON object")
    return raw


def _build_config(family: str, raw: dict, config_path: Path, ckpt: TFCheckpoint) -> dict:
    """A transformers config. Sizes come from the checkpoint's shapes and must agree with the config file, so
    that e.g. HFL's generator config picked by mistake is caught here, not in load_state_dict."""
    tensors = ckpt.tensors()

    def dim(name: str, axis: int) -> int:
        shape = tensors[f"{family}/{name}"].shape if f"{family}/{name}" in tensors else ()
        if len(shape) != 2:
            raise ZhclsError(f"{ckpt.index_path}: {family}/{name} is missing or not a matrix")
        return shape[axis]

    layers = {int(m.group(1)) for n in tensors if (m := re.match(rf"{family}/encoder/layer_(\d+)/", n))}
    sizes = {
        "vocab_size": dim("embeddings/word_embeddings", 0),
        "hidden_size": dim("encoder/layer_0/attention/self/query/kernel", 1),
        "num_hidden_layers": max(layers) + 1,
        "intermediate_size": dim("encoder/layer_0/intermediate/dense/kernel", 1),
        "max_position_embeddings": dim("embeddings/position_embeddings", 0),
        "type_vocab_size": dim("embeddings/token_type_embeddings", 0),
    }
    if family == "electra":
        sizes["embedding_size"] = dim("embeddings/word_embeddings", 1)
    for key, value in sizes.items():
        if key in raw and raw[key] != value:
            raise ZhclsError(f"{config_path}: {key}={raw[key]} but the checkpoint has {value}")
    heads = raw.get("num_attention_heads")
    if not isinstance(heads, int) or heads < 1 or sizes["hidden_size"] % heads:
        raise ZhclsError(f"{config_path}: num_attention_heads={heads!r} does not divide "
                         f"hidden_size={sizes['hidden_size']}")
    act = raw.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS[family]:
        raise ZhclsError(f"{config_path}: unsupported hidden_act {act!r}")
    # The CLUE extras (pooler_*, directionality) and HFL's summary_*/output_past mean nothing to the model.
    return {
        "model_type": family,
        **sizes,
        "num_attention_heads": heads,
        "hidden_act": _ACTIVATIONS[family][act],
        "hidden_dropout_prob": raw.get("hidden_dropout_prob", 0.1),
        "attention_probs_dropout_prob": raw.get("attention_probs_dropout_prob", 0.1),
        "initializer_range": raw.get("initializer_range", 0.02),
        "layer_norm_eps": 1e-12,  # what both TF codebases use
        "pad_token_id": 0,
    }


def _linear(hf: str, tf: str, n_in: int, n_out: int) -> _Plan:
    """A dense layer: TF kernels are [in, out], nn.Linear weights [out, in]."""
    return {f"{hf}.weight": (f"{tf}/kernel", True, (n_in, n_out)), f"{hf}.bias": (f"{tf}/bias", False, (n_out,))}


def _norm(hf: str, tf: str, n: int) -> _Plan:
    return {f"{hf}.weight": (f"{tf}/gamma", False, (n,)), f"{hf}.bias": (f"{tf}/beta", False, (n,))}


def _backbone_plan(family: str, config: dict) -> _Plan:
    """Every tensor the transformers backbone needs, with its TF name and expected TF shape."""
    s, hidden, inter = family, config["hidden_size"], config["intermediate_size"]
    emb = config.get("embedding_size", hidden)
    plan: _Plan = {}
    for kind, rows in (("word", "vocab_size"), ("position", "max_position_embeddings"),
                       ("token_type", "type_vocab_size")):
        plan[f"{s}.embeddings.{kind}_embeddings.weight"] = (f"{s}/embeddings/{kind}_embeddings", False,
                                                            (config[rows], emb))
    plan |= _norm(f"{s}.embeddings.LayerNorm", f"{s}/embeddings/LayerNorm", emb)
    if emb != hidden:  # ELECTRA-small style factorised embeddings
        plan |= _linear(f"{s}.embeddings_project", f"{s}/embeddings_project", emb, hidden)
    for i in range(config["num_hidden_layers"]):
        hf, tf = f"{s}.encoder.layer.{i}", f"{s}/encoder/layer_{i}"
        for part in _LINEARS:
            n_in, n_out = {"intermediate/dense": (hidden, inter), "output/dense": (inter, hidden)}.get(
                part, (hidden, hidden))
            plan |= _linear(f"{hf}.{part.replace('/', '.')}", f"{tf}/{part}", n_in, n_out)
        for part in _NORMS:
            plan |= _norm(f"{hf}.{part.replace('/', '.')}", f"{tf}/{part}", hidden)
    if family == "bert":  # ELECTRA has no pooler: its "pooled output" is the [CLS] state
        plan |= _linear(f"{s}.pooler.dense", f"{s}/pooler/dense", hidden, hidden)
    return plan


def _head_plan(family: str, config: dict, tensors: dict[str, TensorInfo]) -> _Plan:
    """Heads present in the checkpoint; sets num_labels / classifier_type / architectures in ``config``."""
    plan: _Plan = {}
    hidden = config["hidden_size"]
    arch = "BertModel" if family == "bert" else "ElectraModel"
    if family == "bert" and "output_weights" in tensors:
        labels = (tensors["output_weights"].shape or (0,))[0]
        # run_classifier computes pooled @ output_weights^T: already the [out, in] layout of nn.Linear.
        plan["classifier.weight"] = ("output_weights", False, (labels, hidden))
        plan["classifier.bias"] = ("output_bias", False, (labels,))
        config["num_labels"], arch = labels, "BertForSequenceClassification"
    if family == "electra":
        disc = (_linear("discriminator_predictions.dense", "discriminator_predictions/dense", hidden, hidden)
                | _linear("discriminator_predictions.dense_prediction", "discriminator_predictions/dense_1",
                          hidden, 1))
        if all(tf in tensors for tf, _, _ in disc.values()):  # a partial head is left out and reported unused
            plan |= disc
            arch = "ElectraForPreTraining"
        tasks = sorted({m.group(1) for n in tensors if (m := _TASK_KERNEL.fullmatch(n))})
        if len(tasks) == 1:  # with several tasks there is no single classifier to pick: reported as unused
            head = f"task_specific/{tasks[0]}/dense"
            labels = (tensors[f"{head}/kernel"].shape or (0,))[-1]
            plan |= _linear("classifier.out_proj", head, hidden, labels)  # no classifier.dense: see module doc
            config.update(num_labels=labels, classifier_type="linear")
            arch = "ElectraForSequenceClassification"
    config["architectures"] = [arch]
    return plan


def _is_skipped(name: str) -> bool:
    """Tensors that are deliberately not converted: optimizer state and pretraining-only parts."""
    return name.endswith(("/adam_m", "/adam_v")) or name == "global_step" or name.startswith(_SKIP_PREFIXES)


def _plan(ckpt: TFCheckpoint, config_path: str | Path | None) -> tuple[dict, _Plan, dict[str, list[str]]]:
    """(config, plan for the tensors present, report) from the index and the config file only."""
    tensors = ckpt.tensors()
    family = _family(ckpt)
    path = Path(config_path) if config_path is not None else _find_config(ckpt.prefix.parent, family)
    config = _build_config(family, _read_json(path), path, ckpt)
    plan = _backbone_plan(family, config) | _head_plan(family, config, tensors)
    used = {tf for tf, _, _ in plan.values()}
    report = {
        "missing": [tf for tf, _, _ in plan.values() if tf not in tensors],
        "unused": [n for n in tensors if n not in used and not _is_skipped(n)],
        "skipped": [n for n in tensors if n not in used and _is_skipped(n)],
    }
    wrong = [f"{tf} {list(tensors[tf].shape)} (expected {list(shape)})"
             for tf, _, shape in plan.values() if tf in tensors and tensors[tf].shape != shape]
    if wrong:
        raise ZhclsError(f"{ckpt.index_path}: tensor shapes do not match {path.name}: {'; '.join(wrong[:3])}")
    return config, {hf: v for hf, v in plan.items() if v[0] in tensors}, report


def unused_tensors(path: str | Path, config_path: str | Path | None = None) -> dict[str, list[str]]:
    """What conversion would leave out, from the index alone (works without the data files):
    ``unused`` (not recognised), ``skipped`` (optimizer slots, global_step, cls/*, generator*) and ``missing``
    (TF names the transformers model needs but the checkpoint lacks)."""
    return _plan(TFCheckpoint(path), config_path)[2]


def convert_tf(path: str | Path, config_path: str | Path | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """(transformers config dict, float32 state dict) from a TF checkpoint folder / prefix / .index path.

    ``config_path`` defaults to the bert_config.json / HFL discriminator config beside the checkpoint.
    """
    ckpt = TFCheckpoint(path)
    config, plan, report = _plan(ckpt, config_path)
    if report["missing"]:
        shown = ", ".join(report["missing"][:5])
        raise ZhclsError(f"{ckpt.index_path}: {len(report['missing'])} tensor(s) the model needs are missing: "
                         f"{shown}")
    state = {}
    for hf, (tf, transpose, _) in plan.items():
        value = ckpt.read(tf)
        if value.dtype.kind != "f":
            raise ZhclsError(f"{ckpt.index_path}: tensor {tf!r} is {value.dtype}, expected floating point")
        value = value.astype(np.float32, copy=False)  # fp16 / fp64 checkpoints: the toolkit computes in float32
        state[hf] = np.ascontiguousarray(value.T) if transpose else value
    return config, state
