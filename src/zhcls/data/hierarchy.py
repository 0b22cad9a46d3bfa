"""The label tree of hierarchical data: ``a``, ``a##b``, ``a##b##c`` are nodes at levels 1, 2, 3.

PaddleNLP trains and predicts hierarchical data as flat multi-label over every node, so a child can
come out without its parent. Here the chosen labels are made consistent after thresholding:

- ``add_parents`` (default): a chosen child brings its parent, grandparent, ... (the child's evidence
  is evidence for the parent);
- ``drop_orphans``: a child whose parent was not chosen is dropped (only confident paths survive).

Torch-free: works on boolean label matrices (n, C).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zhcls.data.dataset import LEVEL_SEP
from zhcls.errors import ZhclsError

POLICIES = ("add_parents", "drop_orphans")


def level(label: str) -> int:
    """1 for a root, 2 for its children, ..."""
    return label.count(LEVEL_SEP) + 1


def parent_index(labels: Sequence[str]) -> np.ndarray:
    """The class id of each label's parent, -1 for the roots."""
    index = {label: i for i, label in enumerate(labels)}
    parents = []
    for label in labels:
        parent = label.rpartition(LEVEL_SEP)[0]
        if parent and parent not in index:
            raise ZhclsError(f"label {label!r} has no parent {parent!r} among the labels")
        parents.append(index[parent] if parent else -1)
    return np.asarray(parents, dtype=np.int64)


def make_consistent(chosen: np.ndarray, labels: Sequence[str], policy: str = "add_parents") -> np.ndarray:
    """A copy of the boolean matrix ``chosen`` (n, C) in which every chosen child has its parent chosen."""
    if policy not in POLICIES:
        raise ZhclsError(f"--hierarchy_policy {policy}: choose one of {', '.join(POLICIES)}")
    parents = parent_index(labels)
    depth = np.asarray([level(label) for label in labels])
    out = np.array(chosen, dtype=bool, copy=True)
    children = np.flatnonzero(parents >= 0)
    if policy == "add_parents":  # deepest first, so that an added parent brings its own parent in turn
        for c in children[np.argsort(-depth[children], kind="stable")]:
            out[:, parents[c]] |= out[:, c]
    else:  # shallowest first, so that dropping a parent drops its whole subtree
        for c in children[np.argsort(depth[children], kind="stable")]:
            out[:, c] &= out[:, parents[c]]
    return out


def inconsistent_paths(chosen: np.ndarray, labels: Sequence[str]) -> int:
    """How many (row, label) pairs hold a chosen label whose parent is not chosen."""
    parents = parent_index(labels)
    children = np.flatnonzero(parents >= 0)
    chosen = np.asarray(chosen, dtype=bool)
    return int((chosen[:, children] & ~chosen[:, parents[children]]).sum())
