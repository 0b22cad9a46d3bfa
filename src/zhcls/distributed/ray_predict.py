"""Prediction on a Ray cluster: Ray Data reads the inputs, an actor pool scores them, rows come back in order.

Each actor loads the ONNX predictor of an export folder once (INT8 when the export has it) and then scores
batches of rows; it asks Ray for ``threads`` CPUs and gives ONNX Runtime exactly that many intra-op threads,
so the actors Ray places on a machine never ask for more cores than it has. Actors are restarted when their
process dies and their batches retried (Ray Data's actor pool defaults to ``max_restarts=-1`` and
``max_task_retries=-1``; passing them here is deprecated since Ray 2.5x, and tests/test_distributed.py kills an
actor to hold Ray to it): a killed worker costs time, never rows. A row's text is checked as in
the single-machine path (`data.streams`): a malformed one gets a ``problem`` instead of a prediction, and the
caller applies its policy. Output rows are `inference.predictor.prediction_row`'s, as `zhcls predict` writes
them to a .jsonl file.
"""
from __future__ import annotations

import logging
import socket
from pathlib import Path

from tqdm.auto import tqdm

from zhcls.data.streams import field_problem, file_format, input_paths, split_line
from zhcls.errors import ZhclsError, data_error, require
from zhcls.inference.config import PredictConfig
from zhcls.inference.loading import read_meta
from zhcls.inference.onnx_predictor import OnnxPredictor
from zhcls.inference.predictor import prediction_row
from zhcls.inference.streaming import SHOWN_SKIPS, OutputFormat, Summary
from zhcls.io import atomic_open, check_output_files

log = logging.getLogger("zhcls")
BLANK = ""  # the problem of a blank text line: skipped and counted, as the single-machine path does
CONNECT_TIMEOUT_S = 5.0
READ_CPUS = 0.25


class PredictActor:
    """One Ray actor: the predictor loaded once, then pandas batches of input rows in, prediction rows out."""

    def __init__(self, params_path: str, *, threads: int, batch_size: int, max_seq_length: int | None, task: str,
                 text_field: str, text_pair_field: str, text_lines: bool, line_safe: bool, decision: dict,
                 long_text=None):
        self.predictor = OnnxPredictor.from_dir(params_path, device="cpu", threads=threads, batch_size=batch_size,
                                                max_seq_length=max_seq_length)
        if long_text is not None:
            self.predictor.long_text = long_text
        self.task, self.text_lines, self.line_safe, self.decision = task, text_lines, line_safe, decision
        self.fields = [text_field] + ([text_pair_field] if task == "pair" else [])

    def parse(self, row: dict):
        """(text or pair, problem) of one input row."""
        if self.text_lines:  # read_text: one line per row, split here as `Records` splits it
            line = row["text"].rstrip("\r")
            if not line.strip():
                return None, BLANK
            a, b, problem = split_line(line, self.task)
            return (a if b is None else (a, b)), problem
        problem = field_problem(row, self.fields, self.line_safe)
        if problem is not None:
            return None, problem
        return (row[self.fields[0]] if self.task == "text" else (row[self.fields[0]], row[self.fields[1]])), None

    def __call__(self, batch):
        import pandas as pd

        rows = batch.to_dict("records")
        parsed = [self.parse({k: (None if _missing(v) else v) for k, v in row.items()}) for row in rows]
        texts = [text for text, problem in parsed if problem is None]
        results = iter(self.predictor.predict(texts, **self.decision) if texts else [])
        out = []
        for row, (text, problem) in zip(rows, parsed):
            record = prediction_row(text, next(results)) if problem is None else {}
            out.append({**record, "problem": problem, "path": row.get("path")})
        return pd.DataFrame(out)


def _missing(value) -> bool:
    """pandas' missing value (NaN / None) of a column some JSON rows lack."""
    return value is None or (isinstance(value, float) and value != value)


def predict_dataset(dataset, params_path, *, num_workers: int = 1, threads: int = 1, batch_size: int = 32,
                    max_seq_length: int | None = None, rows_per_batch: int = 1024, text_field: str = "text",
                    text_pair_field: str = "text_pair", text_lines: bool = False, line_safe: bool = False,
                    long_text=None, **decision):
    """A Ray Dataset of prediction rows for ``dataset``'s rows (lazy: write it with Ray Data's writers, or
    iterate it). ``params_path``: an export folder (`zhcls export`), reachable at the same path on every
    node. Input rows hold ``text_field`` (and ``text_pair_field`` for a pair model); ``text_lines``: rows are
    `ray.data.read_text` lines (``text``, tab-separated pairs). Each output row: `prediction_row`'s fields,
    ``problem`` (None, or why the row has no prediction) and ``path`` (with ``include_paths=True`` reads).
    ``decision``: `Predictor.predict`'s keywords (topk, threshold, min_labels, max_labels, hierarchy_policy)."""
    params_path = export_folder(params_path)
    if num_workers < 1 or threads < 1:
        raise ZhclsError(f"--num_workers {num_workers} / --threads {threads}: both must be >= 1")
    task = read_meta(params_path).get("task", "text")
    options = dict(threads=threads, batch_size=batch_size, max_seq_length=max_seq_length, task=task,
                   text_field=text_field, text_pair_field=text_pair_field, text_lines=text_lines,
                   line_safe=line_safe, decision=decision, long_text=long_text)
    return dataset.map_batches(PredictActor, fn_constructor_args=(str(params_path),), fn_constructor_kwargs=options,
                               batch_size=rows_per_batch, batch_format="pandas", concurrency=num_workers,
                               num_cpus=threads)


