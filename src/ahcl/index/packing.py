"""Packing of ±1 codes into bytes, the one code format used across the project.

A code of ``n_bits`` bits is stored as ``uint8 (n_bits // 8,)``: +1 → bit 1, −1 → bit 0, and
bit ``i`` lives in byte ``i // 8`` at position ``i % 8`` (``np.packbits(..., bitorder="little")``).
``n_bits`` must be a multiple of 8. A value of 0 counts as +1 (sign(0) = +1).
"""

from __future__ import annotations

import numpy as np


def pack_codes(pm1: np.ndarray) -> np.ndarray:
    """Pack real or ±1 codes into bytes.

    Args:
        pm1: ``(n, n_bits)`` array of any real dtype; entries ``>= 0`` become bit 1.

    Returns:
        ``uint8 (n, n_bits // 8)`` packed codes, C-contiguous.
    """
    pm1 = np.asarray(pm1)
    if pm1.ndim != 2:
        raise ValueError(f"codes must be 2-D (n, n_bits), got shape {pm1.shape}")
    if pm1.shape[1] % 8:
        raise ValueError(f"n_bits must be a multiple of 8, got {pm1.shape[1]}")
    return np.ascontiguousarray(np.packbits(pm1 >= 0, axis=1, bitorder="little"))


def unpack_codes(codes: np.ndarray, n_bits: int | None = None) -> np.ndarray:
    """Unpack ``uint8 (n, n_bits // 8)`` codes to ``int8 (n, n_bits)`` with values ±1."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2:
        raise ValueError(f"packed codes must be uint8 (n, n_bits/8), got {codes.dtype} {codes.shape}")
    bits = np.unpackbits(codes, axis=1, bitorder="little")
    if n_bits is not None:
        if n_bits != codes.shape[1] * 8:
            raise ValueError(f"n_bits={n_bits} does not match packed width {codes.shape[1]} bytes")
    out = bits.astype(np.int8)
    out *= 2
    out -= 1
    return out


def as_packed(codes: np.ndarray) -> np.ndarray:
    """Accept packed ``uint8`` codes or a ±1 (or real-valued) array; return packed ``uint8``.

    A ``uint8`` 2-D array is taken as already packed; anything else is packed by sign.
    """
    codes = np.asarray(codes)
    if codes.dtype == np.uint8:
        if codes.ndim != 2:
            raise ValueError(f"packed codes must be 2-D, got shape {codes.shape}")
        return np.ascontiguousarray(codes)
    return pack_codes(codes)
