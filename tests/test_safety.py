"""Nothing lost, nothing silent: every command through the CLI (`zhcls.cli.main`, in process: the same
parsing, error path and exit code as the console script), on a tiny model and real KUAKE-QIC lines.

Exit codes: 0 success; 1 `inspect` found problems; 2 one-line error, nothing written; 3 `export`
wrote the fp32 model but the INT8 gate refused."""
import json
import shutil
import sys

import pytest

from helpers import SMALL
from test_export import tiny_checkpoint
from zhcls.cli import main
from zhcls.errors import ZhclsError
from zhcls.io import MARKER, check_output_dir
from zhcls.models.checkpoint import load_checkpoint, save_checkpoint

KUAKE_LINES = 64


@pytest.fixture(scope="module")
def kq(shared, tmp_path_factory):
    """KUAKE-QIC's labels, its first 64 train and dev lines, no test.txt; data.txt for predict."""
    path = tmp_path_factory.mktemp("kq")
    src = shared / "data" / "kuake_qic"
    shutil.copy(src / "label.txt", path)
    for name in ("train.txt", "dev.txt"):
        lines = (src / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (path / name).write_text("".join(lines[:KUAKE_LINES]), encoding="utf-8")
    texts = [line.split("\t")[0] for line in (path / "dev.txt").read_text(encoding="utf-8").splitlines()]
    (path / "data.txt").write_text("\n".join(texts[:8]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ckpt(shared, tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", shared, "bert")


@pytest.fixture(scope="module")
def vocab(shared):
    return shared / "vocab" / "bert-base-chinese" / "vocab.txt"


def cli(capsys, *args):
    code = main(["-q", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_error(result, *fragments, code=2):
    got, _, err = result
    assert got == code, (got, err)
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("zhcls: error:")]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def train_args(kq, vocab, save_dir, *extra):
    return ("train", "--dataset_dir", kq, "--model", SMALL, "--init_random", "--vocab_file", vocab, "--save_dir",
            save_dir, "--epochs", 1, "--max_steps", 1, "--max_seq_length", 32, "--threads", 1, *extra)


# --- files are never lost ----------------------------------------------------------------------------------------


def test_train_refuses_a_folder_it_did_not_write(kq, vocab, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work", encoding="utf-8")
    assert_error(cli(capsys, *train_args(kq, vocab, mine)), f"--save_dir {mine}", "did not write", "--overwrite")
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"]
    assert (mine / "thesis.txt").read_text(encoding="utf-8") == "years of work"
    # Never the dataset (or a folder holding it), --overwrite or not.
    assert_error(cli(capsys, *train_args(kq, vocab, kq.parent, "--overwrite")), "must not be", str(kq))
    # Its own output folder is zhcls's to replace; a user's only when the user says so.
    ours = tmp_path / "ours"
    for _ in range(2):
        assert cli(capsys, *train_args(kq, vocab, ours))[0] == 0
    assert (ours / MARKER).is_file() and (ours / "model.safetensors").is_file()
    assert cli(capsys, *train_args(kq, vocab, mine, "--overwrite"))[0] == 0
    assert not (mine / "thesis.txt").exists() and (mine / "model.safetensors").is_file()


def test_the_guard_owns_only_folders_marked_at_their_top(tmp_path):
    # A folder that merely holds folders zhcls wrote (earlier checkpoints side by side) is the user's.
    runs = tmp_path / "runs"
    (runs / "ckpt_a").mkdir(parents=True)
    (runs / "ckpt_a" / MARKER).write_text("{}")
    with pytest.raises(ZhclsError, match="did not write"):
        check_output_dir(runs, flag="--save_dir")
    (runs / MARKER).write_text("{}")  # what the loop writes at save_dir's top with its first training state
    assert check_output_dir(runs, flag="--save_dir") == runs
    (tmp_path / "file").write_text("x")
    with pytest.raises(ZhclsError, match="is not a folder"):
        check_output_dir(tmp_path / "file", flag="--to", overwrite=True)


def test_eval_reports_survive_a_better_epoch(ckpt, kq, capsys):
    assert cli(capsys, "evaluate", "--params_path", ckpt, "--dataset_dir", kq, "--splits", "dev", "--no_plot")[0] == 0
    report = ckpt / "eval" / "report.json"
    assert json.loads(report.read_text(encoding="utf-8"))["dev"]["n"] == KUAKE_LINES
    model, tokenizer, meta = load_checkpoint(ckpt)
    save_checkpoint(model, tokenizer, ckpt, {**meta, "best_epoch": 2})  # what training does on a better epoch
    assert report.is_file() and (ckpt / "eval" / "confusion_dev.txt").is_file()
    assert json.loads((ckpt / "config.json").read_text(encoding="utf-8"))["zhcls"]["best_epoch"] == 2


# --- every bad value is one line and exit 2 ----------------------------------------------------------------------


@pytest.mark.parametrize("flag, value, message", [
    ("--logging_steps", 0, "--logging_steps 0: must be >= 1"),
    ("--early_stop_nums", 0, "--early_stop_nums 0: must be >= 1"),
    ("--gradient_accumulation_steps", 0, "--gradient_accumulation_steps 0: must be >= 1"),
    ("--warmup_proportion", 1.5, "--warmup_proportion 1.5: must be between 0 and 1"),
    ("--max_seq_length", 600, "--max_seq_length 600 exceeds the model's 512 positions"),
])
def test_train_setting_errors(kq, vocab, tmp_path, capsys, flag, value, message):
    assert_error(cli(capsys, *train_args(kq, vocab, tmp_path / "out", "--early_stop", flag, value)), message)
    assert not (tmp_path / "out").exists()


def test_one_vocabulary(kq, vocab, tmp_path, capsys):
    assert_error(cli(capsys, *train_args(kq, vocab, tmp_path / "out", "--vocab_from_data")),
                 "--vocab_from_data and --vocab_file")


def test_torch_predict_bad_values(ckpt, kq, tmp_path, capsys):
    out = tmp_path / "out.txt"
    assert_error(cli(capsys, "predict", "--params_path", ckpt, "--dataset_dir", kq, "--output_file", out,
                     "--max_seq_length", 600), "--max_seq_length 600 exceeds the model's 512 positions")
    assert_error(cli(capsys, "predict", "--params_path", ckpt, "--dataset_dir", kq, "--output_file", out,
                     "--batch_size", 0), "--batch_size 0: must be >= 1")
    assert not out.exists()


def test_evaluate_splits_and_test_file(ckpt, kq, capsys):
    assert_error(cli(capsys, "evaluate", "--params_path", ckpt, "--dataset_dir", kq, "--splits", "test"), "test.txt")
    assert_error(cli(capsys, "evaluate", "--params_path", ckpt, "--dataset_dir", kq, "--test_file", "tset.txt"),
                 "tset.txt")
    assert_error(cli(capsys, "evaluate", "--params_path", ckpt, "--dataset_dir", kq, "--splits", "dev,tset"),
                 "unknown split(s) tset")
    # The default: train and dev, and test only when the folder has one.
    code, out, _ = cli(capsys, "evaluate", "--params_path", ckpt, "--dataset_dir", kq, "--no_plot")
    assert code == 0 and "train" in out and "dev" in out
    assert set(json.loads((ckpt / "eval" / "report.json").read_text(encoding="utf-8"))) == {"train", "dev"}


def test_evaluate_without_matplotlib_skips_the_png(ckpt, kq, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, _, err = cli(capsys, "evaluate", "--params_path", ckpt, "--dataset_dir", kq, "--splits", "dev",
                       "--output_dir", tmp_path / "eval")
    assert code == 0 and "pip install 'zhcls[plot]'" in err and "--no_plot" in err
    assert (tmp_path / "eval" / "confusion_dev.txt").is_file() and not (tmp_path / "eval" / "confusion_dev.png").exists()
    code, _, err = cli(capsys, "evaluate", "--params_path", ckpt, "--dataset_dir", kq, "--splits", "dev",
                       "--output_dir", tmp_path / "eval", "--no_plot")
    assert code == 0 and "matplotlib" not in err
    assert_error(cli(capsys, "bench", "--params_path", ckpt, "--dataset_dir", kq, "--plot", tmp_path / "b.png"),
                 "--plot needs matplotlib", "pip install 'zhcls[plot]'")


def test_torch_only_install(ckpt, kq, tmp_path, capsys, monkeypatch):
    for module in ("onnxruntime", "onnx"):
        monkeypatch.setitem(sys.modules, module, None)
    assert_error(cli(capsys, "export", "--params_path", ckpt, "--output_path", tmp_path / "x"),
                 "zhcls export needs onnx", "pip install 'zhcls[onnx]'")
    assert_error(cli(capsys, "bench", "--params_path", ckpt, "--dataset_dir", kq),
                 "needs onnxruntime", "pip install 'zhcls[onnx]'", "--backends torch")
    assert not (tmp_path / "x").exists()
    # bench's main job without it: the PyTorch row.
    code, out, _ = cli(capsys, "bench", "--params_path", ckpt, "--dataset_dir", kq, "--backends", "torch",
                       "--repeats", 1, "--max_samples", 16, "--threads", 1)
    assert code == 0 and "torch" in out and "medians of 1 runs" in out


def test_head_less_folder_is_refused(shared, kq, tmp_path, capsys):
    encoder = tmp_path / "encoder"
    assert cli(capsys, "convert", shared / "fixtures" / "tf" / "bert_tiny_clue", "--to", encoder)[0] == 0
    for command in (("predict", "--output_file", tmp_path / "o.txt"), ("evaluate", "--splits", "dev")):
        assert_error(cli(capsys, command[0], "--params_path", encoder, "--dataset_dir", kq, *command[1:]),
                     "no trained classifier head", f"zhcls train --model {encoder}")
    assert not (tmp_path / "o.txt").exists()


# --- exit codes of convert, inspect, export, bench ---------------------------------------------------------------


def test_convert_and_inspect_exit_codes(shared, tmp_path, capsys):
    src = tmp_path / "novocab"
    shutil.copytree(shared / "fixtures" / "tf" / "bert_tiny_clue", src)
    for p in src.iterdir():
        p.chmod(0o644)
    (src / "vocab.txt").unlink()
    code, out, _ = cli(capsys, "inspect", src)
    assert code == 1 and "problem     no vocab.txt beside the weights: convert needs --vocab_file" in out
    assert_error(cli(capsys, "convert", src, "--to", tmp_path / "a"), "pass the vocabulary (--vocab_file)")
    vocab = shared / "fixtures" / "tf" / "bert_tiny_clue" / "vocab.txt"
    # The flag the messages name exists.
    assert cli(capsys, "convert", src, "--to", tmp_path / "a", "--vocab_file", vocab)[0] == 0
    code, out, _ = cli(capsys, "inspect", tmp_path / "a")
    assert code == 0 and "convertible yes" in out
    assert_error(cli(capsys, "inspect", tmp_path / "nothing"), "nothing")
    assert_error(cli(capsys, "convert", shared / "fixtures" / "paddle" / "ernie_tiny_h64_l2", "--to", tmp_path / "c",
                     "--config", src / "bert_config.json"), "--config applies to TensorFlow checkpoints only")
    assert_error(cli(capsys, "convert", src, "--to", src.parent, "--vocab_file", vocab), "--to", "must not be")


def test_export_exit_codes(ckpt, kq, tmp_path, capsys):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    assert_error(cli(capsys, "export", "--params_path", ckpt, "--output_path", occupied), "did not write")
    # The INT8 gate refuses (no drop is small enough, not even a gain of 100 points): exit 3, and the fp32 export is there.
    out = tmp_path / "onnx"
    assert_error(cli(capsys, "export", "--params_path", ckpt, "--output_path", out, "--dataset_dir", kq,
                     "--quantize", "int8", "--max_accuracy_drop", -100, "--threads", 1),
                 "INT8 refused", f"the fp32 export is in {out}", code=3)
    report = json.loads((out / "export_report.json").read_text(encoding="utf-8"))
    assert report["variants"]["int8"]["accepted"] is False
    assert (out / "model.onnx").is_file() and not (out / "model.int8.onnx").exists()
    code, result, _ = cli(capsys, "predict", "--params_path", out, "--dataset_dir", kq, "--output_file",
                          tmp_path / "p.txt")
    assert code == 0 and len((tmp_path / "p.txt").read_text(encoding="utf-8").splitlines()) == 1 + 8
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "3 the INT8 gate refused" in " ".join(capsys.readouterr().out.split())


def test_bench_exit_codes(ckpt, kq, capsys):
    assert_error(cli(capsys, "bench", "--params_path", ckpt, "--dataset_dir", kq, "--backends", "torch,tensorrt"),
                 "unknown backend(s) tensorrt")
    assert_error(cli(capsys, "bench", "--params_path", ckpt, "--dataset_dir", kq, "--repeats", 0), "--repeats")
    assert_error(cli(capsys, "bench", "--params_path", ckpt.parent / "nowhere", "--dataset_dir", kq), "nowhere")
