"""Read and validate dataset folders in PaddleNLP's text_classification format.

A folder holds ``train.txt``, ``dev.txt``, optional ``test.txt`` and ``label.txt`` (one label
per line; line order fixes the class ids). Data lines are tab-separated:

- ``text<TAB>label`` (task "text") or ``text_a<TAB>text_b<TAB>label`` (task "pair");
- multi_label: the label column is ``l1,l2,...``; it may be empty, meaning "none of the labels"
  (negative examples, as PaddleNLP reads them);
- hierarchical: like multi_label, with ``parent##child`` labels; every level is written out
  (``组织关系,组织关系##裁员``) and listed in label.txt.

In multi_class the whole label column is one label, so a label may contain ``,`` or ``##``.
Unlabelled files (``data.txt``, for prediction) hold only the text column(s).

Every problem in a file is a ``ZhclsError`` naming file, line and problem. Files are UTF-8
(a BOM and CRLF line ends are accepted); whitespace-only lines are skipped with one warning
per file; nothing else is ever dropped. Only the line end is stripped, never inner whitespace.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zhcls.errors import ZhclsError, data_error
from zhcls.io import atomic_open

logger = logging.getLogger("zhcls")

TASKS = ("text", "pair")
PROBLEM_TYPES = ("multi_class", "multi_label", "hierarchical")
SPLITS = ("train", "dev", "test")
LABEL_SEP = ","     # between the labels of one line (multi_label, hierarchical)
LEVEL_SEP = "##"    # between parent and child in a hierarchical label

_BOM = b"\xef\xbb\xbf"
# Column names per (task, labelled), for reading and for error messages.
_COLUMNS = {
    ("text", True): ("text", "label"),
    ("pair", True): ("text_a", "text_b", "label"),
    ("text", False): ("text",),
    ("pair", False): ("text_a", "text_b"),
}


@dataclass(frozen=True, slots=True)
class Example:
    """One data line. ``labels`` is () for unlabelled text, exactly one label for multi_class."""

    text_a: str
    text_b: str | None
    labels: tuple[str, ...]
    line: int  # 1-based line number in its file, for errors and bad-case reports


@dataclass
class DatasetFolder:
    """A loaded dataset folder. A split that is absent and not required is [] (test: None)."""

    labels: list[str]
    task: str
    problem_type: str
    train: list[Example]
    dev: list[Example]
    test: list[Example] | None

    def label_index(self) -> dict[str, int]:
        """Label -> class id (its position in label.txt)."""
        return {label: i for i, label in enumerate(self.labels)}


def predictor_inputs(examples: Sequence[Example]) -> list:
    """What `Predictor.predict` takes: the text, or (text_a, text_b) for a pair."""
    return [e.text_a if e.text_b is None else (e.text_a, e.text_b) for e in examples]


def read_labels(path, problem_type: str = "multi_class") -> list[str]:
    """Read label.txt: one label per line, in class-id order.

    For multi_label and hierarchical a label may not contain ','; hierarchical labels
    ``parent##child`` need their parent listed too.
    """
    _check_choice("problem_type", problem_type, PROBLEM_TYPES)
    lines = read_lines(path)
    # Blank lines at the end are just extra newlines. Anywhere else a blank line is most likely a
    # deleted label, which would silently shift the class id of every label after it.
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    if end == 0:
        raise data_error(path, None, "the label file is empty; write one label per line")
    first_line: dict[str, int] = {}
    for number, label in enumerate(lines[:end], 1):
        if not label.strip():
            raise data_error(path, number, "empty line inside the label file; write one label per line")
        if "\t" in label:
            raise data_error(path, number, f"label {label!r} contains a tab; write one label per line")
        if label in first_line:
            raise data_error(path, number, f"duplicate label {label!r}, already on line {first_line[label]}")
        if problem_type != "multi_class" and LABEL_SEP in label:
            raise data_error(path, number, f"label {label!r} contains ',', which separates the labels "
                                           f"of a line in {problem_type} data")
        first_line[label] = number
    if problem_type == "hierarchical":
        for label, number in first_line.items():
            parent = label.rpartition(LEVEL_SEP)[0]
            if parent and parent not in first_line:
                raise data_error(path, number, f"label {label!r} needs its parent {parent!r} "
                                               "in the label file too")
    return list(first_line)


def detect_task(path, labelled: bool = True) -> str:
    """"text" or "pair" from the column count of the file's first non-blank line.

    Labelled files: 2 columns = text, 3 = pair. Unlabelled (data.txt): 1 = text, 2 = pair.
    Later lines are then held to that count, so a mixed file fails on its first odd line.
    """
    return _detect(path, _rows(path)[0], labelled)


def read_examples(path, labels: list[str] | None, task: str = "auto",
                  problem_type: str = "multi_class") -> tuple[list[Example], str]:
    """Read and validate a data file; returns (examples, task).

    ``labels=None`` reads an unlabelled file (every column is text); otherwise every label
    must be in ``labels``. ``task="auto"`` detects it with :func:`detect_task`.
    """
    _check_choice("task", task, ("auto",) + TASKS)
    _check_choice("problem_type", problem_type, PROBLEM_TYPES)
    rows, blank = _rows(path)
    labelled = labels is not None
    if task == "auto":
        task = _detect(path, rows, labelled)
    columns = _COLUMNS[task, labelled]
    label_set = frozenset(labels) if labelled else frozenset()
    examples = []
    for number, cols in rows:
        if len(cols) != len(columns):
            raise data_error(path, number, _column_problem(columns, len(cols)))
        text_a = cols[0]
        text_b = cols[1] if task == "pair" else None
        if not text_a.strip():
            raise data_error(path, number, f"{columns[0]} (column 1) is empty")
        if text_b is not None and not text_b.strip():
            raise data_error(path, number, "text_b (column 2) is empty")
        found = _parse_labels(path, number, cols[-1], label_set, problem_type) if labelled else ()
        examples.append(Example(text_a, text_b, found, number))
    if blank:
        logger.warning("%s: skipped %d blank line%s", path, blank, "" if blank == 1 else "s")
    return examples, task


def read_texts(path, task: str) -> list[Example]:
    """Read an unlabelled file (data.txt) for prediction; ``task`` may be "auto"."""
    return read_examples(path, None, task)[0]


def load_dataset(dataset_dir, *, train_file: str = "train.txt", dev_file: str = "dev.txt",
                 test_file: str = "test.txt", label_file: str = "label.txt", task: str = "auto",
                 problem_type: str = "multi_class",
                 require: Sequence[str] = ("train", "dev")) -> DatasetFolder:
    """Load and validate a dataset folder.

    File names may be absolute or relative to ``dataset_dir``. Splits in ``require`` must exist;
    the others are read when present. With ``task="auto"`` the task is detected from the first
    split present (train, dev, test) and every other file must have the same columns.
    """
    unknown = set(require) - set(SPLITS)
    if unknown:
        raise ValueError(f"require: unknown split(s) {sorted(unknown)}; choose from {SPLITS}")
    _check_choice("task", task, ("auto",) + TASKS)
    root = Path(dataset_dir)
    labels = read_labels(_existing(root, label_file, "label"), problem_type)
    loaded: dict[str, list[Example]] = {}
    for split, name in zip(SPLITS, (train_file, dev_file, test_file)):
        path = root / name
        if split in require:
            path = _existing(root, name, split)
        elif not path.exists():
            continue
        loaded[split], task = read_examples(path, labels, task, problem_type)
    if task == "auto":
        raise ZhclsError(f"{root}: cannot tell single texts from sentence pairs without a train, dev "
                         "or test file; give the task (text or pair)")
    return DatasetFolder(labels, task, problem_type, loaded.get("train", []),
                         loaded.get("dev", []), loaded.get("test"))


def encode_labels(examples: Sequence[Example], labels: Sequence[str], problem_type: str) -> np.ndarray:
    """Class ids (int64, shape (n,)) for multi_class; multi-hot float32 (n, C) otherwise."""
    _check_choice("problem_type", problem_type, PROBLEM_TYPES)
    index = {label: i for i, label in enumerate(labels)}

    def class_id(label: str, line: int) -> int:
        # Reached when examples are checked against another label list, e.g. a trained model's.
        if label not in index:
            raise ZhclsError(f"line {line}: label {label!r} is not among the {len(index)} labels")
        return index[label]

    if problem_type == "multi_class":
        ids = np.empty(len(examples), dtype=np.int64)
        for row, example in enumerate(examples):
            if len(example.labels) != 1:
                raise ZhclsError(f"line {example.line}: multi_class needs exactly one label, "
                                 f"found {len(example.labels)}")
            ids[row] = class_id(example.labels[0], example.line)
        return ids
    hot = np.zeros((len(examples), len(index)), dtype=np.float32)
    for row, example in enumerate(examples):
        for label in example.labels:
            hot[row, class_id(label, example.line)] = 1.0
    return hot



def format_example(example: Example) -> str:
    """The example as a data line (without the line end): the inverse of reading it."""
    columns = [example.text_a] + ([example.text_b] if example.text_b is not None else [])
    return "\t".join(columns + [LABEL_SEP.join(example.labels)])


def write_examples(path, examples: Sequence[Example]) -> Path:
    """Write a dataset file (``text<TAB>label`` lines, pairs and multi-label as read), atomically."""
    with atomic_open(path) as f:
        f.writelines(format_example(e) + "\n" for e in examples)
    return Path(path)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ZhclsError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")


def _existing(root: Path, name, split: str) -> Path:
    """``root / name``, or a 'file not found' error naming the flag that changes it."""
    path = root / name
    if path.exists():
        return path
    problem = f"file not found; use --{split}_file to give another name or path"
    if not Path(name).is_absolute() and not root.is_dir():
        problem += f" (the dataset folder {root} does not exist either; check --dataset_dir)"
    raise data_error(path, None, problem)


def read_lines(path) -> list[str]:
    """The file's lines as UTF-8 text without line ends (BOM and CRLF accepted)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise data_error(path, None, "file not found") from None
    except IsADirectoryError:
        raise data_error(path, None, "this is a folder, not a file") from None
    except OSError as err:
        raise data_error(path, None, f"cannot read the file: {err.strerror}") from None
    start = len(_BOM) if raw.startswith(_BOM) else 0
    try:
        text = raw[start:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = start + err.start
        line = raw.count(b"\n", 0, offset) + 1
        column = offset - (raw.rfind(b"\n", 0, offset) + 1)
        problem = (f"not UTF-8 text: byte 0x{raw[offset]:02X} at byte offset {column} of the line; "
                   "save the file as UTF-8 (e.g. convert it from GBK)")
        raise data_error(path, line, problem) from None
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[-1] == "":  # the newline that ends the last line does not start another one
        lines.pop()
    return lines


def _rows(path) -> tuple[list[tuple[int, list[str]]], int]:
    """(line number, columns) of the non-blank lines, and how many blank lines were skipped."""
    lines = read_lines(path)
    rows = [(number, line.split("\t")) for number, line in enumerate(lines, 1) if line.strip()]
    if not rows:
        raise data_error(path, None, "the file has no data lines (it is empty or blank)")
    return rows, len(lines) - len(rows)


def _detect(path, rows: list[tuple[int, list[str]]], labelled: bool) -> str:
    number, cols = rows[0]
    for task in TASKS:
        if len(cols) == len(_COLUMNS[task, labelled]):
            return task
    text, pair = (_COLUMNS[task, labelled] for task in TASKS)
    raise data_error(path, number, "cannot tell single texts from sentence pairs: expected "
                                   f"{_count(text)} or {len(pair)} ({', '.join(pair)}), "
                                   f"found {len(cols)}{_column_hint(text, len(cols))}")


def _column_problem(columns: tuple[str, ...], found: int) -> str:
    return f"expected {_count(columns)}, found {found}{_column_hint(columns, found)}"


def _count(columns: tuple[str, ...]) -> str:
    """``2 tab-separated columns (text, label)``"""
    n = len(columns)
    return f"{n} tab-separated column{'' if n == 1 else 's'} ({', '.join(columns)})"


def _column_hint(columns: tuple[str, ...], found: int) -> str:
    """The likely cause of a wrong column count, for the two common mistakes."""
    if found == 1:
        return "; separate the columns with a tab, not spaces"
    if "label" not in columns and found == len(columns) + 1:
        return "; a file to predict has no label column"
    return ""


def _parse_labels(path, number: int, field: str, label_set: frozenset[str],
                  problem_type: str) -> tuple[str, ...]:
    """Split and check the label column of one line."""
    if problem_type == "multi_class":
        if not field:
            raise data_error(path, number, "the label (last column) is empty")
        if field not in label_set:
            hint = ""
            if LABEL_SEP in field and all(part in label_set for part in field.split(LABEL_SEP)):
                hint = "; several labels per line need problem type multi_label"
            raise data_error(path, number, _unknown_label(field, label_set) + hint)
        return (field,)
    if not field:  # no label applies: a negative example
        return ()
    found = tuple(field.split(LABEL_SEP))
    for label in found:
        if not label:
            raise data_error(path, number, f"empty label in {field!r}; separate labels with single commas")
        if label not in label_set:
            raise data_error(path, number, _unknown_label(label, label_set))
    if len(set(found)) != len(found):
        twice = next(label for label in found if found.count(label) > 1)
        raise data_error(path, number, f"label {twice!r} is listed twice")
    if problem_type == "hierarchical":
        for label in found:
            parent = label.rpartition(LEVEL_SEP)[0]
            if parent and parent not in found:
                raise data_error(path, number, f"label {label!r} needs its parent {parent!r} on the same "
                                               f"line (write every level, e.g. '{parent},{label}')")
    return found


def _unknown_label(label: str, label_set: frozenset[str]) -> str:
    problem = f"label {label!r} is not in label.txt"
    if label.strip() in label_set:
        problem += " (remove the spaces around it)"
    return problem
