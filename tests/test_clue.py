"""`zhcls clue`: each task's raw CLUE format (small samples of the real JSON lines, written here)
converted to dataset folders; a run on local copies of TNEWS and AFQMC (real data subsets) that
writes CLUE's submission files and the table; offline and bad-input messages."""
import json

import pytest

from helpers import SMALL
from zhcls import data
from zhcls.cli import main
from zhcls.clue.download import locate
from zhcls.clue.runner import format_table
from zhcls.clue.tasks import TASKS, TNEWS_LABELS, convert, parse_tasks
from zhcls.errors import ZhclsError

# Rows in the format of CLUE's {task}_public.zip (train/dev: labelled; test: an id, no label).
RAW = {
    "afqmc": {"train": [{"sentence1": "双十一花呗提额在哪", "sentence2": "里可以提花呗额度", "label": "0"},
                        {"sentence1": "花呗支持高铁票支付吗", "sentence2": "为什么友付宝不支持花呗付款", "label": "1"}],
              "test": [{"id": 0, "sentence1": "借呗取消的老用户还能开通吗", "sentence2": "借呗怎么开通不了"}]},
    "tnews": {"train": [{"label": "102", "label_desc": "news_entertainment", "sentence": "江疏影甜甜圈自拍，迷之角度竟这么好看，美吸引一切事物", "keywords": "江疏影,美少女,经纪人,甜甜圈"},
                        {"label": "108", "label_desc": "news_edu", "sentence": "上课时学生手机响个不停，老师一怒之下把手机摔了", "keywords": ""}],
              "test": [{"id": 0, "sentence": "A股：2个细分领域龙头个股值得股民关注", "keywords": "A股,龙头"}],
              "labels": [{"label": c, "label_desc": d} for c, d in TNEWS_LABELS.items()]},
    "iflytek": {"train": [{"label": "11", "label_des": "薅羊毛", "sentence": "《钢铁英雄》是一款角色扮演类游戏"},
                          {"label": "0", "label_des": "打车", "sentence": "滴滴出行，一键叫车"}],
                "test": [{"id": 0, "sentence": "随时随地叫外卖"}],
                "labels": [{"label": str(i), "label_des": f"类{i}"} for i in range(119)]},
    "cmnli": {"train": [{"sentence1": "新的权利已经足够好了", "sentence2": "每个人都很喜欢最新的福利", "label": "neutral"},
                        {"sentence1": "他们没有我的名字", "sentence2": "他们知道我的名字", "label": "-"},
                        {"sentence1": "好的，我会去的", "sentence2": "我不会去", "label": "contradiction"}],
              "test": [{"id": 0, "sentence1": "是的，我也这么想", "sentence2": "我同意"}]},
    "ocnli": {"train": [{"level": "medium", "sentence1": "一月份跟二月份肯定有一个月份有", "sentence2": "肯定有一个月份有",
                         "label": "entailment", "label0": "entailment", "genre": "lit", "prem_id": "lit_635", "id": 0}],
              "test": [{"level": "easy", "sentence1": "身上裹一件工厂发的棉大衣", "sentence2": "她穿着棉大衣", "id": 0}]},
    "cluewsc2020": {"train": [{"target": {"span2_index": 37, "span1_index": 5, "span1_text": "床", "span2_text": "它"},
                               "idx": 261, "label": "false",
                               "text": "这时候放在床上枕头旁边的手机响了，我感到奇怪，因为欠费已被停机两个月，现在它突然响了。"}],
                    "test": [{"target": {"span2_index": 3, "span1_index": 0, "span1_text": "小明", "span2_text": "他"},
                              "idx": 0, "text": "小明说他饿了"}]},
    "csl": {"train": [{"id": 1, "abst": "为解决传统均匀FFT波束形成算法引起的3维声呐成像分辨率降低的问题,该文提出分区域FFT波束形成算法.",
                       "keyword": ["水声学", "FFT", "波束形成", "3维成像声呐"], "label": "1"}],
            "test": [{"id": 7, "abst": "摘要\t带制表符", "keyword": ["甲", "乙"]}]},
}


def write_raw(folder, task):
    folder.mkdir(parents=True)
    rows = RAW[task]
    for split in ("train", "dev", "test", "labels"):
        if split in rows or split == "dev":
            lines = rows.get(split, rows["train"])
            (folder / f"{split}.json").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines),
                                                  encoding="utf-8")


@pytest.mark.parametrize("task", list(TASKS))
def test_raw_format_converts_to_a_dataset_folder(task, tmp_path):
    write_raw(tmp_path / "raw", task)
    out = convert(TASKS[task], tmp_path / "raw", tmp_path / "out")
    ds = data.load_dataset(out)
    labelled = [r for r in RAW[task]["train"] if r["label"] != "-"]
    assert len(ds.train) == len(labelled) and len(ds.dev) == len(labelled)
    test = data.read_texts(out / "data.txt", ds.task)
    assert len(test) == len(RAW[task]["test"])
    assert (out / "ids.txt").read_text(encoding="utf-8").split() == [str(r.get("id", i)) for i, r in enumerate(RAW[task]["test"])]
    first = ds.train[0]
    if task == "cluewsc2020":  # the entity in [], the pronoun in __, at CLUE's indices
        assert first.text_a.startswith("这时候放在[床]上") and "现在_它_突然" in first.text_a and first.text_b is None
        assert test[0].text_a == "[小明]说_他_饿了"
    elif task == "csl":
        assert (first.text_a, first.text_b[:4]) == ("水声学 FFT 波束形成 3维成像声呐", "为解决传")
        assert test[0].text_b == "摘要 带制表符"  # a tab inside a text would break the columns
    elif task == "tnews":
        assert ds.labels == list(TNEWS_LABELS.values()) and data.encode_labels(ds.train, ds.labels, "multi_class")[0] == 2
    elif task == "iflytek":
        assert len(ds.labels) == 119 and ds.train[0].labels == ("11",)
    else:
        assert ds.task == "pair" and first.text_b


