"""The benchmark on a tiny model: one row per backend with every figure, a table, JSON and a plot."""
import json

import pytest

from test_export import tiny_checkpoint
from zhcls.deploy.bench import bench, default_backends, format_table, plot
from zhcls.errors import ZhclsError
from zhcls.hardware import has_bf16

FIELDS = {"model", "backend", "variant", "metric", "score", "samples", "padded_ms", "padded_tokenizer_ms", "real_ms",
          "real_tokenizer_ms", "throughput", "b1_p50_ms", "b1_p99_ms", "peak_rss_mb", "size_mb", "mean_tokens", "repeats",
          "padded_gflops", "real_gflops", "ceiling", "ceiling_gflops", "padded_ceiling_pct", "real_ceiling_pct", "flags"}


@pytest.fixture(scope="module")
def dataset(shared, tmp_path_factory):
    path = tmp_path_factory.mktemp("kuake_tiny")
    (path / "label.txt").write_bytes((shared / "data" / "kuake_qic" / "label.txt").read_bytes())
    lines = (shared / "data" / "kuake_qic" / "dev.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    (path / "dev.txt").write_text("".join(lines[:64]), encoding="utf-8")
    return path


def test_bench_rows_table_json_and_plot(shared, dataset, tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", shared, "bert")
    rows = bench(checkpoint, dataset, repeats=1, batch_size=16, batch1_samples=8, work_dir=tmp_path / "work",
                 progress=False)
    assert [r["backend"] for r in rows] == list(default_backends())
    assert ("torch-bf16" in default_backends()) == has_bf16()
    for r in rows:
        assert FIELDS <= set(r), FIELDS - set(r)
        assert r["samples"] == 64 and 0 <= r["score"] <= 100
        assert 0 < r["padded_tokenizer_ms"] < r["padded_ms"] and 0 < r["real_tokenizer_ms"] < r["real_ms"]
        assert r["b1_p50_ms"] <= r["b1_p99_ms"] and r["throughput"] > 0 and r["size_mb"] > 0
        assert r["peak_rss_mb"] > 20
        # Each backend against its own library's GEMM ceiling, measured in the same rounds (no timing asserted).
        assert r["ceiling_gflops"] > 0 and r["real_ceiling_pct"] > 0 and r["padded_ceiling_pct"] > 0
    by = {r["backend"]: r for r in rows}
    # Same weights everywhere: the fp32 backends agree on accuracy; INT8 is far smaller.
    assert by["torch"]["score"] == by["onnx"]["score"] == by["onnx-fused"]["score"]
    assert by["onnx-int8"]["size_mb"] < by["onnx-fused"]["size_mb"] / 3
    # Static INT8 quantises the MatMuls only: smaller than fp32, but the embedding table stays fp32.
    assert by["onnx-int8-static"]["size_mb"] < by["onnx"]["size_mb"] and by["onnx-int8-static"]["ceiling"] == "ort-int8"
    # An ONNX measurement never loads torch: its process stays far below the torch one.
    assert by["onnx-fused"]["peak_rss_mb"] < by["torch"]["peak_rss_mb"]
    table = format_table(rows)
    assert all(b in table for b in default_backends()) and "padded to 128" in table and "% ceil" in table
    json.dumps(rows)
    assert plot(rows, tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"

    # An export folder is measured as it is: the variants it holds, and no torch.
    exported = bench(tmp_path / "work" / "onnx-fused", dataset, repeats=1, max_samples=16, batch1_samples=4,
                     progress=False)
    assert [r["backend"] for r in exported] == ["onnx-fused", "onnx-int8"]
    static = bench(tmp_path / "work" / "onnx", dataset, backends=("onnx", "onnx-int8-static"), repeats=1, max_samples=16,
                   batch1_samples=4, progress=False)
    assert [r["backend"] for r in static] == ["onnx", "onnx-int8-static"]


def test_bench_errors(dataset, tmp_path):
    with pytest.raises(ZhclsError, match="unknown backend"):
        bench(tmp_path, dataset, backends=("torch", "tensorrt"))
    with pytest.raises(ZhclsError, match="no such checkpoint or export folder"):
        bench(tmp_path / "nowhere", dataset)
    with pytest.raises(ZhclsError, match="repeats"):
        bench(tmp_path, dataset, repeats=0)


def test_bench_reports_medians_over_repeats(dataset, tmp_path, monkeypatch):
    """Repeats go round the backends in turn, and every timing is the median of its repeats (an outlier
    run, a burst of load on a shared machine, moves nothing)."""
    from zhcls.deploy import bench as bench_module

    specs = [{"backend": "torch", "path": "ckpt", "variant": None}, {"backend": "onnx", "path": "x", "variant": "fp32"}]
    monkeypatch.setattr(bench_module, "prepare", lambda *a, **k: [dict(s) for s in specs])
    calls = []
    runs = {"torch": [5.0, 1.0, 3.0, 100.0, 2.0], "onnx": [4.0, 4.5, 40.0, 3.5, 4.2]}

    def fake_measure(spec, dataset_dir, **options):
        calls.append(spec["backend"])
        value = runs[spec["backend"]][calls.count(spec["backend"]) - 1]
        return {"backend": spec["backend"], "model": spec["model"], "score": 50.0,
                **{k: value * (i + 1) for i, k in enumerate(bench_module.TIMINGS)}}

    monkeypatch.setattr(bench_module, "measure", fake_measure)
    rows = bench(tmp_path, dataset, repeats=5, progress=False)
    assert calls == ["torch", "onnx"] * 5
    by = {r["backend"]: r for r in rows}
    assert by["torch"]["repeats"] == by["onnx"]["repeats"] == 5
    for backend, median in (("torch", 3.0), ("onnx", 4.2)):
        assert [by[backend][k] for k in bench_module.TIMINGS] == [median * (i + 1) for i in range(len(bench_module.TIMINGS))]
        assert by[backend]["score"] == 50.0


def test_model_flops_match_torch_flop_counter(shared, tmp_path):
    """The ceiling fractions rest on `model_flops`: it counts what torch's own FLOP counter counts in the
    model's forward pass (matmuls and attention), for a uniform and for a pruned (per-layer) shape."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from zhcls.deploy.ceiling import model_flops
    from zhcls.models.checkpoint import load_checkpoint

    path = tiny_checkpoint(tmp_path / "ckpt", shared, "bert")
    model, _, _ = load_checkpoint(path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    for layer_heads, layer_ffn in ((None, None), ([4, 2], [128, 64])):
        if layer_heads:  # a pruned shape: its own config, its own model
            from zhcls.models.modeling import EncoderConfig, SequenceClassifier

            config = {**config, "layer_num_heads": layer_heads, "layer_intermediate_sizes": layer_ffn}
            model = SequenceClassifier(EncoderConfig.from_dict(config))
        for batch, length in ((3, 17), (8, 5)):
            ids = torch.randint(1, 100, (batch, length))
            # The math attention path: its matmuls are counted (the fused CPU kernel's are not).
            with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
                model.eval()(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids))
            assert model_flops(config, [(batch, length)]) == pytest.approx(counter.get_total_flops(), rel=1e-6)


def test_ceiling_measures_each_library_and_precision():
    from zhcls.deploy.ceiling import measure_ceiling

    ceiling = measure_ceiling(1, size=256)
    assert set(ceiling["per_core"]) == {"torch-fp32", "torch-bf16", "ort-fp32", "ort-int8"}
    assert all(v > 0 for v in ceiling["per_core"].values())
    assert isinstance(ceiling["flags"], list) and ceiling["cores"] >= 1
