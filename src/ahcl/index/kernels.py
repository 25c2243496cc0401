"""Compiled Hamming kernels (numba): distances, exact top-k and range search over uint64 words.

Codes reach the kernels as ``uint64 (n, W)`` words (``W = ceil(n_bits / 64)``, zero padded, so
padding bits never add distance). Every kernel is ``cache=True`` (compiled once per machine, then
loaded from ``__pycache__``) and ``nogil``; the query loops use ``prange``. Callers run them inside
:func:`thread_limit`, which scopes the thread count to the calling thread and the call.

Top-k selection (why no heap): a distance is at most ``n_bits``, so each query keeps a small
candidate buffer and a running bound. A candidate enters when ``d < bound_d`` or
``d == bound_d and id < bound_id``. When the buffer is full, a histogram of its distances gives the
k-th distance ``T``; entries above ``T`` go, and among the entries at ``T`` only the smallest ids are
kept (so ties are broken by id whatever the storage order), leaving exactly ``k`` entries and the new
bound ``(T, largest id kept at T)``. The scan computes a tile of distances in a vectorisable loop,
then rejects groups of 32 whose minimum is above the bound without looking at each element, so
after the first few thousand codes almost all the work is popcounts.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import cgutils, types
from numba.extending import intrinsic

TILE = 2048  # database rows per tile: 2048 x W words stay in L1/L2 while a query block reuses them
QBLOCK = 16  # queries that share a tile (cache reuse across queries)
GROUP = 32  # rows whose minimum distance is tested before looking at each row


@intrinsic
def _popcount64(typingctx, x):  # noqa: ARG001 (numba intrinsic signature)
    """``llvm.ctpop.i64``: one hardware popcount (vectorised to VPOPCNTQ where available)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # noqa: ARG001
        fnty = ir.FunctionType(ir.IntType(64), [ir.IntType(64)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.ctpop.i64")
        return builder.call(fn, args)

    return sig, codegen


# Held around kernel calls when numba's threading layer is "workqueue", which aborts the process
# when two Python threads launch parallel kernels at once (omp and tbb are thread-safe).
_SERIAL = threading.RLock()


def _layer_is_threadsafe() -> bool:
    numba.get_num_threads()  # starts numba's pool once (under numba's lock), choosing the layer
    return numba.threading_layer() != "workqueue"


@contextlib.contextmanager
def thread_limit(threads: int | None) -> Iterator[None]:
    """Run the enclosed kernels on ``threads`` threads, for the calling thread and this block only.

    ``numba.set_num_threads`` is thread-local (numba keeps the count per thread and each parallel
    launch reads the launching thread's value; a new thread starts at ``NUMBA_NUM_THREADS``), so
    the limit holds for this thread and this ``with`` block only: two threads can search with
    different limits at once, and nothing process-wide changes. ``threads`` is clamped to
    ``[1, NUMBA_NUM_THREADS]``; ``None`` keeps the calling thread's count (numba's default: all
    cores). Under numba's "workqueue" layer, which is not thread-safe, the blocks of different
    threads run one at a time.
    """
    with contextlib.ExitStack() as stack:
        if not _layer_is_threadsafe():
            stack.enter_context(_SERIAL)
        if threads is not None:
            previous = numba.get_num_threads()
            numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
            stack.callback(numba.set_num_threads, previous)
        yield


@njit(cache=True, nogil=True)
def _tile_distances(q, db, w, start, stop, out, t):
    """``out[j - start] = popcount(q ^ row j)`` for ``j in [start, stop)``; returns how many ``<= t``.

    The count comes free with the vectorised loop and lets the top-k scan skip a whole tile.

    ``db`` is the flat ``uint64 (n * w,)`` view of the rows: with a constant stride LLVM vectorises
    the loop (VPOPCNTQ on AVX-512), which it cannot do through a 2-D array of run-time stride.
    Indices run from 0 over slices so numba's negative-index wraparound folds away (it blocks
    vectorisation otherwise).
    """
    rows = db[start * w:stop * w]
    m = stop - start
    tt = np.uint16(min(t, 65535))
    hits = np.int64(0)
    if w == 1:
        q0 = q[0]
        for j in range(m):
            d = np.uint16(_popcount64(q0 ^ rows[j]))
            out[j] = d
            hits += d <= tt
    elif w == 2:
        q0, q1 = q[0], q[1]
        for j in range(m):
            d = np.uint16(_popcount64(q0 ^ rows[2 * j]) + _popcount64(q1 ^ rows[2 * j + 1]))
            out[j] = d
            hits += d <= tt
    elif w == 4:
        q0, q1, q2, q3 = q[0], q[1], q[2], q[3]
        for j in range(m):
            d = np.uint16(
                _popcount64(q0 ^ rows[4 * j]) + _popcount64(q1 ^ rows[4 * j + 1])
                + _popcount64(q2 ^ rows[4 * j + 2]) + _popcount64(q3 ^ rows[4 * j + 3]))
            out[j] = d
            hits += d <= tt
    else:
        for j in range(m):
            s = np.uint64(0)
            for c in range(w):
                s += _popcount64(q[c] ^ rows[w * j + c])
            d = np.uint16(s)
            out[j] = d
            hits += d <= tt
    return hits


@njit(cache=True, nogil=True, inline="always")
def _any_within(dist, lo, hi, t):
    """Whether any ``dist[lo:hi] <= t``: a branch-free, vectorised count of a small group."""
    c = np.uint16(0)
    tt = np.uint16(t)
    part = dist[lo:hi]
    for j in range(hi - lo):
        c += np.uint16(part[j] <= tt)
    return c != 0


@njit(cache=True, nogil=True, parallel=True)
def distances(queries, db):
    """All Hamming distances.

    Args:
        queries: ``uint64 (nq, W)``.
        db: ``uint64 (n * W,)`` flat rows.

    Returns:
        ``uint16 (nq, n)``.
    """
    nq, w = queries.shape
    n = db.shape[0] // w
    out = np.empty((nq, n), dtype=np.uint16)
    for i in prange(nq):
        _tile_distances(queries[i], db, w, 0, n, out[i], 0)
    return out


@njit(cache=True, nogil=True)
def _compact(k, n_bits, cnt, bd, bp, bi, out_bound):
    """Shrink one query's buffer (``bd`` distances, ``bp`` positions, ``bi`` ids) to ``k`` entries.

    Keeps the ``k`` smallest by (distance, id), in place, returns the new count and writes the new
    bound ``(T, largest id kept at T)`` into ``out_bound``.
    """
    hist = np.zeros(n_bits + 2, dtype=np.int64)
    for e in range(cnt):
        hist[bd[e]] += 1
    below = 0
    t = 0
    while below + hist[t] < k:
        below += hist[t]
        t += 1
    need = k - below  # entries to keep at distance t, the smallest ids among hist[t]
    tie_ids = np.empty(hist[t], dtype=np.int64)
    m = 0
    for e in range(cnt):
        if bd[e] == t:
            tie_ids[m] = bi[e]
            m += 1
    tie_ids.sort()
    id_t = tie_ids[need - 1]
    m = 0
    for e in range(cnt):
        if bd[e] < t or (bd[e] == t and bi[e] <= id_t):
            bd[m] = bd[e]
            bp[m] = bp[e]
            bi[m] = bi[e]
            m += 1
    out_bound[0] = t
    out_bound[1] = id_t
    return m


@njit(cache=True, nogil=True)
def _scan_block(queries, q_lo, q_hi, db, w, ids, base, k, n_bits, buf_d, buf_p, buf_i, buf_n,
                bound):
    """:func:`topk_scan` for queries ``[q_lo, q_hi)``; a plain function so LLVM vectorises it."""
    n = db.shape[0] // w
    cap = buf_d.shape[1]
    dist = np.empty(TILE, dtype=np.uint16)
    for start in range(0, n, TILE):
        stop = min(n, start + TILE)
        for qi in range(q_lo, q_hi):
            b = bound[qi]
            t_d = b[0]
            if _tile_distances(queries[qi], db, w, start, stop, dist, t_d) == 0:
                continue
            bd, bp, bi = buf_d[qi], buf_p[qi], buf_i[qi]
            cnt = buf_n[qi]
            t_id = b[1]
            for g in range(0, stop - start, GROUP):
                g_hi = min(stop - start, g + GROUP)
                if not _any_within(dist, g, g_hi, t_d):
                    continue
                if cnt + GROUP > cap:
                    cnt = _compact(k, n_bits, cnt, bd, bp, bi, b)
                    t_d = b[0]
                    t_id = b[1]
                for j in range(g, g_hi):
                    d = np.int64(dist[j])
                    if d < t_d or (d == t_d and ids[start + j] < t_id):
                        bd[cnt] = d
                        bp[cnt] = base + start + j
                        bi[cnt] = ids[start + j]
                        cnt += 1
            buf_n[qi] = cnt


@njit(cache=True, nogil=True, parallel=True)
def topk_scan(queries, db, ids, base, k, n_bits, buf_d, buf_p, buf_i, buf_n, bound):
    """Feed one segment of the database into every query's top-k state.

    Args:
        queries: ``uint64 (nq, W)``.
        db: ``uint64 (n * W,)`` segment codes, flat rows.
        ids: ``int64 (n,)`` segment ids (any order, unique across segments).
        base: global position of the segment's first row.
        k: number of neighbours, ``>= 1``.
        n_bits: code length (histogram size).
        buf_d, buf_p, buf_i: ``int32 / int64 / int64 (nq, cap)`` candidate buffers, ``cap >= k + GROUP``.
        buf_n: ``int64 (nq,)`` buffer fill.
        bound: ``int64 (nq, 2)`` running bound ``(distance, id)``; start at ``(n_bits + 1, 0)``.
    """
    nq, w = queries.shape
    n_blocks = (nq + QBLOCK - 1) // QBLOCK
    for blk in prange(n_blocks):
        q_lo = blk * QBLOCK
        _scan_block(queries, q_lo, min(nq, q_lo + QBLOCK), db, w, ids, base, k, n_bits,
                    buf_d, buf_p, buf_i, buf_n, bound)


@njit(cache=True, nogil=True)
def finish_one(k, n_bits, cnt, bd, bp, bi, bound, out_d, out_p, out_i):
    """Write one query's ``k`` best buffer entries to ``out_* (k,)`` in (distance, id) order.

    Padding (fewer than ``k`` candidates): distance ``n_bits + 1``, position and id ``-1``.
    """
    if cnt > k:
        cnt = _compact(k, n_bits, cnt, bd, bp, bi, bound)
    # sort by id, then a stable counting sort by distance: (distance, id) order
    order = np.argsort(bi[:cnt], kind="mergesort")
    hist = np.zeros(n_bits + 2, dtype=np.int64)
    for e in range(cnt):
        hist[bd[e] + 1] += 1
    for t in range(1, n_bits + 2):
        hist[t] += hist[t - 1]
    for e in order:
        r = hist[bd[e]]
        hist[bd[e]] += 1
        out_d[r] = bd[e]
        out_p[r] = bp[e]
        out_i[r] = bi[e]
    for r in range(cnt, k):
        out_d[r] = n_bits + 1
        out_p[r] = -1
        out_i[r] = -1


@njit(cache=True, nogil=True, parallel=True)
def topk_finish(k, n_bits, buf_d, buf_p, buf_i, buf_n, bound, out_d, out_p, out_i):
    """:func:`finish_one` for every query: ``out_* (nq, k)``."""
    for qi in prange(buf_d.shape[0]):
        finish_one(k, n_bits, buf_n[qi], buf_d[qi], buf_p[qi], buf_i[qi], bound[qi],
                   out_d[qi], out_p[qi], out_i[qi])


@njit(cache=True, nogil=True, parallel=True)
def range_count(queries, db, radius):
    """``int64 (nq,)``: how many rows of ``db`` lie within ``radius`` of each query."""
    nq, w = queries.shape
    n = db.shape[0] // w
    counts = np.zeros(nq, dtype=np.int64)
    for qi in prange(nq):
        dist = np.empty(TILE, dtype=np.uint16)
        c = 0
        for start in range(0, n, TILE):
            stop = min(n, start + TILE)
            c += _tile_distances(queries[qi], db, w, start, stop, dist, radius)
        counts[qi] = c
    return counts


@njit(cache=True, nogil=True, parallel=True)
def range_fill(queries, db, radius, base, offsets, out_d, out_p):
    """Write the (distance, position) of rows within ``radius`` at ``offsets[qi]`` onwards.

    ``offsets``: ``int64 (nq,)`` write cursors (advanced in place), scan order within each query.
    """
    nq, w = queries.shape
    n = db.shape[0] // w
    for qi in prange(nq):
        dist = np.empty(TILE, dtype=np.uint16)
        o = offsets[qi]
        for start in range(0, n, TILE):
            stop = min(n, start + TILE)
            if _tile_distances(queries[qi], db, w, start, stop, dist, radius) == 0:
                continue
            for j in range(stop - start):
                if dist[j] <= radius:
                    out_d[o] = dist[j]
                    out_p[o] = base + start + j
                    o += 1
        offsets[qi] = o


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
