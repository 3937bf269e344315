"""The one device picker: ``auto`` order, the default dtype per device, one-line refusals, one description."""

from __future__ import annotations

import pytest
import torch

from segearth_geo.errors import UsageError
from segearth_geo.model.device import describe_device, parse_dtype, pick_device, resolve_device
from segearth_geo.model.registry import default_device, list_models


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == (torch.device("cpu"), torch.float32)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == (torch.device("mps"), torch.float32)  # fp32: MPS half coverage is partial
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")


def test_dtype_is_the_devices_default_unless_given():
    assert resolve_device("cpu") == (torch.device("cpu"), torch.float32)
    assert resolve_device("cpu", "bf16")[1] is torch.bfloat16
    assert resolve_device("cpu", torch.float16)[1] is torch.float16
    assert parse_dtype("torch.bfloat16") is torch.bfloat16 and parse_dtype(None) is None
    with pytest.raises(UsageError, match="unknown dtype"):
        parse_dtype("float64")
    assert describe_device(torch.device("cpu"), torch.bfloat16) == "cpu (CPU, bfloat16)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_asked_but_absent_is_one_line(device):
    with pytest.raises(UsageError, match=f"device '{device}' was requested but CUDA is not available; "
                                         "use --device cpu or auto"):
        pick_device(device)
    with pytest.raises(UsageError, match="CUDA is not available"):
        list_models(device)  # `segearth-geo models --device cuda` uses the same picker


def test_cuda_index_beyond_the_device_count_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(UsageError, match="'cuda:2' was requested but this machine has 2 CUDA device"):
        pick_device("cuda:2")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_asked_but_absent_is_one_line():
    with pytest.raises(UsageError, match="'mps' was requested but Apple MPS is not available"):
        pick_device("mps")


def test_models_listing_names_the_device_in_words():
    assert default_device("cpu") == "cpu"
    assert default_device("auto") == describe_device(*resolve_device("auto"))
