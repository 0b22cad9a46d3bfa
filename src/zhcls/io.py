"""Atomic file writes, and the one guard of every folder zhcls writes.

Writes go to a temporary file or folder, then are renamed into place: a crash or a Ctrl-C mid-write
leaves the old file (or none), never a half-written one. A folder that a command replaces whole must
be missing, empty, or one zhcls wrote itself (the `MARKER` file that `atomic_dir` puts at the top of
every folder it writes); anything else, a folder of earlier checkpoints included, is refused unless
the user says ``--overwrite``, so a mistyped ``--save_dir`` never deletes a user's files.
"""
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from zhcls.errors import ZhclsError

MARKER = ".zhcls.json"  # in every folder atomic_dir writes: the guard's proof that zhcls owns the folder


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
    """Yield a temporary folder; on success its entries replace ``path``'s, which gets the `MARKER`.

    A missing ``path`` is one rename of the temporary folder. An existing one is never renamed itself
    (it may be a mount point: a Docker or Kubernetes volume): the temporary folder lives inside it, its
    entries are renamed in one by one and the old ones moved aside, and any failure moves every entry
    back. Entries named in ``keep`` (e.g. ``training_state``) that the new folder lacks are never
    moved at all, so a failed save cannot take the resumable state or the reports with it. Every
    temporary name is unique (tempfile): nothing zhcls did not create in this call is ever deleted.
    """
    path = Path(path)
    fresh = not path.is_dir()
    if fresh:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.new.", dir=path.parent if fresh else path))
    try:
        yield tmp
        (tmp / MARKER).write_text(json.dumps({"written_by": "zhcls"}) + "\n", encoding="utf-8")
        for root, dirs, files in os.walk(tmp):
            for name in dirs + files:
                _usual_mode(Path(root) / name, is_dir=name in dirs)
        if fresh:
            _usual_mode(tmp, is_dir=True)
            os.replace(tmp, path)
        else:
            _replace_entries(path, tmp, keep)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_entries(path: Path, new: Path, keep) -> None:
    """Make ``path`` hold ``new``'s entries (plus the ``keep`` ones ``new`` lacks), or, on failure, what it held."""
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path))
    moved, placed = [], []
    try:
        for entry in list(path.iterdir()):
            if entry in (new, old) or (entry.name in keep and not (new / entry.name).exists()):
                continue
            os.replace(entry, old / entry.name)
            moved.append(entry.name)
        for entry in list(new.iterdir()):
            os.replace(entry, path / entry.name)
            placed.append(entry.name)
    except BaseException:
        for name in placed:
            os.replace(path / name, new / name)
        for name in moved:
            os.replace(old / name, path / name)
        with contextlib.suppress(OSError):  # left in place if something could not be moved back
            old.rmdir()
        raise
    shutil.rmtree(old)


def mark_ours(path) -> None:
    """Put the `MARKER` at the top of the folder ``path`` (created if missing), once the guard has let a
    command write there: a run killed before its first checkpoint leaves a folder zhcls still owns."""
    path = Path(path)
    if not (path / MARKER).is_file():
        with atomic_open(path / MARKER) as f:
            f.write(json.dumps({"written_by": "zhcls"}) + "\n")


def written_by_zhcls(path) -> bool:
    """zhcls wrote the folder itself: its `MARKER` is at the top. A folder that merely holds folders
    zhcls wrote (earlier checkpoints side by side) is the user's, not zhcls's."""
    return (Path(path) / MARKER).is_file()


def check_output_dir(path, *, flag: str, overwrite: bool = False, inputs: Iterable = ()) -> Path:
    """The guard before a command replaces the folder ``path`` whole (``flag`` names it in the error).

    Allowed: a missing or empty folder, or one zhcls wrote (`MARKER` at its top); with ``overwrite``, any folder.
    Never allowed: a file, one of the command's ``inputs``, or a folder that holds an input.
    """
    path = Path(path).expanduser()
    out = path.resolve()
    for source in inputs:
        src = Path(source).expanduser().resolve()
        if out == src or out in src.parents:
            raise ZhclsError(f"{flag} {path}: must not be {source} or hold it (the output folder is replaced whole)")
    if not path.exists():
        return path
    if not path.is_dir():
        raise ZhclsError(f"{flag} {path}: exists and is not a folder")
    if any(path.iterdir()) and not written_by_zhcls(path) and not overwrite:
        raise ZhclsError(f"{flag} {path}: holds files zhcls did not write and would be replaced whole; "
                         "choose another folder, or pass --overwrite to replace it")
    return path


def check_writable(path, *, flag: str) -> Path:
    """Fail before any work when the folder ``path`` could not be written (its parent is a file, is
    read-only, ...): a long run must not end in a traceback at its first save."""
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as e:
        raise ZhclsError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None
    return path


def check_output_files(paths: Iterable, *, flag: str, inputs: Iterable) -> None:
    """The guard before a command writes files: none of ``paths`` may be one of ``inputs``, nor a file
    at the top of an input folder (a model folder's config.json, model.safetensors, vocab.txt...)."""
    sources = set()
    for p in map(Path, inputs):
        p = p.expanduser()
        sources.add(p.resolve())
        if p.is_dir():
            sources.update(f.resolve() for f in p.iterdir())
    for path in paths:
        if Path(path).expanduser().resolve() in sources:
            raise ZhclsError(f"{flag}: {path} would overwrite an input; choose another {flag}")
