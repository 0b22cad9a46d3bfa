"""The TF-IDF baseline, `analyze dirty`, `analyze sparse`, `augment` and `explain`, on real data subsets."""
import json
import random
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import SMALL, majority_share, subset
from zhcls import data
from zhcls.analysis.augment import Augmenter, augment_file
from zhcls.analysis.dirty import analyze_dirty
from zhcls.analysis.sparse import analyze_sparse
from zhcls.cli import main
from zhcls.evaluation.baseline import baseline

REFERENCES = {"kuake_qic": 76.98, "waimai_10k": 89.98}  # ../shared/data/README.md


@pytest.fixture
def run_cli(capsys):
    """The CLI in this process (no torch import per call): (exit code, stdout, stderr)."""
    def run(*args):
        capsys.readouterr()
        code = main(["-q", *map(str, args)])
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)
    return run


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zhcls: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def lines(path):
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_baseline_matches_the_published_tfidf_reference(shared, name):
    result = baseline(shared / "data" / name)
    assert abs(result.score - REFERENCES[name]) <= 1.0, result
    assert result.metric == "accuracy" and result.seconds < 60
    assert result.line().startswith(f"dev accuracy {result.score:.2f}")


def test_baseline_pairs_and_multi_label(shared, tmp_path):
    pairs = subset(shared / "data/afqmc", tmp_path / "afqmc", 2000, 400)
    result = baseline(pairs)
    assert result.score >= 100 * majority_share(pairs / "dev.txt") - 2  # pairs are hard for n-grams, not broken
    multi = baseline(shared / "data/cail2019_divorce", problem_type="multi_label")
    assert multi.metric == "micro-F1" and multi.score > 75, multi


