"""`zhcls export --triton_repo`: the Python models' execute() on batched requests, run here with a minimal
stand-in for Triton's `triton_python_backend_utils` and ONNX Runtime between them, must give
`zhcls.load(export).predict`'s answers for every row; the ensemble's tensor names, types and shapes agree."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from test_export import tiny_checkpoint
from zhcls.data.long_text import LongText
from zhcls.deploy.export import export
from zhcls.deploy.triton_repo import write_triton_repo
from zhcls.errors import ZhclsError
from zhcls.inference.loading import load


class Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, array

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class InferenceRequest:
    def __init__(self, tensors):
        self.tensors = {t.name(): t for t in tensors}


class InferenceResponse:
    def __init__(self, output_tensors, error=None):
        self.tensors = {t.name(): t.as_numpy() for t in output_tensors}


def stand_in():
    """What the two models use of Triton's Python backend utilities."""
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor, module.InferenceResponse = Tensor, InferenceResponse
    module.get_input_tensor_by_name = lambda request, name: request.tensors.get(name)
    return module


def python_model(path, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stand_in())
    spec = importlib.util.spec_from_file_location(f"model_{path.parent.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({"model_config": "{}"})
    return model


@pytest.fixture(scope="module")
def repo(shared, tmp_path_factory):
    root = tmp_path_factory.mktemp("triton")
    checkpoint = tiny_checkpoint(root / "ckpt", shared, "ernie")
    export(checkpoint, root / "kuake", progress=False)
    return root / "kuake", write_triton_repo(root / "kuake", root / "repo", max_batch_size=16, max_delay_ms=3)


@pytest.fixture(scope="module")
def texts(shared):
    lines = (shared / "data" / "kuake_qic" / "dev.txt").read_text(encoding="utf-8").splitlines()[:6]
    return [line.rsplit("\t", 1)[0] for line in lines]


def test_python_models_answer_every_row_of_a_batch(repo, texts, monkeypatch):
    export_dir, repo_dir = repo
    tokenizer = python_model(repo_dir / "kuake_tokenizer" / "1" / "model.py", monkeypatch)
    postprocess = python_model(repo_dir / "kuake_postprocess" / "1" / "model.py", monkeypatch)
    session = ort.InferenceSession(str(repo_dir / "kuake_onnx" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    # Three client requests merged into one batch by Triton: 3, 1 and 2 rows.
    sizes = [3, 1, 2]
    starts = np.cumsum([0] + sizes)
    requests = [InferenceRequest([Tensor("text", np.array([[t.encode()] for t in texts[a:b]], dtype=object))])
                for a, b in zip(starts, starts[1:])]
    encoded = tokenizer.execute(requests)
    assert len(encoded) == 3 and [r.tensors["input_ids"].shape for r in encoded] == [(n, 64) for n in sizes]
    logits = [InferenceRequest([Tensor("logits", session.run(["logits"], r.tensors)[0])]) for r in encoded]
    answers = postprocess.execute(logits)
    labels = [x[0].decode() for r in answers for x in r.tensors["label"]]
    scores = np.concatenate([r.tensors["score"][:, 0] for r in answers])
    expected = load(export_dir, backend="onnx", device="cpu").predict(texts)
    assert labels == [e["label"] for e in expected]
    assert scores == pytest.approx([e["score"] for e in expected], abs=1e-5)


@pytest.fixture(scope="module")
def policy_exports(shared, tmp_path_factory):
    """Exports of checkpoints that store the head_tail and the sliding long-text policies."""
    root = tmp_path_factory.mktemp("triton_policies")
    checkpoint = tiny_checkpoint(root / "ckpt", shared, "ernie")
    folders = {}
    for policy in ("head_tail", "sliding"):
        source = root / f"ckpt_{policy}"
        shutil.copytree(checkpoint, source)
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        config["zhcls"]["long_text"] = {"policy": policy, "stride": 0, "pooling": "mean"}
        (source / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
        export(source, root / f"kuake_{policy}", progress=False)
        folders[policy] = source, root / f"kuake_{policy}"
    return folders


def test_ensemble_cuts_long_texts_by_the_checkpoints_policy(policy_exports, texts, tmp_path, monkeypatch):
    """head_tail: the ensemble's tokenizer step keeps a long text's start and end as predict() does (it
    used to truncate, so Triton answered otherwise); the answers equal predict()'s for long texts."""
    _, export_dir = policy_exports["head_tail"]
    repo_dir = write_triton_repo(export_dir, tmp_path / "repo")
    tokenizer = python_model(repo_dir / "kuake_head_tail_tokenizer" / "1" / "model.py", monkeypatch)
    postprocess = python_model(repo_dir / "kuake_head_tail_postprocess" / "1" / "model.py", monkeypatch)
    session = ort.InferenceSession(str(repo_dir / "kuake_head_tail_onnx" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    long_texts = ["".join(texts[i:] + texts[:i]) * 3 for i in range(4)] + texts[:2]  # 4 far over 64 tokens
    request = InferenceRequest([Tensor("text", np.array([[t.encode()] for t in long_texts], dtype=object))])
    encoded = tokenizer.execute([request])[0]
    answers = postprocess.execute([InferenceRequest([Tensor("logits", session.run(["logits"], encoded.tensors)[0])])])[0]
    expected = load(export_dir, backend="onnx", device="cpu").predict(long_texts)
    assert [x[0].decode() for x in answers.tensors["label"]] == [e["label"] for e in expected]
    assert answers.tensors["score"][:, 0] == pytest.approx([e["score"] for e in expected], abs=1e-5)
    truncating = load(export_dir, backend="onnx", device="cpu")
    truncating.long_text = LongText()  # what the ensemble answered before: a different answer, so this test tells
    truncated = truncating.predict(long_texts)
    assert [e["score"] for e in truncated] != pytest.approx([e["score"] for e in expected], abs=1e-5)


def test_sliding_needs_the_python_form(policy_exports, texts, tmp_path, monkeypatch):
    """sliding pools a text's windows: the ensemble (one row per text) refuses it in one line, via the CLI
    too; the python form runs predict() itself, and answers as it does for every row of a batch."""
    source, export_dir = policy_exports["sliding"]
    with pytest.raises(ZhclsError, match="--triton_backend python") as refused:
        write_triton_repo(export_dir, tmp_path / "ensemble")
    assert "\n" not in str(refused.value) and not (tmp_path / "ensemble").exists()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    r = subprocess.run([sys.executable, "-m", "zhcls", "-q", "export", "--params_path", str(source), "--output_path",
                        str(tmp_path / "export"), "--triton_repo", str(tmp_path / "cli_repo")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("zhcls: error: --triton_repo") and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "cli_repo").exists()

    repo_dir = write_triton_repo(export_dir, tmp_path / "python", backend="python", max_batch_size=8)
    config = (repo_dir / "kuake_sliding" / "config.pbtxt").read_text(encoding="utf-8")
    assert 'backend: "python"' in config and "dynamic_batching" in config and "max_batch_size: 8" in config
    model = python_model(repo_dir / "kuake_sliding" / "1" / "model.py", monkeypatch)
    long_texts = ["".join(texts) * 2, texts[0], "".join(texts[2:])]
    requests = [InferenceRequest([Tensor("text", np.array([[t.encode()] for t in batch], dtype=object))])
                for batch in (long_texts[:2], long_texts[2:])]
    answers = model.execute(requests)
    expected = load(export_dir, backend="onnx", device="cpu").predict(long_texts)
    assert [x[0].decode() for r in answers for x in r.tensors["label"]] == [e["label"] for e in expected]
    scores = np.concatenate([r.tensors["score"][:, 0] for r in answers])
    assert scores == pytest.approx([e["score"] for e in expected], abs=1e-6)


def tensors(block: str) -> dict:
    return {m[0]: (m[1], m[2].replace(" ", "")) for m in
            re.findall(r'name: "(\w+)"\s*data_type: (\w+)\s*dims: \[([^\]]*)\]', block)}


def parse(path) -> dict:
    text = path.read_text(encoding="utf-8")
    config = {"inputs": tensors(re.search(r"^input \[\n(.*?)^\]", text, re.M | re.S)[1]),
              "outputs": tensors(re.search(r"^output \[\n(.*?)^\]", text, re.M | re.S)[1]),
              "batch": int(re.search(r"^max_batch_size: (\d+)", text, re.M)[1]), "text": text}
    config["steps"] = [(m[0], dict(re.findall(r'input_map \{ key: "(\w+)" value: "(\w+)" \}', m[1])),
                        dict(re.findall(r'output_map \{ key: "(\w+)" value: "(\w+)" \}', m[1])))
                       for m in re.findall(r'model_name: "(\w+)"(.*?)\n    \}', text, re.S)]
    return config


def test_ensemble_names_types_and_shapes_agree(repo):
    export_dir, repo_dir = repo
    configs = {p.parent.name: parse(p) for p in repo_dir.glob("*/config.pbtxt")}
    ensemble = configs["kuake"]
    assert [s[0] for s in ensemble["steps"]] == ["kuake_tokenizer", "kuake_onnx", "kuake_postprocess"]
    known = dict(ensemble["inputs"])  # ensemble tensor -> (type, dims) as produced so far
    for model, inputs, outputs in ensemble["steps"]:
        step = configs[model]
        assert step["batch"] == ensemble["batch"] == 16
        for key, tensor in inputs.items():
            assert step["inputs"][key] == known[tensor], (model, key)
        for key, tensor in outputs.items():
            known[tensor] = step["outputs"][key]
    for name, spec in ensemble["outputs"].items():
        assert known[name] == spec
    onnx = configs["kuake_onnx"]
    assert "dynamic_batching" in onnx["text"] and "max_queue_delay_microseconds: 3000" in onnx["text"]
    session = ort.InferenceSession(str(repo_dir / "kuake_onnx" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert set(onnx["inputs"]) == {i.name for i in session.get_inputs()}
    assert onnx["outputs"]["logits"] == ("TYPE_FP32", "11")  # KUAKE-QIC's 11 labels


def test_refusals(repo, tmp_path):
    export_dir, repo_dir = repo
    with pytest.raises(ZhclsError, match="export folder"):
        write_triton_repo(tmp_path, tmp_path / "repo")
    with pytest.raises(ZhclsError, match="--triton_repo"):
        write_triton_repo(export_dir, export_dir)  # never over its own input
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ZhclsError, match="--overwrite"):
        write_triton_repo(export_dir, tmp_path / "mine")
