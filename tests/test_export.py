"""ONNX export: parity with PyTorch (and with PaddleNLP's own logits), ERNIE's task-type folding, the
INT8 gate, the torch-free predictor and clear errors. Tiny random models keep it fast."""
import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from zhcls.data import read_labels
from zhcls.data.tokenizer import Tokenizer
from zhcls.deploy import export as export_module
from zhcls.deploy.export import TOLERANCE, export, fold_task_type, optimize_graph, to_onnx
from zhcls.errors import ZhclsError
from zhcls.inference.loading import load
from zhcls.inference.onnx_predictor import OnnxPredictor
from zhcls.models.checkpoint import load_checkpoint, save_checkpoint
from zhcls.models.modeling import EncoderConfig, SequenceClassifier

FAMILIES = {
    "bert": dict(model_type="bert"),
    "ernie": dict(model_type="ernie", use_task_id=True, type_vocab_size=4, max_position_embeddings=2048),
    "electra": dict(model_type="electra", embedding_size=32),
}
TEXTS = ["心肌缺血如何治疗与调养呢？", "头痛", "感冒了吃什么药好得快一点", "a", "孕妇可以吃螃蟹吗", "", "高血压患者能喝酒吗？不能喝的话为什么"]


def tiny_checkpoint(path, shared, family, seed=0):
    """A random 2-layer, 64-wide classifier over KUAKE-QIC's labels, saved as a zhcls checkpoint."""
    tokenizer = Tokenizer(shared / "vocab" / "ernie-3.0-zh" / "vocab.txt")
    labels = read_labels(shared / "data" / "kuake_qic" / "label.txt")
    config = EncoderConfig(**FAMILIES[family], vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=128, id2label=dict(enumerate(labels)))
    torch.manual_seed(seed)
    model = SequenceClassifier(config)
    with torch.no_grad():  # larger than the N(0, 0.02) init, so that the logits (and any error) are not tiny
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return save_checkpoint(model, tokenizer, path, {"task": "text", "problem_type": "multi_class", "max_seq_length": 64})


