"""Metrics against hand computations and a brute-force re-implementation; reports, plot, bad cases."""
import json
import struct
import unicodedata
import warnings
import zlib

import numpy as np
import pytest

from zhcls.errors import ZhclsError
from zhcls.evaluation import report_files
from zhcls.evaluation.metrics import classification_report, multilabel_report
from zhcls.evaluation.report_files import format_confusion, format_report, plot_confusion, write_bad_cases, write_json

# Hand-checked case. Class 2 (科技) is never predicted; class 3 (娱乐) has no support but is predicted
# once; class 4 (教育) has neither. Row 4 ties the gold class with a lower index, row 6 ties the top
# two (argmax takes index 1), row 7 ties the gold class with a higher index.
LABELS = ["体育", "财经", "科技", "娱乐", "教育"]
Y = np.array([0, 0, 0, 1, 1, 2, 2, 2])
PROBS = np.array([
    [0.6, 0.1, 0.1, 0.1, 0.1],    # pred 0, gold rank 0
    [0.4, 0.3, 0.1, 0.1, 0.1],    # pred 0, gold rank 0
    [0.3, 0.4, 0.1, 0.1, 0.1],    # pred 1, gold rank 1
    [0.1, 0.5, 0.2, 0.1, 0.1],    # pred 1, gold rank 0
    [0.2, 0.2, 0.1, 0.5, 0.0],    # pred 3, gold rank 2 (1 higher + tie with class 0)
    [0.5, 0.1, 0.1, 0.2, 0.1],    # pred 0, gold rank 3 (2 higher + tie with class 1)
    [0.1, 0.35, 0.35, 0.1, 0.1],  # pred 1, gold rank 1 (tie with class 1)
    [0.3, 0.1, 0.25, 0.25, 0.1],  # pred 0, gold rank 1 (tie with class 3 does not count)
])
TEXTS = [f"text {i}" for i in range(len(Y))]


def test_hand_computed_report():
    r = classification_report(LABELS, Y, PROBS)
    assert r["n"] == 8
    assert r["confusion"] == [[2, 1, 0, 0, 0], [0, 1, 0, 1, 0], [2, 1, 0, 0, 0], [0] * 5, [0] * 5]
    assert r["accuracy"] == pytest.approx(3 / 8)
    assert r["top2_accuracy"] == pytest.approx(6 / 8)
    assert r["top3_accuracy"] == pytest.approx(7 / 8)
    expected = [  # precision, recall, f1, support, predicted
        (2 / 4, 2 / 3, 4 / 7, 3, 4),
        (1 / 3, 1 / 2, 2 / 5, 2, 3),
        (0.0, 0.0, 0.0, 3, 0),  # never predicted: precision 0/0 -> 0
        (0.0, 0.0, 0.0, 0, 1),  # no support: recall 0/0 -> 0
        (0.0, 0.0, 0.0, 0, 0),  # neither: everything 0, still counted in macro averages
    ]
    for row, label, (p, rec, f1, support, predicted) in zip(r["per_class"], LABELS, expected):
        assert row["label"] == label
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p, rec, f1))
        assert (row["support"], row["predicted"]) == (support, predicted)
        assert row["share"] == pytest.approx(support / 8)
    assert r["macro_precision"] == pytest.approx((1 / 2 + 1 / 3) / 5)
    assert r["macro_recall"] == pytest.approx((2 / 3 + 1 / 2) / 5)
    assert r["macro_f1"] == pytest.approx((4 / 7 + 2 / 5) / 5)
    assert r["weighted_f1"] == pytest.approx((3 * 4 / 7 + 2 * 2 / 5) / 8)
    assert r["micro_f1"] == r["accuracy"]
    json.dumps(r)  # plain Python types only


def test_top_k_none_when_trivial():
    r = classification_report(["负面", "正面"], np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]))
    assert r["top2_accuracy"] is None and r["top3_accuracy"] is None
    r = classification_report(list("abc"), np.array([0]), np.array([[0.2, 0.5, 0.3]]))
    assert r["top2_accuracy"] == 0.0 and r["top3_accuracy"] is None


def _brute_force(y, probs, c):
    n = len(y)
    pred = [max(range(c), key=lambda j: (p[j], -j)) for p in probs.tolist()]  # first max wins
    out = {"accuracy": sum(t == q for t, q in zip(y, pred)) / n, "p": [], "r": [], "f1": []}
    for k in (2, 3):
        # Rank by probability, ties to the lower index (a stable descending sort).
        hits = [t in sorted(range(c), key=lambda j: (-p[j], j))[:k] for t, p in zip(y, probs.tolist())]
        out[f"top{k}"] = sum(hits) / n
    for cls in range(c):
        tp = sum(t == cls and q == cls for t, q in zip(y, pred))
        fp = sum(t != cls and q == cls for t, q in zip(y, pred))
        fn = sum(t == cls and q != cls for t, q in zip(y, pred))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        out["p"].append(p)
        out["r"].append(r)
        out["f1"].append(2 * p * r / (p + r) if p + r else 0.0)
    return out


