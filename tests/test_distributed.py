"""`zhcls predict --engine ray` on a real local Ray cluster (127.0.0.1, 2 CPUs): the single-machine output,
an address where nothing answers."""
import shutil
import socket

import pytest

from test_export import tiny_checkpoint
from zhcls.cli import main
from zhcls.deploy.export import export
from zhcls.distributed import predict_dataset
from zhcls.distributed import predict_files as ray_predict_files
from zhcls.inference.streaming import PredictConfig, predict_files

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def exported(shared, tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_model")
    shutil.copy(shared / "data" / "kuake_qic" / "label.txt", root)
    lines = (shared / "data" / "kuake_qic" / "dev.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "dev.txt").write_text("".join(lines[:100]), encoding="utf-8")
    export(tiny_checkpoint(root / "ckpt", shared, "bert"), root / "export", quantize="int8", dataset_dir=root,
           max_accuracy_drop=100.0, progress=False)
    return root / "export"


@pytest.fixture(scope="module")
def texts(shared):
    lines = (shared / "data" / "kuake_qic" / "dev.txt").read_text(encoding="utf-8").splitlines()
    return [line.rsplit("\t", 1)[0] for line in lines]


def config(exported, tmp_path, out, **kw):
    return PredictConfig(params_path=str(exported), data_file=["data.txt"], dataset_dir=str(tmp_path),
                         output_file=str(tmp_path / out), device="cpu", threads=1, progress=False, **kw)


def test_ray_output_equals_the_single_machine_output(cluster, exported, texts, tmp_path):
    (tmp_path / "data.txt").write_text("\n".join(texts[:320]) + "\n", encoding="utf-8")
    # The fp32 graph of the export: dynamic INT8 quantises a batch's activations with that batch's range, so its
    # scores (and near-ties between labels) move with the rows Ray's blocks put in a batch; fp32's only round.
    fp32 = shutil.copytree(exported, tmp_path / "fp32", ignore=shutil.ignore_patterns("model.int8.onnx"))
    local = predict_files(config(fp32, tmp_path, "local.txt", topk=2, chunk_size=32))
    distributed = ray_predict_files(config(fp32, tmp_path, "ray.txt", topk=2, chunk_size=32, engine="ray",
                                           num_workers=2))
    assert local.written == distributed.written == 320
    # The same rows: texts in order, labels, top-k labels; scores equal up to the last printed digit.
    rows = {name: [line.split("\t") for line in (tmp_path / name).read_text(encoding="utf-8").splitlines()]
            for name in ("local.txt", "ray.txt")}
    assert rows["ray.txt"][0] == rows["local.txt"][0]
    for got, want in zip(rows["ray.txt"][1:], rows["local.txt"][1:], strict=True):
        assert got[:2] == want[:2] and abs(float(got[2]) - float(want[2])) <= 1e-4
        assert [t.rsplit(":", 1)[0] for t in got[3].split()] == [t.rsplit(":", 1)[0] for t in want[3].split()]
    # The Python form on a dataset of the caller's, with its own field name.
    ds = ray.data.from_items([{"q": t} for t in texts[:64]])
    rows = predict_dataset(ds, fp32, text_field="q", rows_per_batch=32).take_all()
    lines = (tmp_path / "local.txt").read_text(encoding="utf-8").splitlines()[1:65]
    assert [r["text"] for r in rows] == texts[:64] and all(r["problem"] is None for r in rows)
    assert [r["label"] for r in rows] == [line.split("\t")[1] for line in lines]


def test_an_address_where_nothing_answers(exported, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "data.txt").write_text("头痛怎么办\n", encoding="utf-8")
    code = main(["-q", "predict", "--engine", "ray", "--address", f"127.0.0.1:{port}", "--params_path", str(exported),
                 "--dataset_dir", str(tmp_path), "--output_file", str(tmp_path / "o.txt")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("zhcls: error:")]
    assert code == 2 and len(errors) == 1 and f"--address 127.0.0.1:{port}: no Ray cluster answers" in errors[0]
    assert not (tmp_path / "o.txt").exists()
