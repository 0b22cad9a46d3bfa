"""Streaming prediction: chunks, formats, the error policy and resume, on KUAKE-QIC dev texts with a tiny model."""
import json

import pytest

from test_export import tiny_checkpoint
from zhcls.cli import main
from zhcls.inference.loading import load
from zhcls.inference.predictor import Predictor, write_predictions
from zhcls.inference.streaming import PredictConfig, partial_path, predict_files


@pytest.fixture(scope="module")
def checkpoint(shared, tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("stream") / "kuake_tiny", shared, "bert")


@pytest.fixture(scope="module")
def texts(shared):
    lines = (shared / "data" / "kuake_qic" / "dev.txt").read_text(encoding="utf-8").splitlines()[:300]
    return [line.rsplit("\t", 1)[0] for line in lines]


@pytest.fixture(scope="module")
def expected(checkpoint, texts, tmp_path_factory, one_thread):
    """Today's output, from the in-memory predictor: what every streamed run must reproduce byte for byte."""
    path = tmp_path_factory.mktemp("expected") / "out.txt"
    write_predictions(path, texts, load(checkpoint, device="cpu").predict(texts, topk=2), topk=2)
    return path.read_text(encoding="utf-8")


def run(capsys, *args):
    code = main(["-q", "predict", "--device", "cpu", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err):
    errors = [line for line in err.splitlines() if line.startswith("zhcls: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_chunks_formats_and_globs_give_todays_output(checkpoint, texts, expected, tmp_path, capsys, monkeypatch):
    seen = []
    predict = Predictor.predict
    monkeypatch.setattr(Predictor, "predict", lambda self, t, **kw: seen.append(len(t)) or predict(self, t, **kw))
    (tmp_path / "a.txt").write_text("\n".join(texts[:170]) + "\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"id": i, "q": t}, ensure_ascii=False) + "\n"
                                              for i, t in enumerate(texts[170:250])), encoding="utf-8")
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"q": texts[250:]}), tmp_path / "c.parquet")
    # One run over a text file, a JSONL file and a Parquet file (named by a glob), 64 texts at a time.
    code, out, _ = run(capsys, "--params_path", checkpoint, "--dataset_dir", tmp_path, "--data_file", "a.txt", "[bc].*",
                       "--text_field", "q", "--output_file", tmp_path / "out.txt", "--topk", 2, "--chunk_size", 64)
    assert code == 0 and "300 predictions written" in out
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == expected
    assert max(seen) == 64 and sum(seen) == 300  # memory is bounded by a chunk, not by the input
    assert not partial_path(tmp_path / "out.txt").exists()
    # JSON lines out: the same rows.
    code, _, _ = run(capsys, "--params_path", checkpoint, "--dataset_dir", tmp_path, "--data_file", "a.txt",
                     "--output_file", tmp_path / "out.jsonl", "--topk", 2)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    lines = expected.splitlines()[1:171]
    assert [r["text"] for r in rows] == texts[:170]
    assert [f"{r['label']}\t{r['score']:.4f}" for r in rows] == [line.split("\t", 1)[1].rsplit("\t", 1)[0] for line in lines]


