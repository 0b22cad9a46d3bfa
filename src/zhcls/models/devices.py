"""Device and mixed-precision choice, shared by training and the PyTorch predictor."""
from __future__ import annotations

import torch

from zhcls.errors import ZhclsError


def resolve_device(device: str = "auto") -> torch.device:
    if device in ("auto", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device in ("gpu", "cuda") or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ZhclsError("--device gpu: no CUDA GPU is available here (use --device cpu)")
        return torch.device("cuda" if device == "gpu" else device)
    if device == "cpu":
        return torch.device("cpu")
    raise ZhclsError(f"--device {device}: expected cpu, gpu or auto")


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    dtypes = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if amp not in dtypes:
        raise ZhclsError(f"--amp {amp}: expected auto, none, bf16 or fp16")
    if amp == "fp16" and device.type != "cuda":
        raise ZhclsError("--amp fp16 needs a GPU; on CPU use --amp bf16 or none")
    return dtypes[amp]
