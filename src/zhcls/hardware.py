"""What this CPU can do, read from /proc/cpuinfo: the instruction sets that decide the engine's path.

Torch-free and below every layer, so the ONNX predictor, the training loop and the benchmarks all read
the same answer. Every speed figure zhcls records carries `cpu_info()` beside it: the machines it runs
on differ (AVX2-only, AVX512 with VNNI, AMX), and so do the paths that win on them.
"""
from __future__ import annotations

import functools
import os
import platform

# The flags that change which kernels oneDNN and MLAS can use: int8 dot products (VNNI, AMX-INT8), bf16
# dot products (AVX512-BF16, AMX-BF16), and the vector width.
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


@functools.cache
def _cpuinfo() -> tuple[str, frozenset]:
    """(model name, flags) of the first processor listed; empty on systems without /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return platform.processor(), frozenset()
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86 / arm
            flags = frozenset(value.split())
    return model, flags


def cpu_flags() -> list[str]:
    """The `FLAGS` this CPU has, in FLAGS order."""
    present = _cpuinfo()[1]
    return [f for f in FLAGS if f in present]


def has_bf16() -> bool:
    """Native bf16 dot products (AVX512-BF16 or AMX-BF16): where bf16 can beat fp32, not merely emulate it."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


def has_vnni() -> bool:
    """Native int8 dot products (AVX512-VNNI, AVX-VNNI or AMX-INT8): where INT8 can double fp32."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(cpu_flags()))


def cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_info() -> dict:
    """Model, instruction sets and usable cores: recorded beside every speed figure."""
    return {"cpu": _cpuinfo()[0], "flags": cpu_flags(), "cores": cores()}
