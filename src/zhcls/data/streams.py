"""Texts to predict, read as a stream: one record at a time from many files, whatever their size.

Three formats: today's text lines (``text`` or ``text_a<TAB>text_b``), JSON lines with named fields,
Parquet (pyarrow, the ``[parquet]`` extra) read in row batches. A record that cannot be read (bad UTF-8,
wrong column count, not a JSON object, a missing or empty field, a null) is yielded with its ``problem``
and its place (file and 1-based line, or row for Parquet), so that the caller applies its error policy
and nothing is dropped silently; blank text lines are skipped and counted, as `dataset.read_examples`
does. A problem with a whole file (missing, a Parquet column that is not text) is a `ZhclsError` at once.
"""
from __future__ import annotations

import glob
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from zhcls.data.dataset import _BOM, _COLUMNS, _column_problem
from zhcls.errors import ZhclsError, data_error, require

FORMATS = ("text", "jsonl", "parquet")
SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
PARQUET_BATCH = 8192  # rows per Parquet read: memory stays one batch, not one file


@dataclass(frozen=True, slots=True)
class Record:
    """One input to predict, or (``problem`` set) one that cannot be."""

    source: str
    line: int  # 1-based line (text, JSONL) or row (Parquet)
    text_a: str | None
    text_b: str | None = None
    problem: str | None = None

    @property
    def text(self):
        """What `Predictor.predict` takes: the text, or the (text_a, text_b) pair."""
        return self.text_a if self.text_b is None else (self.text_a, self.text_b)

    def where(self) -> str:
        return f"{self.source}:{self.line}"


def input_paths(patterns: Sequence[str], root=".") -> list[Path]:
    """Files named or matched (glob, ``**`` too) by ``patterns``, relative to ``root`` unless absolute, in the
    order given (a glob's matches sorted). A name or pattern that matches nothing is an error."""
    paths = []
    for pattern in patterns:
        full = Path(root) / pattern
        if glob.has_magic(str(pattern)):
            matched = sorted(Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())
            if not matched:
                raise ZhclsError(f"{full}: no file matches this pattern")
            paths.extend(matched)
        elif full.is_dir():
            raise data_error(full, None, "this is a folder, not a file (give a glob such as DIR/*.txt)")
        elif not full.exists():
            raise data_error(full, None, "file not found")
        else:
            paths.append(full)
    return paths


def file_format(path, fmt: str = "auto") -> str:
    """``fmt``, or (auto) the format the suffix says: .jsonl / .json, .parquet, else text lines."""
    if fmt == "auto":
        return SUFFIXES.get(Path(path).suffix.lower(), "text")
    if fmt not in FORMATS:
        raise ZhclsError(f"--input_format {fmt}: expected auto, {', '.join(FORMATS)}")
    return fmt


