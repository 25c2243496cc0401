"""Measurements for the benchmark: peak memory of the process, backbone time per image."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ahcl.data.images import load_rgb

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mib(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mib() -> float | None:
    """Resident memory of this process now (MiB); ``None`` off Linux."""
    return _status_mib("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ≥ 4.0); False if unsupported."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float | None:
    """Peak resident memory since the last :func:`reset_peak_rss` (MiB); ``None`` off Linux."""
    return _status_mib("VmHWM")


class PeakMemory:
    """Context manager: ``peak_mib`` (process peak RSS inside the block) and ``extra_mib``
    (peak minus the resident memory on entry); both ``None`` where the kernel cannot reset
    the peak mark."""

    def __enter__(self) -> "PeakMemory":
        self.supported = reset_peak_rss()
        self.start_mib = rss_mib()
        self.peak_mib: float | None = None
        self.extra_mib: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.supported and self.start_mib is not None:
            self.peak_mib = peak_rss_mib()
            if self.peak_mib is not None:
                self.extra_mib = max(0.0, self.peak_mib - self.start_mib)


@torch.inference_mode()
def backbone_seconds_per_image(backbone: Any, paths: Sequence[str], batch_size: int = 16,
                               repeats: int = 2) -> float:
    """Wall time of decoding + transforming + one backbone forward, per image.

    The best of ``repeats`` passes over ``paths`` (the first pass also warms up allocators), so
    noise from the other processes on a shared machine inflates it as little as possible.
    """
    was_training = backbone.training
    backbone.eval()
    best = float("inf")
    try:
        for _ in range(max(1, repeats)):
            tic = time.perf_counter()
            for start in range(0, len(paths), batch_size):
                batch = torch.stack([backbone.transform(load_rgb(p))
                                     for p in paths[start:start + batch_size]])
                backbone.forward_features(batch)
            best = min(best, time.perf_counter() - tic)
    finally:
        backbone.train(was_training)
    return best / max(len(paths), 1)


def sample_rows(n: int, k: int, seed: int) -> np.ndarray:
    """``min(n, k)`` sorted distinct rows of ``range(n)``, seeded."""
    return np.sort(np.random.default_rng([seed, 0x71]).choice(n, min(n, k), replace=False))
