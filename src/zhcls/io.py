"""Atomic file writes: write to a temporary file beside the target, then rename over it.

A crash or a Ctrl-C mid-write leaves the old file (or none), never a half-written one.
"""
import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _usual_mode(path: Path, is_dir: bool) -> None:
    """mkstemp / mkdtemp create 0600 / 0700; give the result the modes a plain open() would."""
    path.chmod((0o777 if is_dir else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the target's folder; on success it is renamed to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _usual_mode(Path(tmp), is_dir=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", encoding: str | None = "utf-8"):
    """``open()`` for writing, atomically. Text mode writes UTF-8 with ``\\n`` line ends."""
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp:
        newline = None if "b" in mode else "\n"
        with open(tmp, mode, encoding=encoding, newline=newline) as f:
            yield f


@contextlib.contextmanager
def atomic_dir(path, keep: tuple[str, ...] = ()):
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole.

    Entries named in ``keep`` (e.g. ``training_state``) are carried over from the old folder when
    the new one lacks them, so replacing a checkpoint never drops its resumable state.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        for root, dirs, files in os.walk(tmp):
            for name in dirs + files:
                _usual_mode(Path(root) / name, is_dir=name in dirs)
        _usual_mode(tmp, is_dir=True)
        for name in keep:
            if (path / name).exists() and not (tmp / name).exists():
                os.replace(path / name, tmp / name)
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
