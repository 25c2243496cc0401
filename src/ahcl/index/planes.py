"""Bit planes: codes transposed for the bit-sliced (``avx2``) kernel path.

Rows are cut into blocks of :data:`~ahcl.index.intrinsics.BS_ROWS` (256). Block ``k`` holds
``n_planes`` planes (``n_bits`` rounded up to a multiple of 16; the extra planes are zero), each
4 ``uint64`` lanes: bit ``i`` of lane ``l`` of plane ``p`` is bit ``p`` of row
``256 k + 64 l + i``. Rows past the end are zero and masked out by the kernels. A plane of one
query is a constant: all ones where the query's bit is set (:func:`query_masks`), so the XOR of
plane and mask marks the rows that differ from the query in that bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ahcl.index.intrinsics import BS_GROUP, BS_LANES, BS_ROWS


def n_planes(n_bits: int) -> int:
    """Planes per block: ``n_bits`` rounded up to a multiple of 16."""
    return -(-n_bits // BS_GROUP) * BS_GROUP


@njit(cache=True, nogil=True, inline="always")
def _transpose64(a):
    """In place: afterwards bit ``i`` of ``a[b]`` is the former bit ``b`` of ``a[i]``."""
    j = 32
    m = np.uint64(0x00000000FFFFFFFF)
    while j != 0:
        k = 0
        while k < 64:
            t = ((a[k] >> np.uint64(j)) ^ a[k + j]) & m
            a[k] ^= t << np.uint64(j)
            a[k + j] ^= t
            k = (k + j + 1) & ~j
        j >>= 1
        m ^= m << np.uint64(j)


@njit(cache=True, nogil=True, parallel=True)
def to_planes(words, n, w, planes):
    """Bit planes of ``n`` rows of ``w`` words (flat ``uint64 (n * w,)``).

    Returns:
        ``uint64 (ceil(n / 256) * planes * 4,)``, the layout of the module docstring.
    """
    n_blocks = (n + BS_ROWS - 1) // BS_ROWS
    out = np.zeros(n_blocks * planes * BS_LANES, dtype=np.uint64)
    for blk in prange(n_blocks):
        tmp = np.empty(64, dtype=np.uint64)
        for lane in range(BS_LANES):
            r0 = blk * BS_ROWS + lane * 64
            if r0 >= n:
                break
            rows = min(64, n - r0)
            for c in range(w):
                tmp[:] = 0
                for i in range(rows):
                    tmp[i] = words[(r0 + i) * w + c]
                _transpose64(tmp)
                top = min(64, planes - 64 * c)
                for b in range(top):
                    out[(blk * planes + 64 * c + b) * BS_LANES + lane] = tmp[b]
    return out


@njit(cache=True, nogil=True)
def query_masks(queries, planes):
    """``uint64 (nq, planes)``: all ones where bit ``p`` of query ``i`` is set, else zero."""
    nq, w = queries.shape
    out = np.zeros((nq, planes), dtype=np.uint64)
    for i in range(nq):
        for p in range(min(planes, 64 * w)):
            if (queries[i, p // 64] >> np.uint64(p % 64)) & np.uint64(1):
                out[i, p] = np.uint64(0xFFFFFFFFFFFFFFFF)
    return out


def split_geometry(n_bits: int, semantic_bits: int) -> tuple[int, int, int, int]:
    """``(s_groups, i_groups, s_hi, i_hi)`` of split bit planes: groups of 16 planes of the
    semantic and of the instance bits (each part padded to a multiple of 16 on its own), and the
    counter bits above 8 that each count needs (the semantic count is compared with values up to
    ``semantic_bits + 1``)."""
    instance_bits = n_bits - semantic_bits
    return (n_planes(semantic_bits) // BS_GROUP, n_planes(instance_bits) // BS_GROUP,
            max(0, (semantic_bits + 1).bit_length() - 4), max(0, instance_bits.bit_length() - 4))


def _split_layout(x: np.ndarray, n_bits: int, semantic_bits: int) -> np.ndarray:
    """``x`` (planes on axis 1, in :func:`to_planes`' order) in the split order: the semantic
    planes, zero planes up to a multiple of 16, then the instance planes. With 16-aligned
    semantic bits that is the plain order itself (``x`` returned as it is, no copy)."""
    sem = n_planes(semantic_bits)
    if sem == semantic_bits:
        return x
    out = np.zeros((x.shape[0], sem + n_planes(n_bits - semantic_bits)) + x.shape[2:],
                   dtype=x.dtype)
    out[:, :semantic_bits] = x[:, :semantic_bits]
    out[:, sem:sem + n_bits - semantic_bits] = x[:, semantic_bits:n_bits]
    return out


def split_planes(plain: np.ndarray, n_bits: int, semantic_bits: int) -> np.ndarray:
    """Bit planes of a split index (:func:`_split_layout`) from the plain ones
    (:func:`to_planes` with ``n_planes(n_bits)``), flat."""
    blocks = plain.reshape(-1, n_planes(n_bits), BS_LANES)
    return _split_layout(blocks, n_bits, semantic_bits).reshape(-1)


def split_query_masks(plain: np.ndarray, n_bits: int, semantic_bits: int) -> np.ndarray:
    """Query plane masks (:func:`query_masks`) in the order of :func:`split_planes`."""
    return _split_layout(plain, n_bits, semantic_bits)
