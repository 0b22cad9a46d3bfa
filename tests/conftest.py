"""Shared test fixtures. Data tests read ../shared (or $ZHCLS_SHARED); when it is missing they FAIL."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_path() -> Path:
    return Path(os.environ.get("ZHCLS_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_path()
    if not (path / "data").is_dir():
        pytest.fail(f"../shared not found at {path}: set ZHCLS_SHARED to the shared folder", pytrace=False)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: thread hand-offs cost more than the matmuls, badly so on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
