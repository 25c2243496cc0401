"""Compiled Hamming kernels (numba): exact top-k and range search over uint64 words.

Codes reach the kernels as flat ``uint64 (n * W,)`` rows (``W = ceil(n_bits / 64)``, zero padded,
so padding bits never add distance) and, for the ``avx2`` path, also as bit planes
(:mod:`ahcl.index.planes`). Every kernel is ``cache=True`` (compiled once per machine, then
loaded from ``__pycache__``) and ``nogil``; the query loops use ``prange``. Callers run them inside
:func:`thread_limit`, which scopes the thread count to the calling thread and the call, and pass
the path code of :func:`ahcl.index.simd.path_code`.

Scan: the database goes by in tiles of 2048 rows, each shared by a block of up to 64 queries
while it is in cache (the ``avx512`` path first copies a tile of codes wider than 64 bits into
word-major order, once per block, so its vectors hold one word of 8 rows). For each query,
:func:`tile_masks` marks the rows within the query's running bound, one bit per row (the path's
vector kernel, :mod:`ahcl.index.intrinsics`), and only marked rows are looked at again: a scalar
distance, the exact (distance, id) test, and the candidate buffer. Once the bound has settled, a
tile costs the mask pass and nothing else.

Top-k selection: :mod:`ahcl.index.selection` (a candidate buffer per query and a running bound).
The mask of a tile uses the bound the query had when the tile started; the bound only tightens,
so no row that can still enter is missed. Rows of a tile whose ids all exceed the bound's id
cannot enter at the bound's distance, so that tile is masked one distance lower.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import numba
import numpy as np
from numba import njit, prange

from ahcl.index.intrinsics import (BS_GROUP, BS_ROWS, bs_mask256, bs_mask256_h0, bs_mask256_h1,
                                   bs_mask256_h2, bs_mask256_h3, bs_mask256_h4, bs_mask256_h5,
                                   bs_mask256_h6, bs_mask256_h7, cttz64, popcnt_scalar, prefetch,
                                   vp_mask64)
from ahcl.index.selection import compact
from ahcl.index.simd import AVX2, AVX512

TILE = 2048  # most database rows per tile (see tile_rows)
TILE_BYTES = 64 << 10  # codes of a tile: in L1/L2 while a block of queries reuses them
QBLOCK = (16, 64)  # queries that share a tile: at least, at most (see query_block)
GROUP = 64  # rows per mask word
NO_ID = np.iinfo(np.int64).max  # bound id that lets every row at the bound's distance in


def tile_rows(w: int) -> int:
    """Rows per tile for codes of ``w`` words: a multiple of 256 (bit-plane blocks), at most
    :data:`TILE`, whose codes fit :data:`TILE_BYTES`."""
    return max(BS_ROWS, min(TILE, TILE_BYTES // (8 * w) // BS_ROWS * BS_ROWS))


def query_block(nq: int) -> int:
    """Queries per block: as many as fit (each block streams the database from memory once),
    but at least two blocks per thread of the calling thread's numba count, for balance."""
    return max(QBLOCK[0], min(QBLOCK[1], nq // (2 * numba.get_num_threads())))


# Held around kernel calls when numba's threading layer is "workqueue", which aborts the process
# when two Python threads launch parallel kernels at once (omp and tbb are thread-safe).
_SERIAL = threading.RLock()


def _layer_is_threadsafe() -> bool:
    numba.get_num_threads()  # starts numba's pool once (under numba's lock), choosing the layer
    return numba.threading_layer() != "workqueue"


def query_threads(queries: int, threads: int) -> int:
    """Threads worth a parallel launch over ``queries`` queries: the query loops hand out blocks
    of at least ``QBLOCK[0]`` queries (:func:`query_block`), so beyond one thread per block the
    others only wait for the one that works, each on a core (GNU OpenMP's workers spin a while
    at every launch's end). ``benchmarks/bench_single_query.py``, AMD EPYC, 2 cores: one query
    on 1M 64-bit codes 0.174 ms and 0.201 ms of CPU this way, 0.173 ms and 0.366 ms of CPU on
    both threads; on 10M, 5.43 ms (5.50 CPU) against 5.47 ms (11.06 CPU)."""
    return max(1, min(threads, -(-int(queries) // QBLOCK[0])))


@contextlib.contextmanager
def thread_limit(threads: int | None, queries: int | None = None) -> Iterator[None]:
    """Run the enclosed kernels on ``threads`` threads, for the calling thread and this block only.

    ``numba.set_num_threads`` is thread-local (numba keeps the count per thread and each parallel
    launch reads the launching thread's value; a new thread starts at ``NUMBA_NUM_THREADS``), so
    the limit holds for this thread and this ``with`` block only: two threads can search with
    different limits at once, and nothing process-wide changes. ``threads`` is clamped to
    ``[1, NUMBA_NUM_THREADS]``; ``None`` keeps the calling thread's count (numba's default: all
    cores). With ``queries``, the enclosed kernels' launches over that many queries, at most
    :func:`query_threads` of them. Under numba's "workqueue" layer, which is not thread-safe, the
    blocks of different threads run one at a time.
    """
    with contextlib.ExitStack() as stack:
        if not _layer_is_threadsafe():
            stack.enter_context(_SERIAL)
        if threads is not None or queries is not None:
            previous = numba.get_num_threads()
            count = max(1, min(int(previous if threads is None else threads),
                               numba.config.NUMBA_NUM_THREADS))
            outer = getattr(_UNCAPPED, "count", None)
            _UNCAPPED.count = count
            stack.callback(setattr, _UNCAPPED, "count", outer)
            if queries is not None:
                count = query_threads(queries, count)
            numba.set_num_threads(count)
            stack.callback(numba.set_num_threads, previous)
        yield


_UNCAPPED = threading.local()  # count: the innermost thread_limit's count before its query cap


@contextlib.contextmanager
def database_threads() -> Iterator[None]:
    """Inside :func:`thread_limit` with ``queries``, the enclosed kernels on the count before the
    query cap: work over the database (bit planes, tables made at a search's first use) splits
    by rows, not by queries."""
    count = getattr(_UNCAPPED, "count", None)
    if count is None or count == numba.get_num_threads():
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(count)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


@njit(cache=True, nogil=True, inline="always")
def row_distance(q, db, w, j):
    """Hamming distance of query words ``q`` to row ``j >= 0`` of the flat rows ``db`` (scalar).
    Indexed, not sliced (a slice is a new array: reference counting per row), and unsigned
    (no negative-index wraparound test per word)."""
    s = np.uint64(0)
    at = np.uint64(j) * np.uint64(w)
    for word in range(w):
        s += popcnt_scalar(q[word] ^ db[at + np.uint64(word)])
    return np.int64(s)


@njit(cache=True, nogil=True, inline="always")
def _group_mask(q, db, w, g, t):
    """Mask of the 64 rows ``g .. g + 63`` within ``t`` (scalar POPCNT). Rows go last to first,
    each doubling the mask and adding its bit (one LEA, not a variable shift and an OR), in four
    independent chains of 16 rows so that the chains overlap; indices are unsigned, which skips
    numba's negative-index wraparound test."""
    m0 = np.uint64(0)
    m1 = np.uint64(0)
    m2 = np.uint64(0)
    m3 = np.uint64(0)
    for i in range(15, -1, -1):
        j = np.uint64(g + i)
        m0 = m0 + m0 + np.uint64(row_distance(q, db, w, j) <= t)
        m1 = m1 + m1 + np.uint64(row_distance(q, db, w, j + np.uint64(16)) <= t)
        m2 = m2 + m2 + np.uint64(row_distance(q, db, w, j + np.uint64(32)) <= t)
        m3 = m3 + m3 + np.uint64(row_distance(q, db, w, j + np.uint64(48)) <= t)
    return m0 | (m1 << np.uint64(16)) | (m2 << np.uint64(32)) | (m3 << np.uint64(48))


@njit(cache=True, nogil=True)
def _masks_rows(q, db, w, start, stop, t, masks):
    """Masks of rows ``[start, stop)`` one row at a time with scalar POPCNT: the ``popcnt`` path,
    and the last rows of a tile that fill no group of 64 on the ``avx512`` path. Returns the OR
    of the mask words."""
    any_ = np.uint64(0)
    for g in range(start, stop, GROUP):
        end = min(stop, g + GROUP)
        if end - g < GROUP:  # the last rows of a tile, row by row
            m = np.uint64(0)
            for j in range(end - 1, g - 1, -1):
                m = m + m + np.uint64(row_distance(q, db, w, j) <= t)
        elif w == 1:  # a constant word count (inlined) unrolls the word loop
            m = _group_mask(q, db, 1, g, t)
        elif w == 2:
            m = _group_mask(q, db, 2, g, t)
        elif w == 4:
            m = _group_mask(q, db, 4, g, t)
        else:
            m = _group_mask(q, db, w, g, t)
        masks[(g - start) // GROUP] = m
        any_ |= m
    return any_


@njit(cache=True, nogil=True)
def tile_cols(path, db, w, start, stop, cols):
    """Prepare a tile for :func:`tile_masks`, once per block of queries: on the ``avx512`` path
    with ``W > 1``, copy rows ``[start, stop)`` word-major into ``cols`` (word ``c`` of row
    ``start + i`` at ``cols[c * tile + i]``, ``tile = cols.shape[0] // W``); on the ``avx2``
    path, which reads bit planes, prefetch the rows, whose distances the hits recompute (a
    cache miss per hit otherwise)."""
    if path == AVX2:
        for i in range(start * w, stop * w, 8):
            prefetch(db, i)
    if path != AVX512 or w == 1:
        return
    src = db[start * w:stop * w]
    tile = cols.shape[0] // w
    for c in range(w):
        dst = cols[c * tile:c * tile + stop - start]
        for i in range(stop - start):
            dst[i] = src[i * w + c]


@njit(cache=True, nogil=True, inline="always")
def _masks_vpopcnt(q, db, cols, w, start, stop, t, masks):
    """``avx512``: full groups of 64 rows by :func:`~ahcl.index.intrinsics.vp_mask64`. Returns
    the OR of the mask words."""
    full = start + (stop - start) // GROUP * GROUP
    any_ = np.uint64(0)
    for g in range(start, full, GROUP):
        if w == 1:
            m = vp_mask64(db, 0, g, q, 1, t)
        else:
            m = vp_mask64(cols, cols.shape[0] // w, g - start, q, w, t)
        masks[(g - start) // GROUP] = m
        any_ |= m
    if full < stop:
        any_ |= _masks_rows(q, db, w, full, stop, t, masks[(full - start) // GROUP:])
    return any_


@njit(cache=True, nogil=True, inline="always")
def _masks_planes(planes, qmask, n_groups, hi_levels, start, stop, t, masks):
    """``avx2``: blocks of 256 rows by :func:`~ahcl.index.intrinsics.bs_mask256`; ``start`` is a
    multiple of 256, rows from ``stop`` on are cleared. Returns the OR of the mask words."""
    any_ = np.uint64(0)
    for b in range(0, stop - start, BS_ROWS):
        blk, at = (start + b) // BS_ROWS, b // GROUP
        # the counter's width fixed at compile time (registers) for codes up to 2047 bits
        if hi_levels == 0:
            any_ |= bs_mask256_h0(planes, blk, qmask, n_groups, hi_levels, t, masks, at)
        elif hi_levels == 1:
            any_ |= bs_mask256_h1(planes, blk, qmask, n_groups, hi_levels, t, masks, at)
        elif hi_levels == 2:
            any_ |= bs_mask256_h2(planes, blk, qmask, n_groups, hi_levels, t, masks, at)
        elif hi_levels == 3:
            any_ |= bs_mask256_h3(planes, blk, qmask, n_groups, hi_levels, t, masks, at)
        elif hi_levels == 4:
            any_ |= bs_mask256_h4(planes, blk, qmask, n_groups, hi_levels, t, masks, at)
        elif hi_levels == 5:
            any_ |= bs_mask256_h5(planes, blk, qmask, n_groups, hi_levels, t, masks, at)
        elif hi_levels == 6:
            any_ |= bs_mask256_h6(planes, blk, qmask, n_groups, hi_levels, t, masks, at)
        elif hi_levels == 7:
            any_ |= bs_mask256_h7(planes, blk, qmask, n_groups, hi_levels, t, masks, at)
        else:
            any_ |= bs_mask256(planes, blk, qmask, n_groups, hi_levels, t, masks, at)
    return clear_past(masks, stop - start, any_)


@njit(cache=True, nogil=True, inline="always")
def clear_past(masks, n_rows, any_):
    """After bit-plane blocks of 256 rows: clear the mask bits of rows ``n_rows`` on (a last,
    partial block) and return the OR of the mask words (``any_`` when there are none)."""
    if n_rows % BS_ROWS == 0:
        return any_
    last = (n_rows - 1) // GROUP
    rest = n_rows - last * GROUP
    masks[last] &= (np.uint64(1) << np.uint64(rest)) - np.uint64(1) if rest < GROUP \
        else ~np.uint64(0)
    any_ = np.uint64(0)
    for i in range(last + 1):
        any_ |= masks[i]
    return any_


@njit(cache=True, nogil=True, inline="always")
def tile_masks(path, q, qmask, db, cols, planes, w, n_groups, hi_levels, start, stop, t, masks):
    """Bit masks of the rows ``[start, stop)`` (at most one tile) within ``t`` of one query.

    Args:
        path: :data:`~ahcl.index.simd.POPCNT`, ``AVX2`` or ``AVX512``.
        q: ``uint64 (W,)`` query words; qmask: its bit-plane masks (``avx2``; else unused).
        db: ``uint64 (n * W,)`` flat rows; cols: the tile from :func:`tile_cols`; planes: the
            rows' bit planes (``avx2``; else unused).
        n_groups, hi_levels: bit-plane geometry (:func:`~ahcl.index.intrinsics.bs_mask256`).
        t: threshold, ``0 <= t <= n_bits``.
        masks: ``uint64 (>= ceil((stop - start) / 64),)``; bit ``b`` of word ``i``: row
            ``start + 64 i + b`` is within ``t``.

    Returns:
        The OR of the mask words (0: no row within ``t``).
    """
    if path == AVX512:
        return _masks_vpopcnt(q, db, cols, w, start, stop, t, masks)
    if path == AVX2:
        return _masks_planes(planes, qmask, n_groups, hi_levels, start, stop, t, masks)
    return _masks_rows(q, db, w, start, stop, t, masks)


@njit(cache=True, nogil=True, inline="always")
def _below(hist, t_d):
    """Buffer entries with a distance below ``t_d``."""
    below = 0
    for d in range(t_d):
        below += hist[d]
    return below


@njit(cache=True, nogil=True, inline="always")
def _take_hits(q, db, w, ids, base, row0, m, k, bd, bp, hist, cnt, t_d, t_id, below):
    """Test the rows of one mask word against the bound and append those that enter.

    A row is always written and counted only when it enters; its id is read only at a tie. The
    bound tightens as rows come in: once ``k`` entries lie below ``t_d`` (``below``), the k-th
    distance is below ``t_d``, so ``t_d`` drops and every row at the new ``t_d`` may enter
    (``t_id`` = :data:`NO_ID`) until the next compaction makes the bound exact again.

    Returns:
        ``(cnt, t_d, t_id, below)``.
    """
    while m != 0:
        j = row0 + np.int64(cttz64(m))
        m &= m - np.uint64(1)
        d = row_distance(q, db, w, j)
        enter = d < t_d
        if d == t_d:
            enter = t_id == NO_ID or ids[base + j] < t_id
        bd[cnt] = d
        bp[cnt] = base + j
        cnt += enter
        hist[d] += enter
        below += enter & (d < t_d)
        if below >= k:
            while below >= k:
                t_d -= 1
                below -= hist[t_d]
            t_id = NO_ID
    return cnt, t_d, t_id, below


@njit(cache=True, nogil=True)
def _scan_block(path, tile, queries, qmasks, q_lo, q_hi, db, planes, w, n_groups, hi_levels, ids,
                tile_min, base, k, n_bits, buf_d, buf_p, buf_n, buf_h, bound):
    """:func:`topk_scan` for queries ``[q_lo, q_hi)``."""
    n = db.shape[0] // w
    cap = buf_d.shape[1]
    masks = np.empty(tile // GROUP, dtype=np.uint64)
    cols = np.empty(tile * w if path == AVX512 and w > 1 else 0, dtype=np.uint64)
    for start in range(0, n, tile):
        stop = min(n, start + tile)
        tile_cols(path, db, w, start, stop, cols)
        for qi in range(q_lo, q_hi):
            b = bound[qi]
            t_d, t_id = b[0], b[1]
            t = min(t_d if tile_min[start // tile] < t_id else t_d - 1, n_bits)
            q = queries[qi]
            if t < 0 or tile_masks(path, q, qmasks[qi], db, cols, planes, w, n_groups, hi_levels,
                                   start, stop, t, masks) == 0:
                continue
            bd, bp, hist = buf_d[qi], buf_p[qi], buf_h[qi]
            cnt = buf_n[qi]
            below = _below(hist, t_d)
            for mw in range((stop - start + GROUP - 1) // GROUP):
                if masks[mw] == 0:
                    continue
                if cnt + GROUP > cap:
                    cnt = compact(k, n_bits, cnt, bd, bp, ids, b, hist)
                    t_d, t_id = b[0], b[1]
                    below = _below(hist, t_d)
                cnt, t_d, t_id, below = _take_hits(q, db, w, ids, base, start + mw * GROUP,
                                                   masks[mw], k, bd, bp, hist, cnt, t_d, t_id,
                                                   below)
            buf_n[qi] = cnt
            b[0], b[1] = t_d, t_id


@njit(cache=True, nogil=True, parallel=True)
def topk_scan(path, tile, qblock, queries, qmasks, db, planes, ids, tile_min, base, k, n_bits,
              buf_d, buf_p, buf_n, buf_h, bound):
    """Feed one segment of the database into every query's top-k state.

    Args:
        path: kernel path code (:func:`ahcl.index.simd.path_code`).
        tile: rows per tile (:func:`tile_rows`); qblock: queries per block (:func:`query_block`).
        queries: ``uint64 (nq, W)``; qmasks: ``uint64 (nq, planes)`` from
            :func:`ahcl.index.planes.query_masks` (``avx2``; else any ``(nq, 0)`` array).
        db: ``uint64 (n * W,)`` segment codes, flat rows; planes: their bit planes
            (:func:`ahcl.index.planes.to_planes`, ``avx2``; else an empty array).
        ids: ``int64 (N,)`` ids of all positions of the index (any order, unique).
        tile_min: ``int64 (ceil(n / tile),)`` smallest id of each tile (:func:`tile_min_ids`).
        base: global position of the segment's first row.
        k: number of neighbours, ``>= 1``.
        n_bits: code length (histogram size).
        buf_d, buf_p: ``int32 / int64 (nq, cap)`` candidate buffers, ``cap >= k + 64``.
        buf_n: ``int64 (nq,)`` buffer fill.
        buf_h: ``int64 (nq, n_bits + 2)`` histogram of the distances in each buffer; start at 0.
        bound: ``int64 (nq, 2)`` running bound ``(distance, id)``; start at ``(n_bits + 1, 0)``,
            or at ``(T, NO_ID)`` for a ``T`` known to be at least the k-th distance.
    """
    nq, w = queries.shape
    n_groups, hi_levels = _plane_geometry(qmasks.shape[1], n_bits)
    for blk in prange((nq + qblock - 1) // qblock):
        q_lo = blk * qblock
        _scan_block(path, tile, queries, qmasks, q_lo, min(nq, q_lo + qblock), db, planes, w,
                    n_groups, hi_levels, ids, tile_min, base, k, n_bits, buf_d, buf_p, buf_n,
                    buf_h, bound)


@njit(cache=True, nogil=True, parallel=True)
def sample_bounds(queries, db, n_blocks, rank, n_bits):
    """Per query, the ``rank``-th smallest distance (1-based) to a sample of ``64 n_blocks`` rows
    of ``db`` (blocks of 64 consecutive rows, evenly spaced): ``int64 (nq,)``.

    It bounds the k-th distance over all rows only if the sample has ``k`` rows within it; the
    caller uses it as a starting bound and checks that ``k`` candidates were found.
    """
    nq, w = queries.shape
    n = db.shape[0] // w
    stride = n // n_blocks
    out = np.empty(nq, dtype=np.int64)
    for qi in prange(nq):
        hist = np.zeros(n_bits + 1, dtype=np.int64)
        q = queries[qi]
        for b in range(n_blocks):
            for j in range(b * stride, b * stride + GROUP):
                hist[row_distance(q, db, w, j)] += 1
        t, seen = 0, hist[0]
        while seen < rank and t < n_bits:
            t += 1
            seen += hist[t]
        out[qi] = t
    return out


def tile_min_ids(ids: np.ndarray, tile: int) -> np.ndarray:
    """``int64 (ceil(n / tile),)``: the smallest id of each tile of ``tile`` rows."""
    if ids.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return np.minimum.reduceat(ids, np.arange(0, ids.shape[0], tile))


@njit(cache=True, nogil=True)
def _plane_geometry(planes, n_bits):
    """``(n_groups, hi_levels)`` of :func:`~ahcl.index.intrinsics.bs_mask256`."""
    length = 0
    while (1 << length) <= n_bits:
        length += 1
    return planes // BS_GROUP, max(0, length - 4)


@njit(cache=True, nogil=True)
def _range_block(path, tile, queries, qmasks, q_lo, q_hi, db, planes, n_bits, radius, base,
                 offsets, limits, out_d, out_p):
    """:func:`range_fill` for queries ``[q_lo, q_hi)``."""
    w = queries.shape[1]
    n = db.shape[0] // w
    n_groups, hi_levels = _plane_geometry(qmasks.shape[1], n_bits)
    t = min(radius, n_bits)
    masks = np.empty(tile // GROUP, dtype=np.uint64)
    cols = np.empty(tile * w if path == AVX512 and w > 1 else 0, dtype=np.uint64)
    for start in range(0, n, tile):
        stop = min(n, start + tile)
        tile_cols(path, db, w, start, stop, cols)
        for qi in range(q_lo, q_hi):
            q = queries[qi]
            if tile_masks(path, q, qmasks[qi], db, cols, planes, w, n_groups, hi_levels, start,
                          stop, t, masks) == 0:
                continue
            o, end = offsets[qi], limits[qi]
            for mw in range((stop - start + GROUP - 1) // GROUP):
                m = masks[mw]
                while m != 0:
                    j = start + mw * GROUP + np.int64(cttz64(m))
                    m &= m - np.uint64(1)
                    if o < end:
                        out_d[o] = row_distance(q, db, w, j)
                        out_p[o] = base + j
                    o += 1
            offsets[qi] = o


@njit(cache=True, nogil=True, parallel=True)
def range_fill(path, tile, qblock, queries, qmasks, db, planes, n_bits, radius, base, offsets,
               limits, out_d, out_p):
    """Rows within ``radius >= 0`` of each query: ``(distance, global position)`` written at
    ``offsets[qi]`` onwards, in scan order, while below ``limits[qi]``.

    ``offsets`` advance past every row found, written or not, so a first call with a small
    room per query both fills it and counts what did not fit. Other arguments as in
    :func:`topk_scan`.
    """
    nq = queries.shape[0]
    for blk in prange((nq + qblock - 1) // qblock):
        _range_block(path, tile, queries, qmasks, blk * qblock, min(nq, (blk + 1) * qblock), db,
                     planes, n_bits, radius, base, offsets, limits, out_d, out_p)


@njit(cache=True, nogil=True, parallel=True)
def sort_ranges(lims, n_bits, dist, pos, ids):
    """Sort each query's slice ``[lims[i], lims[i+1])`` of ``dist/pos/ids`` by (distance, id), in place."""
    nq = lims.shape[0] - 1
    for qi in prange(nq):
        lo, hi = lims[qi], lims[qi + 1]
        if hi - lo < 2:
            continue
        d, p, i = dist[lo:hi].copy(), pos[lo:hi].copy(), ids[lo:hi].copy()
        order = np.argsort(i, kind="mergesort")
        hist = np.zeros(n_bits + 2, dtype=np.int64)
        for e in range(hi - lo):
            hist[d[e] + 1] += 1
        for t in range(1, n_bits + 2):
            hist[t] += hist[t - 1]
        for e in order:
            r = lo + hist[d[e]]
            hist[d[e]] += 1
            dist[r] = d[e]
            pos[r] = p[e]
            ids[r] = i[e]