@pytest.mark.parametrize("decimals", [None, 1])  # rounding to 1 decimal makes ties everywhere
def test_against_brute_force(decimals):
    rng = np.random.default_rng(0)
    n, c = 2000, 11
    y = rng.choice(c, size=n, p=np.linspace(1, 3, c) / np.linspace(1, 3, c).sum())
    probs = rng.dirichlet(np.ones(c) * 0.5, size=n)
    probs[np.arange(n), y] += rng.uniform(0, 0.6, size=n)  # a model better than chance
    probs /= probs.sum(axis=1, keepdims=True)
    if decimals is not None:
        probs = probs.round(decimals)
    labels = [f"类别{i}" for i in range(c)]
    r = classification_report(labels, y, probs)
    bf = _brute_force(y.tolist(), probs, c)
    assert r["accuracy"] == pytest.approx(bf["accuracy"])
    assert r["micro_f1"] == r["accuracy"]
    assert r["top2_accuracy"] == pytest.approx(bf["top2"])
    assert r["top3_accuracy"] == pytest.approx(bf["top3"])
    assert [x["precision"] for x in r["per_class"]] == pytest.approx(bf["p"])
    assert [x["recall"] for x in r["per_class"]] == pytest.approx(bf["r"])
    assert [x["f1"] for x in r["per_class"]] == pytest.approx(bf["f1"])
    assert r["macro_f1"] == pytest.approx(np.mean(bf["f1"]))
    support = np.bincount(y, minlength=c)
    assert r["weighted_f1"] == pytest.approx(np.dot(bf["f1"], support) / n)
    assert np.array(r["confusion"]).sum() == n
    assert r["accuracy"] <= r["top2_accuracy"] <= r["top3_accuracy"]


@pytest.mark.parametrize("y, probs, match", [
    (np.array([0, 1]), np.ones((3, 2)) / 2, "gold labels"),
    (np.array([0, 2]), np.ones((2, 2)) / 2, "out of range"),
    (np.array([0.0, 1.0]), np.ones((2, 2)) / 2, "integers"),
    (np.array([0, 1]), np.ones((2, 3)) / 3, "shape"),
    (np.array([], dtype=int), np.ones((0, 2)), "no examples"),
    (np.array([0, 1]), np.array([[np.nan, 0.5], [0.5, 0.5]]), "NaN"),
])
def test_bad_input(y, probs, match):
    with pytest.raises(ZhclsError, match=match):
        classification_report(["a", "b"], y, probs)


def test_multilabel_hand_computed():
    gold = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    probs = np.array([[0.9, 0.2, 0.4], [0.5, 0.7, 0.1], [0.6, 0.3, 0.2], [0.1, 0.1, 0.8]])
    r = multilabel_report(["相机", "芯片", "手机"], gold, probs)  # 0.5 itself counts as predicted
    assert r["n"] == 4 and r["threshold"] == 0.5
    assert (r["micro_precision"], r["micro_recall"], r["micro_f1"]) == pytest.approx((3 / 5, 3 / 5, 3 / 5))
    assert r["macro_precision"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert r["macro_recall"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert r["macro_f1"] == pytest.approx((4 / 5 + 2 / 3 + 0) / 3)
    assert [(x["support"], x["predicted"]) for x in r["per_class"]] == [(2, 3), (2, 1), (1, 1)]
    assert [x["f1"] for x in r["per_class"]] == pytest.approx([4 / 5, 2 / 3, 0.0])
    assert multilabel_report(["相机", "芯片", "手机"], gold, probs, threshold=0.95)["micro_f1"] == 0.0
    assert "相机" in format_report(r)
    with pytest.raises(ZhclsError, match="0 or 1"):
        multilabel_report(["a"], np.array([[2]]), np.array([[0.5]]))


def _width(text):
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def test_format_report_alignment():
    labels = ["体育", "finance", "科技新闻", "娱乐"]
    r = classification_report(labels, np.array([0, 1, 2, 3, 0]), np.eye(4)[[0, 1, 2, 3, 1]])
    text = format_report(r, title="dev")
    lines = text.splitlines()
    assert lines[0] == "dev"
    assert "accuracy = 0.8000" in text and "macro F1" in text and "micro F1" in text and "top-3" in text
    for label in labels:
        assert label in text
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("label")):]
    assert len(table) == 2 + len(labels)
    assert len({_width(line) for line in table}) == 1
    assert report_files.display_width("体育a") == 5


