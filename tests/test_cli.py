"""The command line: fast start, one-line errors with exit code 2, validation before any model load."""
import os
import pickle
import subprocess
import sys

import pytest

from zhcls.errors import ZhclsError
from zhcls.models import zoo
from zhcls.models.pretrained import load_pretrained


def zhcls_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "zhcls", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("zhcls: error:")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_help_imports_no_torch():
    # What makes `zhcls --help` answer at once is what it does not import; its speed is no unit test's business.
    code = ("import sys; from zhcls.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == ["False", "False"]
    assert zhcls_cli("--help").returncode == 0


def test_models_lists_the_zoo():
    out = zhcls_cli("models").stdout
    for model in zoo.MODELS:
        assert model.name in out
    assert "ernie-3.0-medium-zh" in out and "81.79" in out


def test_missing_dataset_dir(tmp_path):
    assert_one_line_error(zhcls_cli("train", "--dataset_dir", tmp_path / "nope", "--model", "rbt3", "--init_random"),
                          "nope")


def test_bad_label_fails_before_the_model_is_loaded(tmp_path):
    (tmp_path / "label.txt").write_text("好\n坏\n", encoding="utf-8")
    (tmp_path / "train.txt").write_text("很好\t好\n很差\t差\n", encoding="utf-8")
    (tmp_path / "dev.txt").write_text("不错\t好\n", encoding="utf-8")
    # The model does not exist: had it been loaded first, the error would be about the model.
    proc = zhcls_cli("train", "--dataset_dir", tmp_path, "--model", tmp_path / "no-such-model")
    assert_one_line_error(proc, "train.txt:2", "差")


def test_predict_empty_data_file(tmp_path, shared):
    ckpt = tmp_path / "ckpt"
    model, tokenizer = load_pretrained("uer/chinese_roberta_L-2_H-128", ["a", "b"], init_random=True,
                                       vocab_file=shared / "vocab/bert-base-chinese/vocab.txt")
    from zhcls.models.checkpoint import save_checkpoint

    save_checkpoint(model, tokenizer, ckpt, {"task": "text", "problem_type": "multi_class"})
    (tmp_path / "data.txt").write_text("\n  \n", encoding="utf-8")
    proc = zhcls_cli("predict", "--params_path", ckpt, "--dataset_dir", tmp_path, "--output_file", tmp_path / "o.txt")
    assert_one_line_error(proc, "data.txt")
    assert not (tmp_path / "o.txt").exists()
    assert_one_line_error(zhcls_cli("predict", "--params_path", tmp_path / "nothing", "--dataset_dir", tmp_path),
                          "nothing")


def test_offline_hub_download_says_what_to_do(tmp_path):
    (tmp_path / "label.txt").write_text("好\n坏\n", encoding="utf-8")
    for name in ("train.txt", "dev.txt"):
        (tmp_path / name).write_text("很好\t好\n很差\t坏\n", encoding="utf-8")
    proc = zhcls_cli("train", "--dataset_dir", tmp_path, "--model", "rbt3", "--cache_dir", tmp_path / "cache",
                     env={"HF_HUB_OFFLINE": "1"})
    assert_one_line_error(proc, "huggingface-cli download hfl/rbt3", "--model rbt3/")


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes our hand-made pickle
def test_malicious_pytorch_bin_is_refused(tmp_path, shared):
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    (folder / "vocab.txt").write_text((shared / "vocab/bert-base-chinese/vocab.txt").read_text(encoding="utf-8"))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Payload()}))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(ZhclsError, match="refusing to load"):
            load_pretrained(str(folder), ["a", "b"])
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "pwned").exists()
