"""Where torch work runs and in what precision: ``--device`` and ``--precision``, resolved once.

``auto`` picks the accelerator a user has (CUDA, then Apple MPS, else the CPU); a device that is
not there is refused with one line before anything is written. Precision is autocast's compute
type for the network (forward and backward); what needs exactness stays in float32/float64 no
matter what: the database-code step and its statistics (``VᵀV``, ``P``, ``UᵀU``, ``R``), the
losses' reductions (autocast keeps them in float32), the signs that become codes (taken from
float32 copies of ``u``), and the evaluation.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import Iterator

import torch

from ahcl.errors import AhclError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(AhclError, ValueError):
    """A device or precision that is not available here.

    Attributes:
        option: ``"device"`` or ``"precision"`` (the flag at fault).
        value: what was asked for.
    """


@dataclass(frozen=True)
class Placement:
    """A resolved device and precision.

    Attributes:
        device: where tensors and modules go.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    """

    device: torch.device
    precision: str = "fp32"

    @property
    def dtype(self) -> torch.dtype | None:
        """Autocast's dtype, ``None`` for plain float32."""
        return _DTYPES[self.precision]

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast to :attr:`dtype` on this device (nothing for fp32)."""
        if self.dtype is None:
            yield
        else:
            with torch.autocast(self.device.type, dtype=self.dtype):
                yield

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on the device (asynchronously from pinned memory on CUDA)."""
        return tensor.to(self.device, non_blocking=self.is_cuda)


#: The CPU in float32: the default placement of every method, feeder and run.
CPU = Placement(torch.device("cpu"))


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` → a device that exists here.

    Raises:
        DeviceError: unknown spelling, or a device this machine does not have (one line that
            says what to use instead).
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match:
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {spec}: no CUDA device is visible; use --device cpu",
                              option="device", value=spec)
        index = int(match.group(1) or torch.cuda.current_device())
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"--device {spec}: this machine has {count} CUDA device(s), "
                              f"cuda:0..cuda:{count - 1}", option="device", value=spec)
        return torch.device("cuda", index)
    if spec == "mps":
        if not _mps_available():
            raise DeviceError("--device mps: Apple's MPS backend is not available here; "
                              "use --device cpu", option="device", value=spec)
        return torch.device("mps")
    raise DeviceError(f"--device {spec}: not a device; use one of {', '.join(DEVICES)}",
                      option="device", value=spec)


def resolve_precision(spec: str | None, device: torch.device) -> str:
    """``auto`` | ``fp32`` | ``bf16`` | ``fp16`` for ``device``: auto is bf16 on CUDA devices that
    support it and fp32 elsewhere; fp16 needs a GPU (CPU autocast has no float16 kernels worth
    using).

    Raises:
        DeviceError: unknown spelling, fp16 on the CPU, or bf16 on a GPU without it.
    """
    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec not in PRECISIONS:
        raise DeviceError(f"--precision {spec}: use one of {', '.join(PRECISIONS)}",
                          option="precision", value=spec)
    cuda = device.type == "cuda"
    if spec == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if spec == "fp16" and device.type == "cpu":
        raise DeviceError("--precision fp16 needs a GPU; on the CPU use fp32 (or bf16)",
                          option="precision", value=spec)
    if spec == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no "
                          "bfloat16; use fp16 or fp32", option="precision", value=spec)
    return spec


def placement(device: str | torch.device | None = "auto",
              precision: str | None = "auto") -> Placement:
    """Resolve both options (see :func:`resolve_device` and :func:`resolve_precision`)."""
    dev = resolve_device(device)
    return Placement(dev, resolve_precision(precision, dev))


def default_workers() -> int:
    """Data-loading worker processes by default: ``min(cores, 8)`` (cores this process may use)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