def test_bad_raw_line_names_file_and_line(tmp_path):
    write_raw(tmp_path / "raw", "afqmc")
    with open(tmp_path / "raw/dev.json", "a", encoding="utf-8") as f:
        f.write('{"sentence1": "a", "sentence2": "b", "label": "0"\n')
    with pytest.raises(ZhclsError, match=r"dev\.json:3: not JSON"):
        convert(TASKS["afqmc"], tmp_path / "raw", tmp_path / "out")
    with pytest.raises(ZhclsError, match="unknown task 'wsc'"):
        parse_tasks("afqmc,wsc")


def test_offline_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("ZHCLS_CACHE", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(ZhclsError, match=r"cluebenchmark/tasks/ocnli_public\.zip.*--data_dir"):
        locate(TASKS["ocnli"], None)
    with pytest.raises(ZhclsError, match="no csl/"):
        locate(TASKS["csl"], str(tmp_path))


def test_clue_on_local_copies(shared, tmp_path, capsys):
    """TNEWS as CLUE's raw files (made from a real subset), AFQMC as a dataset folder: both run,
    the table prints, and the submission files have CLUE's format."""
    code = {desc: c for c, desc in TNEWS_LABELS.items()}
    rows = [line.split("\t") for line in (shared / "data/tnews/train.txt").read_text(encoding="utf-8").splitlines()[:260]]
    raw = tmp_path / "clue/tnews"
    raw.mkdir(parents=True)
    splits = {"train": rows[:200], "dev": rows[200:240]}
    for split, part in splits.items():
        (raw / f"{split}.json").write_text("".join(json.dumps({"label": code[y], "label_desc": y, "sentence": t, "keywords": ""},
                                                              ensure_ascii=False) + "\n" for t, y in part), encoding="utf-8")
    (raw / "test.json").write_text("".join(json.dumps({"id": 100 + i, "sentence": t, "keywords": ""}, ensure_ascii=False) + "\n"
                                           for i, (t, _) in enumerate(rows[240:])), encoding="utf-8")
    (raw / "labels.json").write_text("".join(json.dumps({"label": c, "label_desc": d}) + "\n" for c, d in TNEWS_LABELS.items()),
                                     encoding="utf-8")
    afqmc = tmp_path / "clue/afqmc"
    afqmc.mkdir()
    for name, n in (("train.txt", 200), ("dev.txt", 40), ("label.txt", 2)):
        lines = (shared / "data/afqmc" / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (afqmc / name).write_text("".join(lines[:n]), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["clue", "--model", SMALL, "--init_random", "--vocab_file", str(shared / "vocab/bert-base-chinese/vocab.txt"),
                 "--tasks", "tnews,afqmc", "--data_dir", str(tmp_path / "clue"), "--output_dir", str(out),
                 "--epochs", "1", "--max_seq_length", "48", "--threads", "1", "--max_train_samples", "120"]) == 0
    printed = capsys.readouterr().out
    assert "AVG" in printed and "TNEWS" in printed and "AFQMC" in printed
    tnews = [json.loads(line) for line in (out / "tnews_predict.json").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in tnews] == list(range(100, 120))
    assert all(set(r) == {"id", "label", "label_desc"} and TNEWS_LABELS[r["label"]] == r["label_desc"] for r in tnews)
    afqmc_rows = [json.loads(line) for line in (out / "afqmc_predict.json").read_text(encoding="utf-8").splitlines()]
    assert len(afqmc_rows) == 40 and all(set(r) == {"id", "label"} and r["label"] in ("0", "1") for r in afqmc_rows)
    results = json.loads((out / "clue_results.json").read_text(encoding="utf-8"))
    assert results["tasks"]["tnews"]["predicted_split"] == "test" and results["tasks"]["afqmc"]["predicted_split"] == "dev"
    assert results["tasks"]["tnews"]["train_examples"] == 120
    assert results["average"] == pytest.approx(sum(t["dev_accuracy"] for t in results["tasks"].values()) / 2, abs=0.01)
    assert (out / "clue_results.png").stat().st_size > 1000


def test_table_beside_published_numbers():
    results = {"model": "ernie-3.0-micro-zh", "init_random": False, "average": 60.0,
               "tasks": {"tnews": {"dev_accuracy": 55.0, "submission": "tnews_predict.json"},
                         "afqmc": {"dev_accuracy": 65.0, "submission": "afqmc_predict.json"}},
               "published": {"tnews": 55.05, "afqmc": 71.15}}
    header, _, ours, published, _ = format_table(results).splitlines()
    assert header.split()[1:] == ["AVG", "TNEWS", "AFQMC"]
    assert ours.split()[-3:] == ["60.00", "55.00", "65.00"]
    assert published.startswith("ernie-3.0-micro-zh, published") and published.split()[-3:] == ["63.10", "55.05", "71.15"]
