"""`zhcls predict` on inputs of any size: read as a stream, scored a chunk at a time, written as ready.

Memory is bounded by one chunk (``chunk_size`` texts, sorted by length inside it by `Predictor.predict`,
written back in input order), never by the input. Inputs: text lines, JSON lines, Parquet, many files or
globs (`data.streams`). A malformed record is reported with its file:line and either fails the run
(``on_error="fail"``, the default) or is skipped and counted (``"skip"``); nothing is dropped silently.

The output and its resume protocol. A run writes ``OUTPUT.partial`` beside ``OUTPUT``: the header, then
one line per input after each chunk (flushed and fsynced), and renames it to ``OUTPUT`` when the input is
done, so ``OUTPUT`` itself is only ever complete, as with every zhcls write. A killed run leaves the
partial file, at worst ending in a torn line. ``resume=True`` reads it back: the torn tail (a line with
no line end) is cut off, the header must be the one this run would write, and each complete line's text
must be the next valid input's (so a partial file of other inputs or options is refused, never mixed in);
those inputs are skipped, and the run appends from there. Input order and the skip policy are
deterministic, so the resumed output is line for line the one an uninterrupted run writes. Without
``resume`` an existing partial file is refused rather than overwritten.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from zhcls.data.dataset import read_labels
from zhcls.data.streams import Record, Records, input_paths
from zhcls.errors import ZhclsError, data_error
from zhcls.inference.config import PredictConfig
from zhcls.inference.loading import load, read_meta
from zhcls.inference.predictor import format_prediction, output_header, prediction_row
from zhcls.io import check_output_files

log = logging.getLogger("zhcls")
SHOWN_SKIPS = 20  # malformed records logged one by one; the rest are counted in the summary


@dataclass
class Summary:
    output: Path
    written: int = 0   # predictions this run wrote
    resumed: int = 0   # predictions an earlier run had written
    skipped: int = 0   # malformed records skipped (--on_error skip)
    blank: int = 0     # blank lines skipped
    seconds: float = 0.0

    def line(self) -> str:
        parts = [f"{self.resumed + self.written} predictions written to {self.output}"]
        if self.resumed:
            parts.append(f"{self.resumed} of them by the interrupted run, {self.written} now")
        if self.skipped:
            parts.append(f"{self.skipped} malformed input record{'s' if self.skipped > 1 else ''} skipped "
                         "(--on_error skip; see the warnings)")
        if self.blank:
            parts.append(f"{self.blank} blank line{'s' if self.blank > 1 else ''} skipped")
        if self.written and self.seconds:
            parts.append(f"{self.written / self.seconds:.0f} texts/s")
        return "; ".join(parts)


class OutputFormat:
    """Today's text lines (a header, ``text<TAB>label<TAB>confidence``), or JSON lines (`prediction_row`)."""

    def __init__(self, path: Path, multi_label: bool, topk: int):
        self.jsonl = path.suffix.lower() == ".jsonl"
        self.header = None if self.jsonl else output_header(multi_label, topk)

    def line(self, text, result: dict) -> str:
        if self.jsonl:
            return json.dumps(prediction_row(text, result), ensure_ascii=False)
        return format_prediction(text, result)

    def starts_with(self, line: str, text) -> bool:
        """Whether an output line is the prediction of this input (the resume check)."""
        if self.jsonl:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                return False
            pair = isinstance(text, tuple)
            return isinstance(row, dict) and [row.get("text"), row.get("text_pair")] == \
                ([text[0], text[1]] if pair else [text, None])
        shown = "\t".join(text) if isinstance(text, tuple) else text
        return line.startswith(shown + "\t")


def onnx_threads(params_path, backend: str, threads: int | None) -> dict:
    """``threads`` as a `load()` keyword when the ONNX backend will serve (the PyTorch one has its own)."""
    onnx = backend == "onnx" or (backend == "auto" and (Path(params_path) / "model.onnx").exists())
    return {"threads": threads} if threads and onnx else {}


def partial_path(output) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".partial")