def test_format_confusion():
    text = format_confusion(classification_report(LABELS, Y, PROBS))
    lines = text.splitlines()
    assert lines[2].split() == ["0", "2", "1", "0", "0", "0"]
    assert len({len(line) for line in lines[1:7]}) == 1  # header and rows line up
    assert "legend:" in text and all(f"{i}  {label}" in text for i, label in enumerate(LABELS))


def _png_text_chunks(data):
    """Keyword -> text of the PNG's iTXt chunks."""
    out, pos = {}, 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"iTXt":
            key, rest = body.split(b"\0", 1)
            compressed, text = rest[0], rest[2:].split(b"\0", 2)[2]
            out[key.decode()] = (zlib.decompress(text) if compressed else text).decode()
        pos += 12 + length
    return out


def test_plot_confusion_cjk(tmp_path):
    labels = ["体育", "财经", "科技", "娱乐", "教育", "时政", "房产", "游戏", "社会", "时尚", "家居"]
    rng = np.random.default_rng(1)
    y = rng.integers(0, 11, size=300)
    r = classification_report(labels, y, rng.dirichlet(np.ones(11), size=300))
    with warnings.catch_warnings():
        # matplotlib warns "Glyph ... missing from font(s)" whenever it would draw a tofu box.
        warnings.filterwarnings("error", message="Glyph")
        out = plot_confusion(r, tmp_path / "figs" / "confusion.png")
    data = out.read_bytes()
    assert out == tmp_path / "figs" / "confusion.png"
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert "10: 家居" in _png_text_chunks(data)["Description"]
    assert [p.name for p in out.parent.iterdir()] == ["confusion.png"]


def test_plot_confusion_fallback_and_font_choice(tmp_path, monkeypatch):
    font = report_files._font_covering("体育")
    assert font is None or not font.startswith("Last Resort")
    assert report_files._font_covering("abc") is not None
    monkeypatch.setattr(report_files, "_font_covering", lambda chars: None)
    out = plot_confusion(classification_report(LABELS, Y, PROBS), tmp_path / "c.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ZhclsError, match="no confusion"):
        plot_confusion(multilabel_report(["a"], np.array([[1]]), np.array([[0.7]])), tmp_path / "m.png")


def test_bad_cases(tmp_path):
    texts = list(TEXTS)
    texts[7] = "带\t制表符\n和换行"
    path = tmp_path / "bad_case.txt"
    assert write_bad_cases(path, texts, LABELS, Y, PROBS) == 5
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "Confidence\tPrediction\tLabel\tText"
    # Most confident first; rows 4 and 5 tie at 0.5 and keep their input order.
    assert lines[1:] == [
        "0.5000\t娱乐\t财经\ttext 4",
        "0.5000\t体育\t科技\ttext 5",
        "0.4000\t财经\t体育\ttext 2",
        "0.3500\t财经\t科技\ttext 6",
        "0.3000\t体育\t科技\t带 制表符 和换行",
    ]
    assert write_bad_cases(tmp_path / "none.txt", ["a"], LABELS, np.array([0]), np.eye(5)[[0]]) == 0
    assert (tmp_path / "none.txt").read_text(encoding="utf-8") == "Confidence\tPrediction\tLabel\tText\n"


def test_bad_cases_leave_no_file_on_failure(tmp_path):
    path = tmp_path / "bad_case.txt"
    with pytest.raises(ZhclsError, match="texts"):
        write_bad_cases(path, TEXTS[:-1], LABELS, Y, PROBS)
    assert list(tmp_path.iterdir()) == []

    class Broken(str):
        def translate(self, table):
            raise RuntimeError("disk on fire")

    path.write_text("old", encoding="utf-8")
    texts = TEXTS[:6] + [Broken("x")] + TEXTS[7:]  # fails after three lines are written
    with pytest.raises(RuntimeError):
        write_bad_cases(path, texts, LABELS, Y, PROBS)
    assert path.read_text(encoding="utf-8") == "old"
    assert list(tmp_path.iterdir()) == [path]


def test_write_json(tmp_path):
    path = tmp_path / "report.json"
    write_json(path, {"label": "体育", "n": np.int64(3), "v": np.array([0.5])})
    text = path.read_text(encoding="utf-8")
    assert "体育" in text and text.endswith("\n")
    assert json.loads(text) == {"label": "体育", "n": 3, "v": [0.5]}
    with pytest.raises(TypeError):
        write_json(tmp_path / "bad.json", {"x": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