class Records:
    """Every record of every file, in order (iterate it once). ``task``: "text" or "pair". ``line_safe``: a
    JSONL / Parquet text holding a tab or a line break is a problem (a text output line could not carry it).
    ``blank``: the blank lines skipped so far."""

    def __init__(self, paths: Sequence[Path], task: str, *, fmt: str = "auto", text_field: str = "text",
                 text_pair_field: str = "text_pair", line_safe: bool = True):
        if task not in ("text", "pair"):
            raise ZhclsError(f"task {task!r}: expected text or pair")
        self.paths, self.task, self.fmt, self.line_safe = list(paths), task, fmt, line_safe
        self.fields = [text_field] + ([text_pair_field] if task == "pair" else [])
        self.formats = [file_format(p, fmt) for p in self.paths]  # an unknown --input_format fails before any work
        for path, kind in zip(self.paths, self.formats):
            if kind == "parquet":  # a column of the wrong type fails before any work too
                parquet_file(path, self.fields)
        self.blank = 0

    def __iter__(self) -> Iterator[Record]:
        for path, kind in zip(self.paths, self.formats):
            if kind == "text":
                yield from self._text_records(path)
            else:
                rows = self._jsonl_rows(path) if kind == "jsonl" else _parquet_rows(path, self.fields)
                yield from self._field_records(path, rows)

    def _text_records(self, path: Path) -> Iterator[Record]:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if number == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                try:
                    line = raw.decode("utf-8").rstrip("\n").rstrip("\r")
                except UnicodeDecodeError as err:
                    yield Record(str(path), number, None, problem=f"not UTF-8 text: byte 0x{raw[err.start]:02X} at "
                                 f"byte offset {err.start} of the line; save the file as UTF-8")
                    continue
                if not line.strip():
                    self.blank += 1
                    continue
                text_a, text_b, problem = split_line(line, self.task)
                yield Record(str(path), number, text_a, text_b, problem)

    def _jsonl_rows(self, path: Path) -> Iterator[tuple[int, object]]:
        """(line, parsed value) per non-blank line; a line that does not parse gives its problem in a 1-tuple."""
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if number == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                if not raw.strip():
                    self.blank += 1
                    continue
                try:
                    yield number, json.loads(raw)
                except UnicodeDecodeError:
                    yield number, ("not UTF-8 text; save the file as UTF-8",)
                except json.JSONDecodeError as e:
                    yield number, (f"not valid JSON ({e.msg} at column {e.colno})",)

    def _field_records(self, path: Path, rows) -> Iterator[Record]:
        for number, row in rows:
            problem = row[0] if isinstance(row, tuple) else field_problem(row, self.fields, self.line_safe)
            if problem:
                yield Record(str(path), number, None, problem=problem)
            else:
                yield Record(str(path), number, row[self.fields[0]], row[self.fields[1]] if self.task == "pair" else None)


def split_line(line: str, task: str) -> tuple[str | None, str | None, str | None]:
    """(text_a, text_b, problem) of one non-blank text line: ``text`` or ``text_a<TAB>text_b``."""
    columns = _COLUMNS[task, False]
    cols = line.split("\t")
    if len(cols) != len(columns):
        return None, None, _column_problem(columns, len(cols))
    if not all(c.strip() for c in cols):
        return None, None, "a text column is empty"
    return cols[0], cols[1] if task == "pair" else None, None


def field_problem(row, fields: Sequence[str], line_safe: bool = True) -> str | None:
    """What is wrong with a JSON / Parquet row's text fields, or None."""
    if not isinstance(row, dict):
        return f"a JSON object expected, found {type(row).__name__}"
    for field in fields:
        value = row.get(field)
        if field not in row:
            return f"no field {field!r} (fields: {', '.join(map(str, row)) or 'none'}); name it with --text_field"
        if not isinstance(value, str):
            return f"field {field!r} is {'null' if value is None else type(value).__name__}, not a string"
        if not value.strip():
            return f"field {field!r} is empty"
        if line_safe and any(c in value for c in "\t\n\r"):
            return (f"field {field!r} holds a tab or a line break, which a text output line cannot carry "
                    "(write a .jsonl --output_file)")
    return None


def parquet_file(path: Path, fields: Sequence[str]):
    """The open Parquet file, its columns ``fields`` checked to be strings (the footer only: cheap)."""
    pq = require("pyarrow.parquet", "parquet", "reading Parquet input")
    pa = require("pyarrow", "parquet", "reading Parquet input")
    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow's own errors: not a Parquet file, truncated footer
        raise data_error(path, None, f"not a readable Parquet file ({str(e).splitlines()[0]})") from None
    schema = parquet.schema_arrow
    for field in fields:
        if field not in schema.names:
            raise data_error(path, None, f"no column {field!r} (columns: {', '.join(schema.names)}); "
                                         "name the text column with --text_field")
        kind = schema.field(field).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise data_error(path, None, f"column {field!r} holds {kind}, not strings")
    return parquet


def _parquet_rows(path: Path, fields: list[str]) -> Iterator[tuple[int, object]]:
    number = 0
    for batch in parquet_file(path, fields).iter_batches(batch_size=PARQUET_BATCH, columns=fields):
        columns = [batch.column(name).to_pylist() for name in fields]
        for values in zip(*columns):
            number += 1
            yield number, dict(zip(fields, values))