def predict_files(config: PredictConfig) -> Summary:
    """`zhcls predict`: the config's inputs scored into its output (see the module docstring)."""
    config.check()
    if config.engine != "local":  # the Ray engine lives above this layer
        raise ZhclsError(f"engine {config.engine!r}: this is the local engine; use zhcls.distributed.predict_files")
    start = time.perf_counter()
    paths = input_paths(config.data_file, config.dataset_dir)
    meta = read_meta(config.params_path)
    long_text = config.long_text_override(config.params_path)
    output, partial = Path(config.output_file), partial_path(config.output_file)
    check_output_files([output, partial], flag="--output_file", inputs=config.inputs(paths))
    fmt = OutputFormat(output, meta.get("problem_type", "multi_class") != "multi_class", config.topk)
    records = Records(paths, meta.get("task", "text"), fmt=config.input_format, text_field=config.text_field,
                      text_pair_field=config.text_pair_field, line_safe=not fmt.jsonl)
    summary = Summary(output)
    if partial.exists() and not config.resume:
        raise ZhclsError(f"{partial}: an interrupted run's output; pass --resume to continue it, or delete it")
    if config.resume and not partial.exists() and output.exists():
        log.info("%s is complete; nothing to resume", output)
        return summary
    valid = _apply_policy(records, config.on_error, summary)
    if config.resume and partial.exists():
        summary.resumed = _skip_done(partial, fmt, valid)
    first = list(itertools.islice(valid, config.chunk_size))  # the input checked before the model is loaded
    if not first and not summary.resumed:
        raise ZhclsError(f"{', '.join(map(str, paths))}: no text to predict")
    predictor = load(config.params_path, backend=config.backend, device=config.device,
                     batch_size=config.batch_size, max_seq_length=config.max_seq_length,
                     **onnx_threads(config.params_path, config.backend, config.threads))
    if config.label_file:
        labels = read_labels(Path(config.dataset_dir) / config.label_file, predictor.problem_type)
        if labels != predictor.labels:
            raise ZhclsError(f"{config.label_file}: labels differ from the model's ({', '.join(predictor.labels[:5])}, ...)")
    if long_text is not None:
        predictor.long_text = long_text
    fresh = not summary.resumed and not partial.exists()
    try:
        with open(partial, "a" if partial.exists() else "w", encoding="utf-8", newline="\n") as out, \
                tqdm(desc="predict", unit="text", initial=summary.resumed, disable=not config.progress,
                     dynamic_ncols=True) as bar:
            if fmt.header is not None and out.tell() == 0:
                out.write(fmt.header + "\n")
            for chunk in itertools.chain([first], _chunks(valid, config.chunk_size)):
                if not chunk:
                    continue
                texts = [r.text for r in chunk]
                results = predictor.predict(texts, **config.decision())
                out.write("".join(fmt.line(t, r) + "\n" for t, r in zip(texts, results)))
                out.flush()
                os.fsync(out.fileno())  # a line counted as done is on disk: resume never repeats or loses one
                summary.written += len(chunk)
                bar.update(len(chunk))
    except ZhclsError:
        if fresh and not summary.written:  # nothing done: leave nothing behind
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        elif summary.written or summary.resumed:
            log.warning("%d predictions kept in %s: fix the input and rerun with --resume",
                        summary.resumed + summary.written, partial)
        raise
    except KeyboardInterrupt:
        log.warning("%d predictions kept in %s; rerun with --resume to continue",
                    summary.resumed + summary.written, partial)
        raise
    os.replace(partial, output)
    summary.blank, summary.seconds = records.blank, time.perf_counter() - start
    return summary


def _apply_policy(records: Records, on_error: str, summary: Summary):
    """The valid records; a malformed one fails the run or is skipped with a warning and counted."""
    for record in records:
        if record.problem is None:
            yield record
            continue
        if on_error == "fail":
            raise data_error(record.source, record.line, f"{record.problem} (--on_error skip skips such records)")
        summary.skipped += 1
        if summary.skipped <= SHOWN_SKIPS:
            log.warning("%s: %s (skipped: --on_error skip)", record.where(), record.problem)
        if summary.skipped == SHOWN_SKIPS:
            log.warning("further malformed records are skipped without a warning each; the summary counts them")


def _chunks(records, size: int):
    while chunk := list(itertools.islice(records, size)):
        yield chunk


def _skip_done(partial: Path, fmt: OutputFormat, valid) -> int:
    """Check the partial output against the input, cut a torn last line, and consume the inputs it holds.
    Returns how many predictions it holds. Reads it line by line: memory stays bounded."""
    done, keep = 0, 0  # keep: bytes up to the end of the last complete line
    with open(partial, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                log.warning("%s: its last line was cut off by the interruption; it is predicted again", partial)
                break
            line = raw.decode("utf-8").rstrip("\n")
            if number == 1 and fmt.header is not None:
                if line != fmt.header:
                    raise data_error(partial, 1, f"header {line!r}, but this run writes {fmt.header!r}: it was "
                                                 "written with other options (--topk, model); delete it to start again")
            else:
                record: Record | None = next(valid, None)
                if record is None or not fmt.starts_with(line, record.text):
                    raise data_error(partial, number, "does not match the input "
                                     + ("(the input has fewer texts)" if record is None else f"at {record.where()}")
                                     + "; it was written for other inputs: delete it to start again")
                done += 1
            keep += len(raw)
    with open(partial, "r+b") as f:
        f.truncate(keep)
    return done