@pytest.fixture(scope="module")
def small_dataset(shared, tmp_path_factory):
    """KUAKE-QIC's labels with its first 200 dev lines: enough for the INT8 gate, quick to score."""
    path = tmp_path_factory.mktemp("kuake_small")
    shutil.copy(shared / "data" / "kuake_qic" / "label.txt", path)
    lines = (shared / "data" / "kuake_qic" / "dev.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    (path / "dev.txt").write_text("".join(lines[:200]), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ernie_export(shared, small_dataset, tmp_path_factory):
    """A tiny ERNIE exported with INT8, shared by the predictor tests."""
    root = tmp_path_factory.mktemp("ernie")
    checkpoint = tiny_checkpoint(root / "ckpt", shared, "ernie")
    report = export(checkpoint, root / "export", quantize="int8", dataset_dir=small_dataset, progress=False)
    return checkpoint, root / "export", report


@pytest.mark.parametrize("family", ["bert", "electra"])
def test_export_matches_pytorch(shared, tmp_path, family):
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", shared, family)
    report = export(checkpoint, tmp_path / "export", fp16=family == "electra", progress=False)
    assert report["fused"]["max_abs_diff"] <= TOLERANCE["fp32"]
    if family == "electra":  # fp16 runs (slowly) on CPU too, so it is verified like the rest
        assert report["variants"]["fp16"]["max_abs_diff"] <= TOLERANCE["fp16"]
        assert OnnxPredictor.from_dir(tmp_path / "export").variant == "fp32"  # auto: fp16 only on a GPU
    assert {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"} <= set(report["fusions"])
    assert set(report["checked_on"]) >= {"one character", "max length beside one character", "pairs"}
    onnx = OnnxPredictor.from_dir(tmp_path / "export")
    torch_ = load(checkpoint, backend="torch", device="cpu")
    pairs = [(a, b) for a, b in zip(TEXTS, reversed(TEXTS))]
    np.testing.assert_allclose(onnx.predict_proba(TEXTS), torch_.predict_proba(TEXTS), atol=1e-5)
    np.testing.assert_allclose(onnx.predict_proba(pairs), torch_.predict_proba(pairs), atol=1e-5)
    assert json.loads((tmp_path / "export" / "export_report.json").read_text())["fusions"] == report["fusions"]


def test_ernie_task_type_is_folded_and_verified(ernie_export):
    checkpoint, out, report = ernie_export
    assert report["task_type_folded"] and report["fused"]["max_abs_diff"] <= TOLERANCE["fp32"]
    assert report["checked_on"]["texts_from"] == "dev"
    assert report["fusions"]["EmbedLayerNormalization"] == 1 and report["fusions"]["Attention"] == 2
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["use_task_id"] and config["zhcls"]["max_seq_length"] == 64 and len(config["zhcls"]["labels"]) == 11


def test_folding_keeps_the_function_and_unlocks_the_embedding_fusion(ernie_export, tmp_path):
    model, _, _ = load_checkpoint(ernie_export[0])
    folded = fold_task_type(model)
    assert not hasattr(folded.ernie.embeddings, "task_type_embeddings")
    ids = torch.tensor([[1, 50, 60, 70, 2, 0], [1, 80, 2, 90, 2, 0]])
    types = torch.tensor([[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0]])
    mask = (ids > 0).long()
    with torch.no_grad():
        torch.testing.assert_close(folded(ids, types, mask), model(ids, types, mask), atol=1e-6, rtol=0)
    # Unfolded, the task-type Add keeps ONNX Runtime (1.32) from fusing the embedding at all: the export
    # would stay right, only slower. The silent mis-fusion reported for other graphs does not show here.
    to_onnx(model, tmp_path / "unfolded.onnx")
    to_onnx(folded, tmp_path / "folded.onnx")
    assert "EmbedLayerNormalization" not in optimize_graph(tmp_path / "unfolded.onnx", tmp_path / "unfolded.onnx")
    assert optimize_graph(tmp_path / "folded.onnx", tmp_path / "folded.onnx")["EmbedLayerNormalization"] == 1


def test_a_graph_that_loses_the_task_type_term_is_refused(ernie_export, tmp_path, monkeypatch):
    """What the known fusion bug does (drop the task-type term) is caught, and nothing is written."""
    def drop_task_type(model):
        row = model.ernie.embeddings.task_type_embeddings.weight[0]
        folded = fold_task_type(model)
        with torch.no_grad():
            folded.ernie.embeddings.token_type_embeddings.weight -= row
        return folded

    monkeypatch.setattr(export_module, "fold_task_type", drop_task_type)
    with pytest.raises(ZhclsError, match="differ from PyTorch"):
        export(ernie_export[0], tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("fixture", ["ernie_tiny_h64_l2", "bert_tiny_h64_l2", "electra_tiny_e32_h64_l2"])
def test_paddle_fixture_exports_reproduce_paddlenlp(shared, tmp_path, fixture):
    folder = shared / "fixtures" / "paddle" / fixture
    report = export(folder, tmp_path / "export", progress=False)
    assert report["fused"]["max_abs_diff"] <= report["fused"]["tolerance"]
    reference = json.loads((folder / "reference.json").read_text(encoding="utf-8"))["examples"]
    predictor = OnnxPredictor.from_dir(tmp_path / "export", variant="fp32")
    for kind in ("single", "pair"):
        examples = [e for e in reference if e["kind"] == kind]
        texts_b = [e["text_b"] for e in examples] if kind == "pair" else None
        texts_a = [e["text_a"] if kind == "pair" else e["text"] for e in examples]
        got = predictor.logits(texts_a, texts_b)
        np.testing.assert_allclose(got, [e["logits"] for e in examples], atol=1e-4, rtol=0)


def test_int8_gate_accepts_and_refuses(ernie_export, small_dataset, tmp_path):
    checkpoint, out, report = ernie_export
    int8 = report["variants"]["int8"]
    assert int8["accepted"] and (out / "model.int8.onnx").exists()
    assert int8["drop"] <= 0.5 and int8["prediction_agreement"] >= 0.9 and int8["bytes"] < report["variants"]["fp32"]["bytes"]
    # --quantize int8 tries static first: calibrated, QDQ, per-channel weights, of the plain graph.
    assert int8["method"] == "static" and int8["per_channel"] and len(int8["attempts"]) == 1
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    with pytest.raises(ZhclsError, match="INT8 refused"):
        export(checkpoint, tmp_path / "refused", quantize="int8-dynamic", dataset_dir=small_dataset, max_accuracy_drop=-1,
               optimize=False, progress=False)
    refused = json.loads((tmp_path / "refused" / "export_report.json").read_text())["variants"]["int8"]
    assert not refused["accepted"] and len(refused["attempts"]) == 3  # dynamic: per-tensor, per-channel, reduce-range
    assert {a["method"] for a in refused["attempts"]} == {"dynamic"}
    assert (tmp_path / "refused" / "model.onnx").exists() and not (tmp_path / "refused" / "model.int8.onnx").exists()
    with pytest.raises(ZhclsError, match="needs --dataset_dir"):
        export(checkpoint, tmp_path / "x", quantize="int8", progress=False)


def test_predictor_keeps_order_and_agrees_with_pytorch(ernie_export):
    checkpoint, out, _ = ernie_export
    fp32 = OnnxPredictor.from_dir(out, variant="fp32", batch_size=2)
    assert OnnxPredictor.from_dir(out).variant == "int8"  # auto: the INT8 model, on CPU, since it passed the gate
    torch_ = load(checkpoint, backend="torch", device="cpu", batch_size=3)
    texts = TEXTS * 3
    forward, backward = fp32.predict_proba(texts), fp32.predict_proba(texts[::-1])
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-6)
    np.testing.assert_allclose(forward, torch_.predict_proba(texts), atol=1e-5)
    pairs = list(zip(TEXTS, TEXTS[1:]))
    np.testing.assert_allclose(fp32.predict_proba(pairs), torch_.predict_proba(pairs), atol=1e-5)
    assert [r["label"] for r in fp32.predict(pairs)] == [r["label"] for r in torch_.predict(pairs)]
    assert fp32.predict([]) == []


def test_long_input_is_truncated_to_max_seq_length(ernie_export):
    predictor = OnnxPredictor.from_dir(ernie_export[1], variant="fp32")
    long_text = "头痛怎么办" * 100  # 500 characters, max_seq_length 64
    cut = predictor.tokenizer.tokenize(long_text)[:62]
    np.testing.assert_allclose(predictor.logits([long_text]), predictor.logits(["".join(cut)]), atol=1e-6)


def test_onnx_predictor_imports_no_torch(ernie_export):
    code = ("import sys, zhcls\n"
            f"p = zhcls.load({str(ernie_export[1])!r})\n"
            "r = p.predict(['头痛怎么办', '孕妇可以吃螃蟹吗'])\n"
            "assert len(r) == 2 and r[0]['label'], r\n"
            "print(type(p).__name__, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["OnnxPredictor", "False"]


def test_clear_errors(ernie_export, small_dataset, tmp_path):
    checkpoint, out, _ = ernie_export
    with pytest.raises(ZhclsError, match="no such export folder"):
        OnnxPredictor.from_dir(tmp_path / "nowhere")
    with pytest.raises(ZhclsError, match="a PyTorch checkpoint, not an export"):
        OnnxPredictor.from_dir(checkpoint)
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    (partial / "vocab.txt").unlink()
    with pytest.raises(ZhclsError, match="missing vocab.txt"):
        OnnxPredictor.from_dir(partial)
    (partial / "model.onnx").write_bytes(b"not a model")
    shutil.copy(out / "vocab.txt", partial)
    with pytest.raises(ZhclsError, match="ONNX Runtime cannot load it"):
        OnnxPredictor.from_dir(partial, variant="fp32")
    with pytest.raises(ZhclsError, match="no model.fp16.onnx"):
        OnnxPredictor.from_dir(out, variant="fp16")
    with pytest.raises(ZhclsError, match="exceeds the model's 2048 positions"):
        OnnxPredictor.from_dir(out, max_seq_length=4096)
    with pytest.raises(ZhclsError, match="no such checkpoint folder"):
        export(tmp_path / "nowhere", tmp_path / "x", progress=False)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(ZhclsError, match="occupied: holds files zhcls did not write .* pass --overwrite"):
        export(checkpoint, occupied, progress=False)
    assert (occupied / "notes.txt").read_text() == "mine"
    with pytest.raises(ZhclsError, match="--output_path .*: must not be .* or hold it"):
        export(checkpoint, checkpoint.parent, progress=False)
    empty = tmp_path / "empty"
    shutil.copytree(small_dataset, empty)
    (empty / "dev.txt").write_text("", encoding="utf-8")
    with pytest.raises(ZhclsError, match="dev.txt: the file has no data lines"):
        export(checkpoint, tmp_path / "x", dataset_dir=empty, progress=False)
    with pytest.raises(ZhclsError, match="--quantize int4: expected one of int8, int8-dynamic, int8-static"):
        export(checkpoint, tmp_path / "x", quantize="int4", progress=False)
    with pytest.raises(ZhclsError, match="opset 14 or newer"):
        export(checkpoint, tmp_path / "x", opset=13, progress=False)
    assert not (tmp_path / "x").exists()
