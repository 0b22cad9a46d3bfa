"""The README's Quickstart after a plain `pip install .` (no extras), as written: each command does its
job, says in one line what it skipped and how to get it, and exits 0 (self-contained tier).

`tests/core_only.py` gives a Python that sees only the core install's modules (no scikit-learn,
matplotlib, onnxruntime, jieba...), so this installs nothing. The model is the tiny one from random
weights (no download); the commands and flags are the Quickstart's."""
import json
import subprocess

import pytest

from conftest import TINY_MODEL
from core_only import core_command, core_site

TRAIN = ["--model", TINY_MODEL, "--init_random", "--vocab_from_data", "--vocab_size", "1500", "--epochs", "1", "--max_steps", "4",
         "--max_seq_length", "64", "--batch_size", "16", "--threads", "1"]


@pytest.fixture(scope="module")
def core_only(tmp_path_factory):
    site = core_site(tmp_path_factory.mktemp("core_site"))

    def run(*args):
        argv, env = core_command(site, *args)
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)

    return run


def notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "pip install 'zhcls[" in line]


def test_the_extras_are_really_absent(core_only):
    proc = core_only("-c", "import importlib.util, sys\n"
                           "for m in ('sklearn', 'matplotlib', 'onnxruntime', 'jieba', 'fastapi'):\n"
                           "    try:\n        __import__(m)\n    except ImportError:\n        continue\n"
                           "    sys.exit(m + ' importable')\nimport torch, tokenizers, safetensors, numpy, tqdm")
    assert proc.returncode == 0, proc.stderr


def test_quickstart_commands_without_extras(core_only, tiny_dataset, tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.txt"
    train = core_only("-m", "zhcls", "train", "--dataset_dir", tiny_dataset, "--save_dir", ckpt, "--early_stop",
                      *TRAIN)
    assert train.returncode == 0, train.stderr[-2000:]
    assert "best dev score" in train.stdout and (ckpt / "model.safetensors").is_file()
    assert notes(train.stderr) == ["[zhcls] skipped the TF-IDF baseline beside the model: it needs scikit-learn: "
                                   "pip install 'zhcls[analysis]'"]

    evaluate = core_only("-m", "zhcls", "evaluate", "--params_path", ckpt, "--dataset_dir", tiny_dataset)
    assert evaluate.returncode == 0, evaluate.stderr[-2000:]
    skipped = notes(evaluate.stderr)
    assert len(skipped) == 2, evaluate.stderr
    assert "TF-IDF baseline" in skipped[0] + skipped[1] and "zhcls[plot]" in skipped[0] + skipped[1]
    eval_dir = ckpt / "eval"
    assert sorted(p.name for p in eval_dir.iterdir()) == sorted(
        ["report.json"] + [f"{kind}_{split}.txt" for kind in ("bad_case", "confusion")
                           for split in ("train", "dev", "test")])

    predict = core_only("-m", "zhcls", "predict", "--params_path", ckpt, "--dataset_dir", tiny_dataset,
                        "--output_file", out, "--topk", 3)
    assert predict.returncode == 0, predict.stderr[-2000:]
    assert notes(predict.stderr) == []
    rows = out.read_text(encoding="utf-8").splitlines()
    n_texts = len((tiny_dataset / "data.txt").read_text(encoding="utf-8").splitlines())
    assert len(rows) == n_texts + 1 and all(len(r.split("\t")) == 4 for r in rows[1:])


def test_quickstart_python_api_without_extras(core_only, tiny_dataset, tmp_path):
    code = f"""
import json, zhcls
zhcls.train(dataset_dir={str(tiny_dataset)!r}, model_name={TINY_MODEL!r}, save_dir={str(tmp_path / 'ckpt')!r},
            early_stop=True, init_random=True, vocab_from_data=True, vocab_size=1500, epochs=1, max_steps=4, max_seq_length=64,
            batch_size=16, threads=1, progress=False)
reports = zhcls.evaluate({str(tmp_path / 'ckpt')!r}, {str(tiny_dataset)!r}, progress=False)
out = zhcls.load({str(tmp_path / 'ckpt')!r}).predict(["质量很好，物流也快", "用了两天就坏了"], topk=2)
print(json.dumps({{"splits": sorted(reports), "out": out}}, ensure_ascii=False))
"""
    proc = core_only("-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["splits"] == ["dev", "test", "train"]
    labels = ["负面", "正面"]
    for r in result["out"]:
        assert r["label"] in labels and [t[0] for t in r["topk"]][0] == r["label"] and len(r["topk"]) == 2
