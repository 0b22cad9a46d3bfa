"""`zhcls export --triton_repo DIR`: a model repository for Triton Inference Server, in one of two forms.

``--triton_backend onnxruntime`` (the NGC Triton container, which has the onnxruntime backend):

    DIR/NAME/                 ensemble: text (BYTES) -> label (BYTES), score (FP32), one row per text
    DIR/NAME_tokenizer/       Python backend: zhcls's tokenizer and long-text cut, padded to max_seq_length
    DIR/NAME_onnx/            onnxruntime backend: the export's model.onnx, dynamic_batching on
    DIR/NAME_postprocess/     Python backend: softmax, the best label and its score for every row

``--triton_backend python`` (any Triton with the Python backend, PyTriton's bundled server included):

    DIR/NAME/                 Python backend: zhcls's ONNX Runtime predictor, the same inputs and outputs;
                              its version folder holds the export (model.onnx, config.json, vocabulary)

Both answer as `zhcls.load(export).predict` does, long-text policy included: the ensemble keeps one
row per text, so it takes truncate and head_tail and refuses sliding (a text's windows would need
pooling across rows); the python form runs predict() itself and takes all three. Run either with
``tritonserver --model-repository DIR`` where ``pip install zhcls`` (or zhcls's torch-free ONNX deps)
is importable by the Python backend. The ensemble pads to max_seq_length because Triton's dynamic
batcher merges only requests of one shape; the python form pads each batch to its longest text, as
`zhcls serve` does. Multi-class models only.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from zhcls.data.long_text import LongText
from zhcls.errors import ZhclsError
from zhcls.inference.onnx_predictor import INPUT_NAMES, OUTPUT_NAME, VARIANTS
from zhcls.io import atomic_dir, check_output_dir

MODELS_DIR = Path(__file__).resolve().parent / "triton_models"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
BACKENDS = ("onnxruntime", "python")


def _tensors(kind: str, tensors: list[tuple[str, str, list[int]]]) -> str:
    body = ",\n".join(f'  {{\n    name: "{n}"\n    data_type: {t}\n    dims: [ {", ".join(map(str, d))} ]\n  }}'
                      for n, t, d in tensors)
    return f"{kind} [\n{body}\n]\n"


def _config(name: str, backend: str | None, max_batch_size: int, inputs, outputs, extra: str = "") -> str:
    head = f'name: "{name}"\n' + (f'backend: "{backend}"\n' if backend else 'platform: "ensemble"\n')
    return head + f"max_batch_size: {max_batch_size}\n" + _tensors("input", inputs) + _tensors("output", outputs) + extra


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    maps = "".join(f'      input_map {{ key: "{k}" value: "{v}" }}\n' for k, v in inputs.items())
    maps += "".join(f'      output_map {{ key: "{k}" value: "{v}" }}\n' for k, v in outputs.items())
    return f'    {{\n      model_name: "{model}"\n      model_version: -1\n{maps}    }}'


ANSWERS = [("label", "TYPE_STRING", [1]), ("score", "TYPE_FP32", [1])]


def _text_inputs(pair: bool) -> list:
    return [("text", "TYPE_STRING", [1])] + ([("text_pair", "TYPE_STRING", [1])] if pair else [])


def _batching(max_delay_ms: float) -> str:
    return f"dynamic_batching {{\n  max_queue_delay_microseconds: {int(max_delay_ms * 1000)}\n}}\n"


def _group(instances: int) -> str:
    return f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_CPU\n  }}\n]\n"


def check_repo(meta: dict, repo_dir, *, backend: str = "onnxruntime", overwrite: bool = False, inputs=()) -> None:
    """Everything that would refuse the repository, from the model's ``zhcls`` block alone: `zhcls export
    --triton_repo` calls it with the checkpoint's before it writes the ONNX export."""
    if backend not in BACKENDS:
        raise ZhclsError(f"--triton_backend {backend}: choose one of {', '.join(BACKENDS)}")
    if meta.get("problem_type", "multi_class") != "multi_class":
        raise ZhclsError(f"--triton_repo: {meta['problem_type']} models are not supported (multi_class only); "
                         "serve them with `zhcls serve`")
    if backend == "onnxruntime" and LongText.from_meta(meta).policy == "sliding":
        raise ZhclsError("--triton_repo: the checkpoint's --long_text sliding pools windows across rows, which the "
                         "onnxruntime ensemble cannot; use --triton_backend python (predict() inside Triton)")
    check_output_dir(repo_dir, flag="--triton_repo", overwrite=overwrite, inputs=inputs)


def write_triton_repo(export_dir, repo_dir, *, name: str | None = None, max_batch_size: int = 32,
                      max_delay_ms: float = 2.0, variant: str = "fp32", instances: int = 1,
                      backend: str = "onnxruntime", overwrite: bool = False) -> Path:
    """The model repository for the export folder ``export_dir`` (from `zhcls export`), written atomically."""
    export_dir, repo_dir = Path(export_dir), Path(repo_dir)
    onnx_file = export_dir / VARIANTS.get(variant, "?")
    if not onnx_file.is_file():
        raise ZhclsError(f"{export_dir}: no {VARIANTS.get(variant, variant)}; --triton_repo needs an export folder "
                         "(zhcls export --output_path)")
    config = json.loads((export_dir / "config.json").read_text(encoding="utf-8"))
    meta = config.get("zhcls", {})
    check_repo(meta, repo_dir, backend=backend, overwrite=overwrite, inputs=[export_dir])
    long_text = LongText.from_meta(meta)
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    name = name or export_dir.resolve().name
    if backend == "python":
        return _write_python_repo(export_dir, repo_dir, name, labels, meta, max_batch_size=max_batch_size,
                                  max_delay_ms=max_delay_ms, variant=variant, instances=instances)
    settings = {"labels": labels, "task": meta.get("task", "text"), "max_seq_length": meta.get("max_seq_length", 128),
                "long_text": long_text.to_meta(), "text_prefix": meta.get("text_prefix", "")}
    length, pair = settings["max_seq_length"], settings["task"] == "pair"
    text_inputs, answers = _text_inputs(pair), ANSWERS
    ids = [(n, "TYPE_INT64", [length]) for n in INPUT_NAMES]
    batching, group = _batching(max_delay_ms), _group(instances)
    models = {
        f"{name}_tokenizer": (_config(f"{name}_tokenizer", "python", max_batch_size, text_inputs, ids, batching + group),
                              "tokenizer.py"),
        f"{name}_onnx": (_config(f"{name}_onnx", "onnxruntime", max_batch_size, ids,
                                 [(OUTPUT_NAME, "TYPE_FP32", [len(labels)])], batching + group), None),
        f"{name}_postprocess": (_config(f"{name}_postprocess", "python", max_batch_size,
                                        [(OUTPUT_NAME, "TYPE_FP32", [len(labels)])], answers, group), "postprocess.py"),
    }
    steps = [_step(f"{name}_tokenizer", {n: n for n, _, _ in text_inputs}, {n: n for n in INPUT_NAMES}),
             _step(f"{name}_onnx", {n: n for n in INPUT_NAMES}, {OUTPUT_NAME: OUTPUT_NAME}),
             _step(f"{name}_postprocess", {OUTPUT_NAME: OUTPUT_NAME}, {"label": "label", "score": "score"})]
    ensemble = _config(name, None, max_batch_size, text_inputs, answers,
                       "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n")
    with atomic_dir(repo_dir) as tmp:
        for model, (text, source) in models.items():
            version = tmp / model / "1"
            version.mkdir(parents=True)
            (tmp / model / "config.pbtxt").write_text(text, encoding="utf-8")
            if source:
                shutil.copy(MODELS_DIR / source, version / "model.py")
                (version / "zhcls.json").write_text(json.dumps(settings, ensure_ascii=False, indent=1), encoding="utf-8")
            else:
                shutil.copy(onnx_file, version / "model.onnx")
        for f in TOKENIZER_FILES:
            if (export_dir / f).exists():
                shutil.copy(export_dir / f, tmp / f"{name}_tokenizer" / "1" / f)
        (tmp / name / "1").mkdir(parents=True)  # an ensemble still needs its version folder
        (tmp / name / "config.pbtxt").write_text(ensemble, encoding="utf-8")
    return repo_dir


def _write_python_repo(export_dir: Path, repo_dir: Path, name: str, labels: list, meta: dict, *, max_batch_size: int,
                       max_delay_ms: float, variant: str, instances: int) -> Path:
    """One Python model running zhcls's ONNX Runtime predictor over the export's files (its version folder)."""
    pair = meta.get("task", "text") == "pair"
    config = _config(name, "python", max_batch_size, _text_inputs(pair), ANSWERS,
                     _batching(max_delay_ms) + _group(instances))
    # Each instance runs one predict() at a time: one intra-op thread per core it may use.
    settings = {"variant": variant, "batch_size": max_batch_size, "threads": 0}
    with atomic_dir(repo_dir) as tmp:
        version = tmp / name / "1"
        version.mkdir(parents=True)
        (tmp / name / "config.pbtxt").write_text(config, encoding="utf-8")
        shutil.copy(MODELS_DIR / "classifier.py", version / "model.py")
        (version / "zhcls.json").write_text(json.dumps(settings, indent=1), encoding="utf-8")
        for f in {VARIANTS["fp32"], VARIANTS[variant], "config.json", "label.txt", *TOKENIZER_FILES}:
            if (export_dir / f).exists():
                shutil.copy(export_dir / f, version / f)
    return repo_dir
