"""Methods on a placement: fp32 on the CPU is the default path byte for byte; bf16 autocast on
the CPU agrees with it within a stated tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ahcl.device import placement
from ahcl.index.packing import unpack_codes
from ahcl.methods.registry import create_method

FAST = {"ahcl": {"outer_iters": 3, "epochs": 1, "num_samples": None, "lr_milestones": []},
        "dpsh": {"epochs": 4, "batch_size": 32}}


@pytest.fixture(scope="module")
def features() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(4, 24)) * 3
    labels = np.repeat(np.arange(4), 30)
    x = (centres[labels] + rng.normal(size=(120, 24))).astype(np.float32)
    return x, labels


@pytest.mark.parametrize("name", ["ahcl", "dpsh"])
def test_cpu_fp32_placement_is_the_default_path(features, name) -> None:
    x, y = features
    a = create_method(name, n_bits=16, **FAST[name]).fit(x, y)
    b = create_method(name, n_bits=16, **FAST[name]).fit(x, y, placement=placement("cpu", "fp32"))
    assert a.db_codes_.tobytes() == b.db_codes_.tobytes()
    assert a.encode(x).tobytes() == b.encode(x).tobytes()


@pytest.mark.parametrize("name", ["ahcl", "dpsh"])
def test_bf16_autocast_agrees_with_fp32(features, name) -> None:
    """bf16 keeps 8 bits of mantissa in the network; the losses and the code step stay float32.
    Tolerance: at least 90% of the query-code bits equal, and the same nearest class centre."""
    x, y = features
    fp32 = create_method(name, n_bits=16, **FAST[name]).fit(x, y)
    bf16 = create_method(name, n_bits=16, **FAST[name]).fit(
        x, y, placement=placement("cpu", "bf16"))
    q32, q16 = unpack_codes(fp32.encode(x), 16), unpack_codes(bf16.encode(x), 16)
    assert np.mean(q32 == q16) >= 0.90
    db32, db16 = unpack_codes(fp32.db_codes_, 16), unpack_codes(bf16.db_codes_, 16)
    assert np.mean(db32 == db16) >= 0.90
    u = bf16.encode_u(x) if hasattr(bf16, "encode_u") else bf16.encode_real(x)
    assert u.dtype == np.float32  # signs are taken from float32 copies


def test_to_moves_the_encoder(features) -> None:
    x, y = features
    m = create_method("ahcl", n_bits=16, **FAST["ahcl"]).fit(x, y)
    codes = m.encode(x)
    m.to(placement("cpu", "bf16"))
    assert m.placement_.precision == "bf16"
    assert np.mean(unpack_codes(m.encode(x), 16) == unpack_codes(codes, 16)) >= 0.90
    assert next(m.net_.parameters()).device == torch.device("cpu")


def test_same_seed_device_and_precision_same_bytes(features) -> None:
    x, y = features
    place = placement("cpu", "bf16")
    a = create_method("ahcl", n_bits=16, **FAST["ahcl"]).fit(x, y, placement=place)
    b = create_method("ahcl", n_bits=16, **FAST["ahcl"]).fit(x, y, placement=place)
    assert a.db_codes_.tobytes() == b.db_codes_.tobytes()
    assert a.encode(x).tobytes() == b.encode(x).tobytes()