def test_resume_after_a_kill_repeats_and_loses_no_line(checkpoint, texts, expected, tmp_path, capsys, monkeypatch):
    (tmp_path / "data.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    args = ["--params_path", checkpoint, "--dataset_dir", tmp_path, "--output_file", out, "--topk", 2, "--chunk_size", 50]
    calls = []
    predict = Predictor.predict

    def interrupted(self, t, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return predict(self, t, **kw)

    monkeypatch.setattr(Predictor, "predict", interrupted)
    assert run(capsys, *args)[0] == 130
    monkeypatch.setattr(Predictor, "predict", predict)
    partial = partial_path(out)
    assert not out.exists() and partial.read_text(encoding="utf-8") == "".join(expected.splitlines(True)[:101])
    # The kill also tore the last line in half: resume cuts it and predicts that text again.
    with open(partial, "a", encoding="utf-8") as f:
        f.write(expected.splitlines(True)[101][:7])
    # Without --resume the partial output is refused, not overwritten.
    code, _, err = run(capsys, *args)
    assert code == 2 and "--resume" in error_line(err) and partial.exists()
    code, stdout, _ = run(capsys, *args, "--resume")
    assert code == 0 and "100 of them by the interrupted run, 200 now" in stdout
    assert out.read_text(encoding="utf-8") == expected and not partial.exists()
    # A partial output of other inputs is refused.
    partial.write_text(expected.splitlines(True)[0] + "别的文本\t0\t0.5000\n", encoding="utf-8")
    out.unlink()
    code, _, err = run(capsys, *args, "--resume")
    assert code == 2 and f"{partial}:2: does not match the input at {tmp_path / 'data.txt'}:1" in error_line(err)
    assert not out.exists()


def test_malformed_records_fail_or_are_skipped_and_counted(checkpoint, texts, tmp_path, capsys):
    records = [json.dumps({"text": t}, ensure_ascii=False) for t in texts[:20]]
    records[4] = "{not json"
    records[9] = json.dumps({"body": texts[9]}, ensure_ascii=False)
    records[14] = json.dumps([texts[14]], ensure_ascii=False)
    (tmp_path / "in.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    args = ["--params_path", checkpoint, "--dataset_dir", tmp_path, "--data_file", "in.jsonl",
            "--output_file", tmp_path / "out.txt"]
    code, _, err = run(capsys, *args)
    assert code == 2 and f"{tmp_path / 'in.jsonl'}:5: not valid JSON" in error_line(err)
    assert not (tmp_path / "out.txt").exists() and not partial_path(tmp_path / "out.txt").exists()
    code, out, err = run(capsys, *args, "--on_error", "skip")
    assert code == 0 and "17 predictions written" in out and "3 malformed input records skipped" in out
    for line, problem in ((5, "not valid JSON"), (10, "no field 'text'"), (15, "a JSON object expected, found list")):
        assert f"in.jsonl:{line}: {problem}" in err
    written = [line.split("\t")[0] for line in (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines()[1:]]
    assert written == [t for i, t in enumerate(texts[:20]) if i not in (4, 9, 14)]


def test_bad_files_fail_before_any_output(checkpoint, texts, tmp_path, capsys):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    (tmp_path / "good.txt").write_text("\n".join(texts[:5]) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"text": list(range(5))}), tmp_path / "ints.parquet")
    out = tmp_path / "out.txt"
    base = ["--params_path", checkpoint, "--dataset_dir", tmp_path, "--output_file", out]
    code, _, err = run(capsys, *base, "--data_file", "good.txt", "ints.parquet")
    assert code == 2 and f"{tmp_path / 'ints.parquet'}: column 'text' holds int64, not strings" in error_line(err)
    code, _, err = run(capsys, *base, "--data_file", "good.txt", "missing*.jsonl")
    assert code == 2 and "no file matches" in error_line(err)
    # A text the text output cannot carry on one line: named, or written as JSON lines.
    (tmp_path / "nl.jsonl").write_text(json.dumps({"text": "第一行\n第二行"}) + "\n", encoding="utf-8")
    code, _, err = run(capsys, *base, "--data_file", "nl.jsonl")
    assert code == 2 and "nl.jsonl:1: field 'text' holds a tab or a line break" in error_line(err)
    assert not out.exists() and not partial_path(out).exists()
    code, _, _ = run(capsys, *base[:-1], tmp_path / "out.jsonl", "--data_file", "nl.jsonl")
    assert code == 0 and json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))["text"] == "第一行\n第二行"


def test_python_api_streams_in_order(checkpoint, texts, tmp_path, one_thread):
    predictor = load(checkpoint, device="cpu")
    streamed = list(predictor.predict_iter(iter(texts[:90]), chunk_size=16))
    whole = predictor.predict(texts[:90])  # other batches, other padding: equal up to float rounding
    assert [r["label"] for r in streamed] == [r["label"] for r in whole]
    assert [r["score"] for r in streamed] == pytest.approx([r["score"] for r in whole], abs=1e-6)
    (tmp_path / "d.txt").write_text("\n\n".join(texts[:10]) + "\n", encoding="utf-8")
    summary = predict_files(PredictConfig(params_path=str(checkpoint), data_file=["d.txt"], dataset_dir=str(tmp_path),
                                          output_file=str(tmp_path / "o.txt"), device="cpu", progress=False))
    assert (summary.written, summary.blank) == (10, 9)
