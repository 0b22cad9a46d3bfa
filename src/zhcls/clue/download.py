"""CLUE's task data: a local copy (``--data_dir``) or the official zip, downloaded once into the cache."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from zhcls.clue.tasks import Task
from zhcls.errors import ZhclsError
from zhcls.io import atomic_dir

log = logging.getLogger("zhcls")


def cache_root() -> Path:
    """``$ZHCLS_CACHE/clue``, by default ``~/.cache/zhcls/clue``."""
    return Path(os.environ.get("ZHCLS_CACHE", Path.home() / ".cache/zhcls")).expanduser() / "clue"


def _raw_folder(folder: Path) -> Path | None:
    """The folder holding train.json inside an unpacked zip (``{task}_public/`` or the folder itself)."""
    hits = sorted(folder.rglob("train.json"))
    return hits[0].parent if hits else None


def locate(task: Task, data_dir: str | None) -> tuple[str, Path]:
    """("raw", folder with CLUE's JSON files) or ("folder", a dataset folder) for ``task``."""
    if data_dir:
        for folder in (Path(data_dir) / task.name, Path(data_dir) / f"{task.name}_public"):
            if (folder / "train.txt").exists():
                return "folder", folder
            if folder.is_dir() and (raw := _raw_folder(folder)):
                return "raw", raw
        raise ZhclsError(f"--data_dir {data_dir}: no {task.name}/ with CLUE's train.json, dev.json "
                         f"(from {task.url}) or a dataset folder (train.txt, dev.txt, label.txt)")
    target = cache_root() / task.name
    if not (target.is_dir() and _raw_folder(target)):
        download(task, target)
    return "raw", _raw_folder(target)


def download(task: Task, target: Path) -> None:
    log.info("downloading %s", task.url)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / f"{task.name}.zip"
        try:
            with urllib.request.urlopen(task.url, timeout=60) as response, open(archive, "wb") as f:
                shutil.copyfileobj(response, f)
        except OSError as e:  # offline, DNS, HTTP errors: all mean the same to the user
            raise ZhclsError(f"cannot download {task.url} ({type(e).__name__}: {e}). On a connected machine download "
                             f"and unzip it into DIR/{task.name}/, copy DIR here and pass --data_dir DIR") from None
        try:
            with zipfile.ZipFile(archive) as z, atomic_dir(target) as out:
                z.extractall(out)
        except zipfile.BadZipFile:
            raise ZhclsError(f"{task.url}: the download is not a zip file") from None