def export_folder(params_path) -> Path:
    path = Path(params_path)
    if not (path / "model.onnx").exists():
        raise ZhclsError(f"--params_path {path}: --engine ray serves an export folder (model.onnx); "
                         f"make one with `zhcls export --params_path {path} --quantize int8`")
    return path


def connect(address: str | None):
    """``ray.init`` on ``address`` (None: a local Ray for this process), or a one-line error when nothing
    answers there (probed first: ray.init itself would retry for a minute)."""
    ray = require("ray", "ray", "--engine ray")
    if address and address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except (OSError, ValueError) as e:
            raise ZhclsError(f"--address {address}: no Ray cluster answers there "
                             f"({getattr(e, 'strerror', None) or e}); start one with `ray start --head`") from None
    if ray.is_initialized():  # a caller (a notebook, a test) already joined a cluster: use it
        return ray
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ZhclsError(f"--address {address}: cannot join the Ray cluster ({str(e).splitlines()[0]})") from None
    return ray


def read(paths: list[Path], kind: str, config: PredictConfig):
    """The inputs as one Ray Dataset, in file order, with each row's file (``path``)."""
    import ray

    files = [str(p) for p in paths]
    # Reads ask for a fraction of a CPU: actors holding every core must not starve the reads that feed them.
    if kind == "text":
        return ray.data.read_text(files, drop_empty_lines=False, include_paths=True, num_cpus=READ_CPUS)
    if kind == "jsonl":
        return ray.data.read_json(files, lines=True, include_paths=True, num_cpus=READ_CPUS)
    return ray.data.read_parquet(files, include_paths=True, num_cpus=READ_CPUS)


def predict_files(config: PredictConfig) -> Summary:
    """`zhcls predict --engine ray`: the inputs read by Ray Data, scored by ``num_workers`` actors on the cluster,
    written by this process in input order to the output file (atomically, as one file: no --resume). The
    output is line for line that of the single-machine path."""
    config.check()
    if config.engine != "ray":
        raise ZhclsError(f"engine {config.engine!r}: this is the Ray engine; use zhcls.inference.streaming.predict_files")
    if config.resume:
        raise ZhclsError("--resume: the Ray engine writes its output in one go; rerun without --resume")
    paths = input_paths(config.data_file, config.dataset_dir)
    params = export_folder(config.params_path)
    meta = read_meta(params)
    kinds = {file_format(p, config.input_format) for p in paths}
    if len(kinds) > 1:
        raise ZhclsError(f"--engine ray: the inputs mix formats ({', '.join(sorted(kinds))}); give one format per run")
    output = Path(config.output_file)
    check_output_files([output], flag="--output_file", inputs=config.inputs(paths))
    fmt = OutputFormat(output, meta.get("problem_type", "multi_class") != "multi_class", config.topk)
    long_text = config.long_text_override(str(params))
    joined = require("ray", "ray", "--engine ray").is_initialized()
    ray = connect(config.address)
    summary = Summary(output)
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        kind = kinds.pop()
        rows = predict_dataset(read(paths, kind, config), params, num_workers=config.num_workers,
                               threads=config.threads or 1, batch_size=config.batch_size,
                               max_seq_length=config.max_seq_length, rows_per_batch=config.chunk_size,
                               text_field=config.text_field, text_pair_field=config.text_pair_field,
                               text_lines=kind == "text", line_safe=not fmt.jsonl, long_text=long_text,
                               **config.decision())
        numbers: dict[str, int] = {}  # rows seen per file: in order, so a row's line in a text or JSONL file
        with atomic_open(output) as out, tqdm(desc="predict (ray)", unit="text", disable=not config.progress) as bar:
            if fmt.header is not None:
                out.write(fmt.header + "\n")
            for row in rows.iter_rows():
                source = row.get("path") or "?"
                numbers[source] = numbers.get(source, 0) + 1
                problem = row.get("problem")
                if problem == BLANK:
                    summary.blank += 1
                    continue
                if problem is not None:
                    _skip(config.on_error, source, numbers[source], problem, summary)
                    continue
                text = row["text"] if row.get("text_pair") is None else (row["text"], row["text_pair"])
                out.write(fmt.line(text, _result(row)) + "\n")
                summary.written += 1
                bar.update()
        if not summary.written:
            raise ZhclsError(f"{', '.join(map(str, paths))}: no text to predict")
    except Exception as e:
        if isinstance(e, ZhclsError):
            raise
        raise ZhclsError(f"--engine ray: the job failed ({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
    finally:
        if not joined:  # the connection this run made, not its caller's
            ray.shutdown()
    return summary


def _result(row: dict) -> dict:
    """`Predictor.predict`'s result back from an output row (for the shared line format)."""
    result = ({"label": row["label"], "score": row["score"]} if row.get("labels") is None
              else {"labels": list(row["labels"]), "scores": list(row["scores"])})
    if row.get("topk") is not None:
        result["topk"] = [(t["label"], t["score"]) for t in row["topk"]]
    return result


def _skip(on_error: str, source: str, number: int, problem: str, summary: Summary) -> None:
    if on_error == "fail":
        raise data_error(source, number, f"{problem} (--on_error skip skips such records)")
    summary.skipped += 1
    if summary.skipped <= SHOWN_SKIPS:
        log.warning("%s:%d: %s (skipped: --on_error skip)", source, number, problem)
