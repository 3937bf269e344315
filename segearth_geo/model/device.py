"""Which device and dtype a model runs on: ``"auto"`` picks CUDA (bf16) when available, else CPU (fp32)."""

from __future__ import annotations

import torch

from segearth_geo.errors import CheckpointError, UsageError


def resolve_device(device: str | torch.device = "auto", dtype=None) -> tuple[torch.device, torch.dtype]:
    """``"auto"`` → CUDA (bf16) when available, else CPU (fp32); explicit devices default likewise."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' was requested but CUDA is not available; use --device cpu or auto")
    if isinstance(dtype, str):
        dtype = _resolve_device_dtype(dev, dtype)[1]
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    return dev, dtype


def _resolve_device_dtype(device, dtype) -> tuple[torch.device, torch.dtype]:
    dev = torch.device("cpu" if device is None else device)
    if isinstance(dtype, str):
        names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
                 "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
        if dtype not in names:
            raise CheckpointError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
        dtype = names[dtype]
    return dev, dtype or torch.float32


def describe_device(device: torch.device, dtype: torch.dtype) -> str:
    """What a segmenter runs on, for logs and summaries: ``"cuda:0 (NVIDIA H200, bfloat16)"``, ``"cpu (CPU, float32)"``."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return f"{device} ({name}, {str(dtype).replace('torch.', '')})"
