"""``--device`` / ``--precision`` resolution (ahcl.device): what exists here, one-line refusals."""

from __future__ import annotations

import pytest
import torch

from ahcl import device as dev
from ahcl.device import DeviceError, placement, resolve_device, resolve_precision


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)


def test_auto_is_the_cpu_without_accelerators(no_gpu) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert placement().precision == "fp32"
    assert resolve_device(" CPU ") == torch.device("cpu")


def test_missing_cuda_is_one_line(no_gpu) -> None:
    with pytest.raises(DeviceError) as err:
        resolve_device("cuda")
    assert str(err.value) == "--device cuda: no CUDA device is visible; use --device cpu"
    assert (err.value.option, err.value.value) == ("device", "cuda")
    with pytest.raises(DeviceError, match="no CUDA device"):
        resolve_device("cuda:1")
    with pytest.raises(DeviceError, match="MPS backend is not available"):
        resolve_device("mps")


def test_gpu_index_out_of_range(one_gpu) -> None:
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match=r"has 1 CUDA device\(s\), cuda:0..cuda:0"):
        resolve_device("cuda:7")


def test_typos_name_the_choices() -> None:
    with pytest.raises(DeviceError, match="--device cdua: not a device; use one of auto, cpu"):
        resolve_device("cdua")
    with pytest.raises(DeviceError, match="--precision half: use one of auto, fp32, bf16, fp16"):
        resolve_precision("half", torch.device("cpu"))


def test_precision_rules(one_gpu) -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", gpu) == "bf16"
    assert resolve_precision("fp16", gpu) == "fp16"
    with pytest.raises(DeviceError, match="--precision fp16 needs a GPU"):
        resolve_precision("fp16", cpu)


def test_placement_autocast_on_cpu() -> None:
    place = placement("cpu", "bf16")
    a = torch.randn(4, 8)
    with place.autocast():
        assert (a @ a.T).dtype == torch.bfloat16
    with placement("cpu", "fp32").autocast():
        assert (a @ a.T).dtype == torch.float32


def test_default_workers_is_bounded() -> None:
    assert 1 <= dev.default_workers() <= 8
