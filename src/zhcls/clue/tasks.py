"""The seven CLUE classification tasks: their raw format (JSON lines, as CLUE's ``{task}_public.zip``
ships it), their conversion to the dataset folder format, and their submission format.

A converted task folder holds ``train.txt``, ``dev.txt``, ``label.txt`` (labels in CLUE's order) and,
when the raw test split is there, ``data.txt`` (the unlabelled test texts, `zhcls predict`'s input)
with ``ids.txt`` (CLUE's id of each). Texts lose tabs and newlines (the folder format's separators).
CMNLI and OCNLI mark examples without a majority label as ``-``: CLUE's own processors skip them, so
does the conversion, and says how many.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zhcls.errors import ZhclsError, data_error
from zhcls.io import atomic_open

log = logging.getLogger("zhcls")

# TNEWS's label codes (labels.json): submissions give the code and the description.
TNEWS_LABELS = {"100": "news_story", "101": "news_culture", "102": "news_entertainment", "103": "news_sports",
                "104": "news_finance", "106": "news_house", "107": "news_car", "108": "news_edu", "109": "news_tech",
                "110": "news_military", "112": "news_travel", "113": "news_world", "114": "news_stock",
                "115": "news_agriculture", "116": "news_game"}
NLI_LABELS = ["contradiction", "entailment", "neutral"]
NO_MAJORITY = "-"


def _clean(text) -> str:
    return " ".join(str(text).split("\t")).replace("\r", " ").replace("\n", " ").strip()


def _wsc_text(row: dict) -> str:
    """The text with the entity in [] and the pronoun in __, as PaddleNLP's CLUE runner marks them."""
    target = row["target"]
    chars = list(row["text"])
    spans = [(target["span1_index"], target["span1_text"], "[", "]"), (target["span2_index"], target["span2_text"], "_", "_")]
    for start, span, left, right in sorted(spans, reverse=True):  # the later span first: indices stay valid
        if "".join(chars[start:start + len(span)]) != span:
            raise ValueError(f"span {span!r} is not at index {start}")
        chars[start + len(span):start + len(span)] = [right]
        chars[start:start] = [left]
    return "".join(chars)


@dataclass(frozen=True)
class Task:
    name: str
    texts: Callable[[dict], tuple[str, ...]]  # one text, or a pair
    labels: list[str] | None  # None: from the zip's labels.json
    label_field: str = "label"
    metric: str = "accuracy"

    @property
    def url(self) -> str:
        return f"https://storage.googleapis.com/cluebenchmark/tasks/{self.name}_public.zip"

    def label_list(self, raw_dir: Path) -> list[str]:
        if self.labels is not None:
            return self.labels
        return [row["label"] for _, row in read_jsonl(raw_dir / "labels.json", fields=("label",))]

    def submission(self, cid, label: str) -> dict:
        """One line of ``{task}_predict.json``."""
        if self.name == "tnews":  # our label is the description; CLUE wants the code too
            code = next(c for c, desc in TNEWS_LABELS.items() if desc == label)
            return {"id": cid, "label": code, "label_desc": label}
        return {"id": cid, "label": label}


TASKS = {t.name: t for t in [
    Task("afqmc", lambda r: (r["sentence1"], r["sentence2"]), ["0", "1"]),
    Task("tnews", lambda r: (r["sentence"],), list(TNEWS_LABELS.values()), label_field="label_desc"),
    Task("iflytek", lambda r: (r["sentence"],), None),
    Task("cmnli", lambda r: (r["sentence1"], r["sentence2"]), NLI_LABELS),
    Task("ocnli", lambda r: (r["sentence1"], r["sentence2"]), NLI_LABELS),
    Task("cluewsc2020", lambda r: (_wsc_text(r),), ["false", "true"]),
    Task("csl", lambda r: (" ".join(r["keyword"]), r["abst"]), ["0", "1"]),
]}


def parse_tasks(names: str) -> list[Task]:
    tasks = []
    for name in (n.strip().lower() for n in names.split(",") if n.strip()):
        if name not in TASKS:
            raise ZhclsError(f"--tasks: unknown task {name!r}; CLUE's classification tasks are {', '.join(TASKS)}")
        tasks.append(TASKS[name])
    if not tasks:
        raise ZhclsError("--tasks: name at least one task")
    return tasks


def read_jsonl(path: Path, fields: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """(line number, object) of each non-blank line; a line that is not a JSON object with ``fields`` is an error."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ZhclsError(f"{path}: missing") from None
    except UnicodeDecodeError as e:
        raise data_error(path, None, f"not UTF-8 ({e.reason})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise data_error(path, number, f"not JSON ({e.msg})") from None
        if not isinstance(row, dict) or any(f not in row for f in fields):
            raise data_error(path, number, f"expected a JSON object with {', '.join(fields)}")
        rows.append((number, row))
    return rows


def _example(task: Task, path: Path, number: int, row: dict) -> list[str]:
    try:
        return [_clean(t) for t in task.texts(row)]
    except (KeyError, TypeError, ValueError) as e:
        raise data_error(path, number, f"not a {task.name} example ({type(e).__name__}: {e})") from None


def convert(task: Task, raw_dir: Path, out: Path) -> Path:
    """Raw CLUE files (train.json, dev.json, [test.json], [labels.json]) -> a dataset folder at ``out``."""
    labels = task.label_list(raw_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        path = raw_dir / f"{split}.json"
        lines, skipped = [], 0
        for number, row in read_jsonl(path, fields=(task.label_field,)):
            label = str(row[task.label_field])
            if label == NO_MAJORITY and task.labels == NLI_LABELS:
                skipped += 1
                continue
            if label not in labels:
                raise data_error(path, number, f"label {label!r} is not one of {task.name}'s {len(labels)} labels")
            lines.append("\t".join([*_example(task, path, number, row), label]))
        if skipped:
            log.info("%s: %d examples without a majority label (%r) skipped, as CLUE does", path, skipped, NO_MAJORITY)
        with atomic_open(out / f"{split}.txt") as f:
            f.write("".join(line + "\n" for line in lines))
    with atomic_open(out / "label.txt") as f:
        f.write("".join(label + "\n" for label in labels))
    test = raw_dir / "test.json"
    if test.exists():
        rows = read_jsonl(test)
        with atomic_open(out / "data.txt") as f:
            f.write("".join("\t".join(_example(task, test, n, row)) + "\n" for n, row in rows))
        with atomic_open(out / "ids.txt") as f:  # CLUE numbers test examples by their line when "id" is absent
            f.write("".join(f"{row.get('id', i)}\n" for i, (_, row) in enumerate(rows)))
    return out
