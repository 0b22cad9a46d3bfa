"""The machine's own ceiling: how fast a large GEMM runs through the libraries the predictors use, and
how many FLOPs a model spends on a batch, so that every backend's speed is also a fraction of the limit.

Ceilings (per core, at the threads given), each the best of a few timed runs of one square GEMM:
  torch-fp32   torch.matmul, float32 (oneDNN / MKL: what the PyTorch predictor runs)
  torch-bf16   torch.matmul on bfloat16 tensors (oneDNN, AMX or AVX512-BF16 where the CPU has them)
  ort-fp32     ONNX Runtime MatMul (MLAS: the fp32 ONNX graph's kernels)
  ort-int8     ONNX Runtime MatMulInteger, uint8 x int8 (MLAS: the INT8 graphs' kernels, VNNI where present)
A model's FLOPs count the work actually done on a padded batch: the linear layers (2 x weights per
token) and attention's two batched products (4 x L x width per token per layer).
"""
from __future__ import annotations

import time

import numpy as np

from zhcls.hardware import cpu_info

SIZE = 1024  # a 1024^3 GEMM: 2.1 GFLOP, large enough for every library's best kernel, short enough to repeat
RUNS = 5
# The ceiling each backend's figure is compared with: its own library and precision.
CEILING_OF = {"torch": "torch-fp32", "torch-bf16": "torch-bf16", "onnx": "ort-fp32", "onnx-fused": "ort-fp32",
              "onnx-int8": "ort-int8", "onnx-int8-static": "ort-int8"}


def _best_seconds(fn, runs: int = RUNS) -> float:
    fn()  # warm-up: kernel selection, packing, thread pool start
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def torch_gemm(dtype: str, threads: int, size: int = SIZE) -> float:
    """GFLOP/s of a size^3 torch.matmul in ``dtype`` (float32 or bfloat16) on ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    t = getattr(torch, dtype)
    a, b = torch.randn(size, size).to(t), torch.randn(size, size).to(t)
    with torch.inference_mode():
        seconds = _best_seconds(lambda: torch.matmul(a, b))
    return 2 * size**3 / seconds / 1e9


def ort_gemm(dtype: str, threads: int, size: int = SIZE) -> float:
    """GFLOP/s (GOP/s for int8) of a size^3 ONNX Runtime MatMul (float32) or MatMulInteger (int8),
    the weight a constant as in the exported graphs."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if dtype == "int8":
        a = rng.integers(0, 256, (size, size), dtype=np.uint8)
        weight = numpy_helper.from_array(rng.integers(-127, 128, (size, size), dtype=np.int8), "B")
        zero = numpy_helper.from_array(np.array(128, dtype=np.uint8), "a_zero")
        node = helper.make_node("MatMulInteger", ["A", "B", "a_zero"], ["Y"])
        inits, a_type, y_type = [weight, zero], TensorProto.UINT8, TensorProto.INT32
    else:
        a = rng.standard_normal((size, size), dtype=np.float32)
        weight = numpy_helper.from_array(rng.standard_normal((size, size), dtype=np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        inits, a_type, y_type = [weight], TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", a_type, [size, size])],
                              [helper.make_tensor_value_info("Y", y_type, [size, size])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 8)  # readable by older onnxruntime releases too
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    seconds = _best_seconds(lambda: session.run(None, {"A": a}))
    return 2 * size**3 / seconds / 1e9


def measure_ceiling(threads: int, *, with_torch: bool = True, size: int = SIZE) -> dict:
    """Per-core GFLOP/s (GOP/s for int8) of each library and precision, with the CPU they were measured on."""
    total = {"ort-fp32": ort_gemm("float32", threads, size), "ort-int8": ort_gemm("int8", threads, size)}
    if with_torch:
        total["torch-fp32"] = torch_gemm("float32", threads, size)
        total["torch-bf16"] = torch_gemm("bfloat16", threads, size)
    return {"threads": threads, "gemm_size": size, **cpu_info(),
            "per_core": {k: v / threads for k, v in total.items()}}


def model_flops(config: dict, shapes) -> float:
    """FLOPs of one forward pass over padded batches of ``shapes`` [(batch, length), ...], from a
    config.json dict (pruned models: their per-layer head counts and FFN widths)."""
    h = config["hidden_size"]
    layers = config["num_hidden_layers"]
    head_size = h // config["num_attention_heads"]
    heads = config.get("layer_num_heads") or [config["num_attention_heads"]] * layers
    ffns = config.get("layer_intermediate_sizes") or [config["intermediate_size"]] * layers
    e = config.get("embedding_size") or h
    labels = len(config.get("id2label") or {0: 0, 1: 1})
    per_token = 2 * e * h if e != h else 0  # ELECTRA's embedding projection
    width = [n * head_size for n in heads]
    per_token += sum(2 * (3 * h * w + w * h + 2 * h * f) for w, f in zip(width, ffns))
    total = 0.0
    for b, length in shapes:
        total += b * length * per_token  # linear layers
        total += sum(4 * b * length * length * w for w in width)  # Q K^T and (attention) V
        total += 2 * b * (h * h + h * labels)  # pooler and classifier on [CLS]
    return total
