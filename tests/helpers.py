"""Helpers shared by the test modules."""
import shutil
import socket
from collections import Counter
from pathlib import Path

SMALL = "uer/chinese_roberta_L-2_H-128"


def majority_share(path, label_column=-1):
    labels = [line.rstrip("\n").split("\t")[label_column] for line in open(path, encoding="utf-8") if line.strip()]
    return Counter(labels).most_common(1)[0][1] / len(labels)


def subset(src: Path, dst: Path, n_train: int, n_dev: int, balanced: bool = False) -> Path:
    """A smaller dataset folder made of the first lines of a real one (written under tmp_path)."""
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "label.txt").write_text((src / "label.txt").read_text(encoding="utf-8"), encoding="utf-8")
    for name, n in (("train.txt", n_train), ("dev.txt", n_dev)):
        lines = (src / name).read_text(encoding="utf-8").splitlines()
        if balanced:  # equal share of every label, in file order
            by_label = {}
            for line in lines:
                by_label.setdefault(line.rsplit("\t", 1)[1], []).append(line)
            lines = [line for group in zip(*by_label.values()) for line in group]
        (dst / name).write_text("\n".join(lines[:n]) + "\n", encoding="utf-8")
    return dst


def writable_copy(src: Path, dst: Path) -> Path:
    """A writable copy of a fixture folder (the shared fixtures are read-only)."""
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


def flip_byte(path: Path, pos: int) -> None:
    data = bytearray(path.read_bytes())
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for the servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
