"""The one device picker of the model family: which device and compute dtype a model runs on.

``"auto"`` picks CUDA when it is available, then Apple's MPS, then the CPU. The default compute dtype
follows the device:

* ``cuda`` → ``bfloat16``: half the memory and tensor-core speed; every op the models use has a bf16 kernel;
* ``mps`` → ``float32``: MPS covers bf16 and fp16 only for part of the ops these models run (deformable
  attention's ``grid_sample``, some reductions), so a half-precision default would fail or fall back op by op;
* ``cpu`` → ``float32``: CPUs without bf16 matrix units run bf16 slower than fp32.

An explicit device that this machine lacks (``cuda``, ``cuda:N``, ``mps``) is a one-line
:class:`~segearth_geo.errors.UsageError`, never a silent fall-back. Everything that chooses a device
(segmenters, checkpoint loaders, training, ``segearth-geo models --device``) goes through
:func:`resolve_device`; :func:`describe_device` is the one way it is told to users.
"""

from __future__ import annotations

import torch

from segearth_geo.errors import UsageError

# Compute dtype names (and their short aliases) → torch dtypes.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_DTYPES = {"cuda": torch.bfloat16, "mps": torch.float32, "cpu": torch.float32}


def _mps_available() -> bool:
    return torch.backends.mps.is_available()


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA, then MPS, then CPU; an explicit device is checked to exist (one-line UsageError)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"unknown device {str(device)!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {str(device)!r} was requested but CUDA is not available; "
                             "use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"device {str(device)!r} was requested but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 to "
                             f"cuda:{torch.cuda.device_count() - 1}); use --device cuda or auto")
    elif dev.type == "mps" and not _mps_available():
        raise UsageError(f"device {str(device)!r} was requested but Apple MPS is not available; "
                         "use --device cpu or auto")
    elif dev.type not in DEFAULT_DTYPES:
        raise UsageError(f"unsupported device {str(device)!r}; use auto, cpu, cuda, cuda:N or mps")
    return dev


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A torch dtype from a name (``"bf16"``, ``"bfloat16"``, ``"torch.bfloat16"``) or a dtype; ``None`` stays."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).replace("torch.", "")
    if name not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")
    return DTYPES[name]


def resolve_device(device: str | torch.device = "auto",
                   dtype: str | torch.dtype | None = None) -> tuple[torch.device, torch.dtype]:
    """The device (:func:`pick_device`) and the compute dtype: ``dtype`` if given, else the device's default."""
    dev = pick_device(device)
    return dev, parse_dtype(dtype) or DEFAULT_DTYPES[dev.type]


def describe_device(device: torch.device, dtype: torch.dtype) -> str:
    """What a model runs on, in words: ``"cuda:0 (NVIDIA H200, bfloat16)"``, ``"cpu (CPU, float32)"``."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = {"mps": "Apple MPS", "cpu": "CPU"}.get(device.type, device.type)
    return f"{device} ({name}, {str(dtype).replace('torch.', '')})"