def flip_labels(src, dst, share=0.05, seed=0, n_train=2000):
    folder = subset(src, dst, n_train, 300)
    train = lines(folder / "train.txt")
    rng = random.Random(seed)
    flipped = sorted(rng.sample(range(len(train)), round(share * len(train))))
    for i in flipped:
        text, label = train[i].rsplit("\t", 1)
        train[i] = f"{text}\t{'1' if label == '0' else '0'}"
    (folder / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    return folder, flipped


def test_dirty_ranks_flipped_labels_first(shared, tmp_path):
    folder, flipped = flip_labels(shared / "data/waimai_10k", tmp_path / "noisy")
    result = analyze_dirty(folder, dirty_num=2 * len(flipped), progress=False)
    recall = len(set(result.dirty.tolist()) & set(flipped)) / len(flipped)
    assert recall >= 0.6, recall
    # train_dirty.txt: header, then the flagged rows, most suspicious first, with a suggested other label.
    dirty = lines(folder / "train_dirty.txt")
    assert dirty[0] == "text\tlabel\tsuggested\tconfidence\tline" and len(dirty) == 1 + 2 * len(flipped)
    first = dirty[1].split("\t")
    assert first[1] != first[2] and 0 <= float(first[3]) <= 1
    assert int(first[4]) == result.dirty[0] + 1  # line numbers are 1-based, no blank lines in this file
    # train_clean.txt is a dataset file of the other rows, in their order.
    clean, _ = data.read_examples(folder / "train_clean.txt", ["0", "1"])
    kept = [line for i, line in enumerate(lines(folder / "train.txt")) if i not in set(result.dirty.tolist())]
    assert [data.format_example(e) for e in clean] == kept


def test_dirty_cli_writes_elsewhere_and_checks_flags(shared, tmp_path, run_cli):
    folder = subset(shared / "data/waimai_10k", tmp_path / "w", 600, 100)
    out = tmp_path / "out"
    proc = run_cli("analyze", "dirty", "--dataset_dir", folder, "--output_dir", out, "--dirty_num", 30)
    assert proc.returncode == 0, proc.stderr
    assert len(lines(out / "train_dirty.txt")) == 31 and len(lines(out / "train_clean.txt")) == 570
    assert not (folder / "train_dirty.txt").exists()
    assert_one_line_error(run_cli("analyze", "dirty", "--dataset_dir", folder, "--method", "model"), "--params_path")
    assert_one_line_error(run_cli("analyze", "dirty", "--dataset_dir", folder, "--dirty_num", 601), "--dirty_num")
    (folder / "train_clean.txt").write_text((folder / "train.txt").read_text(encoding="utf-8"), encoding="utf-8")
    assert_one_line_error(run_cli("analyze", "dirty", "--dataset_dir", folder, "--train_file", "train_clean.txt"),
                          "would overwrite an input")


@pytest.fixture(scope="module")
def kuake_small(shared, tmp_path_factory):
    """500 KUAKE-QIC training rows; data.txt holds 1500 other training texts without labels."""
    folder = tmp_path_factory.mktemp("kuake") / "k"
    subset(shared / "data/kuake_qic", folder, 500, 400)
    rest = (shared / "data/kuake_qic/train.txt").read_text(encoding="utf-8").splitlines()[500:2000]
    (folder / "data.txt").write_text("".join(line.rsplit("\t", 1)[0] + "\n" for line in rest), encoding="utf-8")
    return folder


def test_sparse_annotate_picks_unlabelled_rows_near_the_sparse_examples(kuake_small, tmp_path):
    result = analyze_sparse(kuake_small, strategy="annotate", sparse_num=50, annotate_num=40, output_dir=tmp_path,
                            progress=False)
    assert result.support[result.sparse].max() <= np.sort(result.support)[50]  # the 50 least supported
    assert result.support[result.sparse].mean() < result.support.mean()
    sparse, _ = data.read_examples(tmp_path / "sparse.txt", data.read_labels(kuake_small / "label.txt"))
    assert len(sparse) == 50 and sum(result.classes.values()) == 50
    picked = lines(tmp_path / "support.txt")
    pool = lines(kuake_small / "data.txt")
    assert len(picked) == 40 == len(set(picked)) and set(picked) <= set(pool)
    # Each sparse example's nearest unlabelled row comes first: the picks are closer to them than random rows.
    from zhcls.analysis.similarity import SentenceSpace, similarities

    ds = data.load_dataset(kuake_small)
    texts = data.read_texts(kuake_small / "data.txt", "text")
    space = SentenceSpace(ds, ds.train + ds.dev + texts)
    sims = similarities(space.encode([ds.dev[i] for i in result.sparse]), space.encode(texts)).max(axis=0)
    index = {e.text_a: i for i, e in enumerate(texts)}
    assert sims[[index[t] for t in picked]].mean() > 2 * sims.mean()


def test_sparse_augment_writes_a_larger_training_file(kuake_small, tmp_path):
    result = analyze_sparse(kuake_small, strategy="augment", sparse_num=20, support_num=30, output_dir=tmp_path,
                            create_n=1, progress=False)
    assert len(result.picked) == 30 and result.train_aug_path == tmp_path / "train_sparse_aug.txt"
    labels = data.read_labels(kuake_small / "label.txt")
    support, _ = data.read_examples(tmp_path / "support.txt", labels)
    train, _ = data.read_examples(kuake_small / "train.txt", labels)
    merged, _ = data.read_examples(tmp_path / "train_sparse_aug.txt", labels)
    assert len(support) == 30 and {e.text_a for e in support} <= {e.text_a for e in train}
    assert len(train) < len(merged) <= len(train) + 30
    assert merged[:len(train)] == [data.Example(e.text_a, None, e.labels, i + 1) for i, e in enumerate(train)]


def test_sparse_annotate_refuses_an_empty_data_file(kuake_small, tmp_path, run_cli):
    folder = tmp_path / "k"
    subset(kuake_small, folder, 100, 50)
    (folder / "data.txt").write_text("", encoding="utf-8")
    assert_one_line_error(run_cli("analyze", "sparse", "--dataset_dir", folder, "--strategy", "annotate"),
                          "data.txt", "empty")


def test_augment_keeps_labels_and_writes_a_dataset_file(kuake_small, tmp_path):
    out = tmp_path / "aug.txt"
    n = augment_file(kuake_small / "train.txt", out, strategies="mix", create_n=2, aug_percent=0.2, progress=False)
    labels = data.read_labels(kuake_small / "label.txt")
    source, _ = data.read_examples(kuake_small / "train.txt", labels)
    rows, _ = data.read_examples(out, labels)  # a valid dataset file
    assert n == len(rows) and len(source) < n <= 2 * len(source)
    originals = {e.text_a for e in source}
    assert sum(e.text_a in originals for e in rows) < 0.05 * n  # new texts (a few may equal another row)
    counts = {label: sum(e.labels == (label,) for e in source) for label in labels}
    assert all(sum(e.labels == (label,) for e in rows) <= 2 * counts[label] for label in labels)


def test_augment_strategies_do_what_they_say():
    import pypinyin

    texts = ["头痛发烧怎么办需要去医院吗", "糖尿病患者能吃西瓜吗", "感冒发烧头痛吃什么药好"]
    aug = Augmenter("homophone,delete,swap,synonym", aug_percent=0.3, seed=1)
    aug.index_homophones(texts + ["投通发少"])  # 投 tóu / 通 tōng / 少 shǎo: 头 tóu has a homophone here
    changed = aug.augment(texts[0], "homophone")
    assert changed != texts[0] and len(changed) == len(texts[0])
    for a, b in zip(texts[0], changed):
        assert pypinyin.lazy_pinyin(a, style=pypinyin.Style.TONE3) == pypinyin.lazy_pinyin(b, style=pypinyin.Style.TONE3)
    deleted = aug.augment(texts[1], "delete")
    assert len(deleted) < len(texts[1]) and all(ch in texts[1] for ch in deleted)
    swapped = aug.augment(texts[2], "swap")
    assert sorted(swapped) == sorted(texts[2]) and swapped != texts[2]
    assert aug.augment("患者", "synonym") in aug.synonyms["患者"]


@pytest.mark.parametrize("percent", ["0", "1.5", "-0.1"])
def test_augment_refuses_a_percent_outside_0_1(kuake_small, tmp_path, percent, run_cli):
    proc = run_cli("augment", "--train_path", kuake_small / "train.txt", "--aug_path", tmp_path / "a.txt",
                   "--aug_percent", percent)
    assert_one_line_error(proc, "--aug_percent", "(0, 1]")
    assert not (tmp_path / "a.txt").exists()


@pytest.fixture(scope="module")
def waimai_ckpt(shared, tmp_path_factory):
    """A 2-layer model trained for one epoch on 600 waimai rows, through the CLI (which prints the baseline)."""
    root = tmp_path_factory.mktemp("ckpt")
    folder = subset(shared / "data/waimai_10k", root / "data", 600, 150, balanced=True)
    proc = subprocess.run([sys.executable, "-m", "zhcls", "-q", "train", "--dataset_dir", str(folder), "--model", SMALL,
                           "--init_random", "--vocab_file", str(shared / "vocab/bert-base-chinese/vocab.txt"),
                           "--save_dir", str(root / "ckpt"), "--epochs", "1", "--max_seq_length", "32",
                           "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return folder, root / "ckpt", proc.stdout


def test_train_and_evaluate_show_the_baseline_beside_the_model(one_thread, waimai_ckpt, tmp_path, run_cli):
    folder, ckpt, stdout = waimai_ckpt
    expected = baseline(folder)
    assert f"dev accuracy {expected.score:.2f} (TF-IDF" in stdout
    proc = run_cli("evaluate", "--params_path", ckpt, "--dataset_dir", folder, "--splits", "dev",
                   "--output_dir", tmp_path / "e")
    assert proc.returncode == 0 and f"TF-IDF + linear SVM baseline {expected.score:.2f}" in proc.stdout
    report = json.loads((tmp_path / "e/report.json").read_text(encoding="utf-8"))
    assert report["dev"]["baseline"]["score"] == pytest.approx(expected.score)
    proc = run_cli("evaluate", "--params_path", ckpt, "--dataset_dir", folder, "--splits", "dev",
                   "--output_dir", tmp_path / "e", "--no_baseline")
    assert proc.returncode == 0 and "baseline" not in proc.stdout


def test_dirty_with_the_checkpoint_and_a_label_mismatch(one_thread, waimai_ckpt, tmp_path, run_cli):
    folder, ckpt, _ = waimai_ckpt
    result = analyze_dirty(folder, params_path=ckpt, output_dir=tmp_path, dirty_num=10, progress=False)
    oof = analyze_dirty(folder, output_dir=tmp_path / "oof", dirty_num=10, progress=False)
    # "both" averages the checkpoint's probabilities into the out-of-fold ones.
    assert not np.allclose(result.probs, oof.probs) and result.probs.shape == oof.probs.shape
    sparse = analyze_sparse(folder, params_path=ckpt, sparse_num=10, output_dir=tmp_path, progress=False)
    report = json.loads((tmp_path / "sparse_report.json").read_text(encoding="utf-8"))
    assert report["features"] == "model features" and len(report["sparse"]) == 10 == len(sparse.sparse)
    swapped = tmp_path / "swapped"
    subset(folder, swapped, 50, 20)
    (swapped / "label.txt").write_text("1\n0\n", encoding="utf-8")
    assert_one_line_error(run_cli("analyze", "dirty", "--dataset_dir", swapped, "--params_path", ckpt),
                          "labels", "differ")
    assert_one_line_error(run_cli("analyze", "sparse", "--dataset_dir", swapped, "--params_path", ckpt),
                          "labels", "differ")


def test_explain_attributions_add_up_and_support_has_the_label(one_thread, waimai_ckpt, tmp_path, run_cli):
    import torch

    from zhcls.analysis.explain import explain, token_attributions
    from zhcls.inference.loading import load

    folder, ckpt, _ = waimai_ckpt
    text = "送餐很快，味道也很好，下次还点"
    predictor = load(ckpt, backend="torch", device="cpu")
    target = int(predictor.predict_proba([text])[0].argmax())
    scores = token_attributions(predictor, text, None, target, steps=64)
    # Completeness: the attributions sum to p(text) - p(all [PAD] but [CLS]/[SEP]).
    ids = predictor.tokenizer.encode([text]).input_ids[0]
    blank = [ids[0]] + [predictor.tokenizer.pad_token_id] * (len(ids) - 2) + [ids[-1]]
    with torch.no_grad():
        p = [torch.softmax(predictor.model(torch.tensor([x])), -1)[0, target].item() for x in (ids, blank)]
    assert scores.sum() == pytest.approx(p[0] - p[1], abs=0.02 + 0.05 * abs(p[0] - p[1]))

    out = tmp_path / "x.html"
    (e,) = explain(ckpt, [text], dataset_dir=folder, support_num=3, output_file=out)
    assert "".join(w for w, _ in e.words[0]) == text
    assert sum(s for _, s in e.words[0]) == pytest.approx(scores[1:-1].sum(), abs=1e-4)
    train = {x.text_a: x.labels[0] for x in data.load_dataset(folder).train}
    assert len(e.support) == 3 and all(train[t] == e.label for _, _, t in e.support)
    assert "<span" in out.read_text(encoding="utf-8")
    proc = run_cli("explain", "--params_path", ckpt, "--text", text, "--output_file", tmp_path / "y.html")
    assert proc.returncode == 0 and text in proc.stdout and (tmp_path / "y.html").exists()
