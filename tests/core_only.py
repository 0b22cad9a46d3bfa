"""A Python that sees only what a plain `pip install .` (no extras) installs, for the fresh-install tests.

`core_site(folder)` fills ``folder`` with links to the installed top-level modules (and their metadata)
of zhcls's core dependencies and of theirs, read from the installed metadata; `python -S` with
``PYTHONPATH=folder:src`` then runs without the site-packages folder, so scikit-learn, matplotlib,
onnxruntime, jieba, fastapi... are absent although the test environment has them. It installs nothing
and costs a few hundred symlinks.
"""
import importlib.metadata as md
import os
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def core_distributions(root: str = "zhcls") -> set[str]:
    """``root`` and everything its requirements without an extra pull in, transitively."""
    seen, todo = set(), [root]
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        try:
            requires = md.requires(dist) or []
        except md.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r.partition(";")[2]]
    return seen


def core_site(folder: Path) -> Path:
    """Link the top-level entries (packages, modules, .libs, dist-info) of the core distributions into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in core_distributions() - {"zhcls"}:  # zhcls itself: from src/, as the editable install has it
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # a requirement for another platform or Python
        site = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or () if not str(f).startswith("..")}:
            if (site / top).exists() and not (folder / top).exists():
                os.symlink(site / top, folder / top)
    return folder


def core_command(folder: Path, *args) -> tuple[list[str], dict]:
    """argv and environment of ``python -S ARGS`` over `core_site`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(SRC)]), "PYTHONNOUSERSITE": "1"}
    return [sys.executable, "-S", *map(str, args)], env
