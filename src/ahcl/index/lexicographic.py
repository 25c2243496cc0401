"""Compiled kernels of a split index: exact search by (semantic distance, instance distance, id).

A split code is ``n_bits`` bits: the first ``semantic_bits`` (a class-level code), then
``instance_bits = n_bits - semantic_bits`` (an instance-level code). ``semantic_bits`` is a
multiple of 8, so in the kernels' little-endian ``uint64`` rows (zero padded to ``W`` words, as in
:mod:`ahcl.index.kernels`) a per-word mask ``ms`` (:func:`split_masks`) picks the semantic bits.
With ``S = popcount((q ^ x) & ms)`` (semantic distance), ``D = popcount(q ^ x)`` (whole distance,
so ``D - S`` is the instance distance) and ``R = 2**shift + 1`` the least such number above
``instance_bits`` (:func:`key_shift`), the integer

    key = R * S + (D - S) = (S << shift) + D

orders rows exactly as (semantic distance, instance distance) does, so a search is a top-k by
``(key, id)``, and the distances are ``key // R`` and ``key % R``. ``R = 2**shift + 1`` rather
than ``instance_bits + 1`` makes the key a shift and an add of two popcounts, with no mask for
the instance bits: a word of a code costs one popcount, the one word that holds both parts (when
``semantic_bits`` is not a multiple of 64) two.

Scan: as in :mod:`ahcl.index.kernels`, the database goes by in tiles shared by a block of queries
while the tile is in cache (codes wider than one word copied word-major once per block,
:func:`ahcl.index.kernels.tile_cols`). For each query, :func:`tile_masks` marks the rows whose
key is within the query's running bound, one bit per row: :func:`key_mask64` computes the keys of
64 rows in ``<8 x i64>`` vectors (``llvm.ctpop``: VPOPCNTQ with AVX-512, a nibble lookup with
AVX2) and compares them. Only marked rows are looked at again (a scalar key, the exact
``(key, id)`` test, the candidate buffer), so once the bound has settled a tile costs the mask
pass alone. (LLVM's loop vectoriser, given the same keys as plain loops over a tile, targets
256-bit vectors on CPUs tuned for them, and a separate pass testing the stored keys cost as much
as the keys: 3 to 5 times this kernel's time.)

Selection: a candidate buffer of keys and global positions per query and a running bound
``(key, id)``, only tightening; a full buffer is compacted to its ``k`` best (:func:`compact_keys`:
a partition finds the k-th key, ties at it broken by id with
:func:`ahcl.index.selection.kth_tie_id`). There are ``R * (semantic_bits + 1)`` keys, far more
than distances, so no histogram per query as :mod:`ahcl.index.selection` keeps; a large ``k``
starts from a sampled bound instead (:func:`sample_bounds`, as the plain scan). Results are
written by an id sort and two stable counting sorts (instance, then semantic distance).

Every kernel is ``cache=True`` and ``nogil``; query loops use ``prange``; callers run them inside
:func:`ahcl.index.kernels.thread_limit`. Paths (:mod:`ahcl.index.simd`): ``popcnt`` computes
keys row by row with scalar POPCNT; ``avx512`` runs :func:`key_mask64`; ``avx2`` counts both
distances bit-sliced over the plain path's bit planes (:func:`ahcl.index.planes.split_planes`:
the same planes when ``semantic_bits`` is a multiple of 16) with
:func:`ahcl.index.intrinsics.bs_key_mask256`, which compares ``(S, I)`` with
``(t // R, t % R)`` lexicographically (the same test as ``key <= t``, as ``I < R``), so a row
costs the logic operations of its planes and no popcount (a vector popcount is a nibble lookup
on AVX2).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ahcl.index.intrinsics import (BS_ROWS, I32, I64, _ctpop, _data, _splat, bs_key_mask256,
                                   cttz64, popcnt_scalar)
from ahcl.index.kernels import GROUP, clear_past, tile_cols
from ahcl.index.planes import split_geometry
from ahcl.index.selection import kth_tie_id
from ahcl.index.simd import AVX2, AVX512, POPCNT


def split_masks(n_bits: int, semantic_bits: int) -> np.ndarray:
    """``uint64 (W,)``: word masks of the semantic bits."""
    sem = np.zeros(8 * ((n_bits + 63) // 64), dtype=np.uint8)
    sem[:semantic_bits // 8] = 0xFF
    return sem.view("<u8").astype(np.uint64)


def word_spans(semantic_bits: int) -> np.ndarray:
    """``int64 (2,)`` ``(a, b)``: words ``[0, a)`` hold semantic bits only, ``[a, b)`` (at most
    one word) semantic and instance bits, the rest instance bits only."""
    return np.array([semantic_bits // 64, -(-semantic_bits // 64)], dtype=np.int64)


def key_shift(n_bits: int, semantic_bits: int) -> int:
    """``log2 (R - 1)``: ``R = 2**shift + 1``, the least such number above ``instance_bits``."""
    return int(n_bits - semantic_bits - 1).bit_length()


def max_key(n_bits: int, semantic_bits: int) -> int:
    """The largest key of a split index (both distances at their maximum)."""
    radix = (1 << key_shift(n_bits, semantic_bits)) + 1
    return semantic_bits * radix + n_bits - semantic_bits


def _make_key_mask64(single: bool):
    """:func:`key_mask64`, or with ``single`` its one-word form (``W == 1``: the word holds
    both parts), which needs no word loops and no accumulators."""

    @intrinsic
    def key_mask64(typingctx, cols, stride, r, q, ms, a, b, shift, t):  # noqa: ARG001
        """Mask of the 64 rows ``r .. r + 63`` whose key is at most ``t``.

        Like :func:`ahcl.index.intrinsics.vp_mask64` (word ``c`` of row ``i`` at
        ``cols[c * stride + i]``, 8 rows per ``<8 x i64>`` vector), counting per row the
        differing semantic bits ``S`` (``ms``: ``uint64 (W,)`` masks) and all differing bits
        ``D``: words ``[0, a)`` hold semantic bits only, ``[a, b)`` both, ``[b, W)`` instance
        bits only; the key is ``(S << shift) + D``.
        """
        sig = types.uint64(cols, types.intp, types.intp, q, ms, types.intp, types.intp,
                           types.int64, types.int64)

        def codegen(context, builder, signature, args):
            cols_a, stride, r, q_a, ms_a, a, b, shift, t = args
            c_data = _data(context, builder, signature.args[0], cols_a)
            q_data = _data(context, builder, signature.args[3], q_a)
            m_data = _data(context, builder, signature.args[4], ms_a)
            vt = ir.VectorType(I64, 8)

            def rows(c, part):
                at = builder.gep(c_data, [builder.add(builder.mul(c, stride), r)])
                ptr = builder.gep(at, [ir.Constant(I64, 8 * part)])
                qc = _splat(builder, builder.load(builder.gep(q_data, [c])), 8)
                return builder.xor(builder.load(builder.bitcast(ptr, vt.as_pointer()), align=8), qc)

            def semantic(c, x):
                return _ctpop(builder, builder.and_(
                    x, _splat(builder, builder.load(builder.gep(m_data, [c])), 8)))

            if single:
                zero = ir.Constant(I64, 0)
                xs = [rows(zero, part) for part in range(8)]
                sem = [semantic(zero, x) for x in xs]
                dist = [_ctpop(builder, x) for x in xs]
            else:
                acc_s = [cgutils.alloca_once_value(builder, ir.Constant(vt, [0] * 8))
                         for _ in range(8)]
                acc_d = [cgutils.alloca_once_value(builder, ir.Constant(vt, [0] * 8))
                         for _ in range(8)]

                def add(acc, value):
                    builder.store(builder.add(builder.load(acc), value), acc)

                def words(lo, hi, kind):
                    with cgutils.for_range_slice(builder, lo, hi, ir.Constant(I64, 1)) as (c, _):
                        for part in range(8):
                            x = rows(c, part)
                            p = _ctpop(builder, x)
                            add(acc_d[part], p)
                            if kind != "inst":
                                add(acc_s[part], p if kind == "sem" else semantic(c, x))

                w = builder.extract_value(context.make_array(signature.args[3])(
                    context, builder, q_a).shape, 0)
                words(ir.Constant(I64, 0), a, "sem")
                words(a, b, "both")
                words(b, w, "inst")
                sem = [builder.load(acc) for acc in acc_s]
                dist = [builder.load(acc) for acc in acc_d]
            limit, sh = _splat(builder, t, 8), _splat(builder, shift, 8)
            parts = [builder.icmp_signed("<=", builder.add(builder.shl(s_, sh), d), limit)
                     for s_, d in zip(sem, dist)]
            while len(parts) > 1:  # concatenate the <8 x i1> compares into one <64 x i1>
                idx = ir.Constant(ir.VectorType(I32, 2 * parts[0].type.count),
                                  list(range(2 * parts[0].type.count)))
                parts = [builder.shuffle_vector(x, y, idx)
                         for x, y in zip(parts[::2], parts[1::2])]
            return builder.bitcast(parts[0], I64)

        return sig, codegen

    return key_mask64


key_mask64 = _make_key_mask64(False)
key_mask64_1 = _make_key_mask64(True)


@njit(cache=True, nogil=True, inline="always")
def row_key(q, ms, shift, db, w, j):
    """Key of row ``j`` of the flat rows ``db`` (scalar POPCNT)."""
    s = np.uint64(0)
    d = np.uint64(0)
    for c in range(w):
        x = q[c] ^ db[j * w + c]
        s += popcnt_scalar(x & ms[c])
        d += popcnt_scalar(x)
    return (np.int64(s) << shift) + np.int64(d)


@njit(cache=True, nogil=True)
def _masks_rows(q, masks, shift, db, w, start, stop, t, out):
    """Masks of rows ``[start, stop)`` one row at a time (the ``popcnt`` path, and the rows of
    a tile that fill no group of 64). Returns the OR of the mask words."""
    any_ = np.uint64(0)
    for g in range(start, stop, GROUP):
        m = np.uint64(0)
        for j in range(g, min(stop, g + GROUP)):
            m |= np.uint64(row_key(q, masks, shift, db, w, j) <= t) << np.uint64(j - g)
        out[(g - start) // GROUP] = m
        any_ |= m
    return any_


@njit(cache=True, nogil=True, inline="always")
def _masks_planes(qmask, planes, geom, start, stop, t, out):
    """``avx2``: blocks of 256 rows by :func:`~ahcl.index.intrinsics.bs_key_mask256` (bit
    planes, two bit-sliced counts); ``start`` is a multiple of 256. Returns the OR of the mask
    words."""
    s_groups, i_groups, s_hi, i_hi, radix, semantic_bits, instance_bits = (
        geom[0], geom[1], geom[2], geom[3], geom[4], geom[5], geom[6])
    # key <= t  <=>  (S, I) <= (t // R, t % R) in lexicographic order, as I < R; both parts
    # clamped to the largest value a count can take plus one (the counters' range)
    ts = min(t // radix, semantic_bits + 1)
    ti = min(t - (t // radix) * radix, instance_bits)
    any_ = np.uint64(0)
    for b in range(0, stop - start, BS_ROWS):
        any_ |= bs_key_mask256(planes, (start + b) // BS_ROWS, qmask, s_groups, i_groups, s_hi,
                               i_hi, ts, ti, out, b // GROUP)
    return clear_past(out, stop - start, any_)


@njit(cache=True, nogil=True)
def tile_masks(path, q, qmask, masks, spans, shift, db, cols, planes, geom, w, start, stop, t,
               out):
    """Bit masks of the rows ``[start, stop)`` (at most one tile) with a key at most ``t``: bit
    ``b`` of ``out[i]`` is row ``start + 64 i + b``. Returns the OR of the mask words.

    ``spans``: ``(a, b)`` of :func:`key_mask64`; ``cols``: the tile word-major
    (:func:`ahcl.index.kernels.tile_cols` on the ``avx512`` path) when ``w > 1``; ``qmask``,
    ``planes``, ``geom``: the query's plane masks, the split bit planes and :func:`plane_geometry`
    (``avx2``; else unused). ``popcnt`` counts row by row, ``avx2`` by bit planes, ``avx512`` by
    :func:`key_mask64`.
    """
    if path == POPCNT:
        return _masks_rows(q, masks, shift, db, w, start, stop, t, out)
    if path == AVX2:
        return _masks_planes(qmask, planes, geom, start, stop, t, out)
    full = start + (stop - start) // GROUP * GROUP
    any_ = np.uint64(0)
    for g in range(start, full, GROUP):
        if w == 1:
            m = key_mask64_1(db, 0, g, q, masks, spans[0], spans[1], shift, t)
        else:
            m = key_mask64(cols, cols.shape[0] // w, g - start, q, masks, spans[0], spans[1],
                           shift, t)
        out[(g - start) // GROUP] = m
        any_ |= m
    if full < stop:
        any_ |= _masks_rows(q, masks, shift, db, w, full, stop, t, out[(full - start) // GROUP:])
    return any_


def plane_geometry(n_bits: int, semantic_bits: int) -> np.ndarray:
    """``int64 (7,)`` what the ``avx2`` mask reads: :func:`ahcl.index.planes.split_geometry`,
    the radix ``R`` of the key, ``semantic_bits`` and ``instance_bits``."""
    return np.array(split_geometry(n_bits, semantic_bits)
                    + ((1 << key_shift(n_bits, semantic_bits)) + 1, semantic_bits,
                       n_bits - semantic_bits), dtype=np.int64)


@njit(cache=True, nogil=True)
def compact_keys(k, cnt, bk, bp, ids, out_bound):
    """Shrink one query's buffer to its ``k`` best entries by (key, id), in place.

    Args:
        bk, bp: ``int64 (cap,)`` keys and global positions; ``cnt > k`` of them used.
        ids: ``int64 (N,)`` ids of all positions.
        out_bound: ``int64 (2,)``, gets the new bound ``(T, largest id kept at T)``.

    Returns:
        The new count, ``k``.
    """
    t = np.partition(bk[:cnt], k - 1)[k - 1]
    below = 0
    ties = 0
    for e in range(cnt):
        below += bk[e] < t
        ties += bk[e] == t
    id_t = kth_tie_id(t, k - below, ties, cnt, bk, bp, ids)
    m = 0
    for e in range(cnt):  # always copy, advance when kept (an id read only at a tie)
        key, p = bk[e], bp[e]
        bk[m], bp[m] = key, p
        m += key < t or (key == t and ids[p] <= id_t)
    out_bound[0] = t
    out_bound[1] = id_t
    return m


@njit(cache=True, nogil=True, inline="always")
def _take_hits(q, masks, shift, db, w, ids, base, row0, m, bk, bp, cnt, t_key, t_id):
    """Append the rows of one mask word (row ``row0 + b`` of the segment for bit ``b``) that
    enter under the bound ``(t_key, t_id)``: always written, counted only when they enter; an id
    is read only at a tie. Returns the new count."""
    while m != 0:
        j = row0 + np.int64(cttz64(m))
        m &= m - np.uint64(1)
        key = row_key(q, masks, shift, db, w, j)
        enter = key < t_key
        if key == t_key:
            enter = ids[base + j] < t_id
        bk[cnt] = key
        bp[cnt] = base + j
        cnt += enter
    return cnt


@njit(cache=True, nogil=True, inline="always")
def _scratch(path, tile, w):
    """A block's mask words and word-major tile (:func:`tile_masks`)."""
    return np.empty(tile // GROUP, dtype=np.uint64), np.empty(
        tile * w if w > 1 and path == AVX512 else 0, dtype=np.uint64)


@njit(cache=True, nogil=True)
def _scan_block(path, tile, queries, masks, spans, shift, qmasks, planes, geom, q_lo, q_hi, db,
                ids, tile_min, base, k,
                buf_k, buf_p, buf_n, bound):
    """:func:`topk_scan` for queries ``[q_lo, q_hi)``."""
    w = queries.shape[1]
    cap = buf_k.shape[1]
    out, cols = _scratch(path, tile, w)
    for start in range(0, db.shape[0] // w, tile):
        stop = min(db.shape[0] // w, start + tile)
        tile_cols(path, db, w, start, stop, cols)
        for qi in range(q_lo, q_hi):
            b = bound[qi]
            t_key, t_id = b[0], b[1]
            # rows of a tile whose ids all exceed the bound's id cannot enter at its key
            t = t_key if tile_min[start // tile] < t_id else t_key - 1
            q = queries[qi]
            if t < 0 or tile_masks(path, q, qmasks[qi], masks, spans, shift, db, cols, planes, geom, w,
                                   start, stop, t,
                                   out) == 0:
                continue
            bk, bp = buf_k[qi], buf_p[qi]
            cnt = buf_n[qi]
            for mw in range((stop - start + GROUP - 1) // GROUP):
                if out[mw] == 0:
                    continue
                if cnt + GROUP > cap:
                    cnt = compact_keys(k, cnt, bk, bp, ids, b)
                    t_key, t_id = b[0], b[1]
                cnt = _take_hits(q, masks, shift, db, w, ids, base, start + mw * GROUP, out[mw],
                                 bk, bp, cnt, t_key, t_id)
            buf_n[qi] = cnt


@njit(cache=True, nogil=True, parallel=True)
def topk_scan(path, tile, qblock, queries, masks, spans, shift, qmasks, planes, geom, db, ids,
              tile_min, base, k,
              buf_k, buf_p, buf_n, bound):
    """Feed one segment of the database into every query's top-k state by (key, id).

    Args:
        path: kernel path code (:func:`ahcl.index.simd.path_code`), see :func:`tile_masks`.
        tile: rows per tile (:func:`ahcl.index.kernels.tile_rows`); qblock: queries per block
            (:func:`ahcl.index.kernels.query_block`).
        queries: ``uint64 (nq, W)``; masks: ``uint64 (W,)`` from :func:`split_masks`;
            spans: :func:`word_spans`; shift: :func:`key_shift`.
        qmasks, planes, geom: ``avx2`` only (else any ``(nq, 0)``, empty and ``(7,)`` arrays):
            the queries' plane masks and the segment's split bit planes
            (:func:`ahcl.index.planes.split_query_masks`, :func:`~ahcl.index.planes.split_planes`),
            and :func:`plane_geometry`.
        db: ``uint64 (n * W,)`` segment codes, flat rows.
        ids: ``int64 (N,)`` ids of all positions of the index (any order, unique).
        tile_min: ``int64 (ceil(n / tile),)`` smallest id of each tile
            (:func:`ahcl.index.kernels.tile_min_ids`).
        base: global position of the segment's first row.
        k: number of neighbours, ``>= 1``.
        buf_k, buf_p: ``int64 (nq, cap)`` candidate keys and positions, ``cap >= k + 64``.
        buf_n: ``int64 (nq,)`` buffer fill; start at 0.
        bound: ``int64 (nq, 2)`` running bound ``(key, id)``; start at ``(max_key + 1, 0)``.
    """
    nq = queries.shape[0]
    for blk in prange((nq + qblock - 1) // qblock):
        q_lo = blk * qblock
        _scan_block(path, tile, queries, masks, spans, shift, qmasks, planes, geom, q_lo,
                    min(nq, q_lo + qblock), db,
                    ids, tile_min, base, k, buf_k, buf_p, buf_n, bound)


@njit(cache=True, nogil=True, parallel=True)
def sample_bounds(queries, masks, shift, db, n_blocks, rank):
    """Per query, the ``rank``-th smallest key (1-based) of a sample of ``64 n_blocks`` rows of
    ``db`` (blocks of 64 consecutive rows, evenly spaced): ``int64 (nq,)``, a starting bound
    that the caller checks (as :func:`ahcl.index.kernels.sample_bounds`)."""
    nq, w = queries.shape
    stride = db.shape[0] // w // n_blocks
    out = np.empty(nq, dtype=np.int64)
    for qi in prange(nq):
        keys = np.empty(n_blocks * GROUP, dtype=np.int64)
        q = queries[qi]
        for b in range(n_blocks):
            for j in range(GROUP):
                keys[b * GROUP + j] = row_key(q, masks, shift, db, w, b * stride + j)
        out[qi] = np.partition(keys, rank - 1)[rank - 1]
    return out


@njit(cache=True, nogil=True, inline="always")
def _stable_by(order, digit, n_bins):
    """``order`` re-ordered by ``digit[order]`` (``0 <= digit < n_bins``), stably: a counting
    sort."""
    start = np.zeros(n_bins + 1, dtype=np.int64)
    for e in range(order.shape[0]):
        start[digit[order[e]] + 1] += 1
    for b in range(n_bins):
        start[b + 1] += start[b]
    out = np.empty_like(order)
    for e in range(order.shape[0]):
        d = digit[order[e]]
        out[start[d]] = order[e]
        start[d] += 1
    return out


@njit(cache=True, nogil=True, inline="always")
def _write_sorted(keys, pos, got, shift, semantic_bits, out_s, out_i, out_p, out_id):
    """Write entries ``(keys, pos, got ids)`` to the outputs in (key, id) order: an id sort
    (none when the ids come ascending, as a scan of ids in storage order gives them), then
    stable counting sorts by the instance and the semantic distance (least significant digit
    first)."""
    radix = (np.int64(1) << shift) + 1
    sem = keys // radix
    inst = keys - sem * radix
    ascending = True
    for e in range(1, got.shape[0]):
        ascending &= got[e - 1] < got[e]
    order = np.arange(got.shape[0]) if ascending else np.argsort(got)
    order = _stable_by(_stable_by(order, inst, radix), sem, semantic_bits + 1)
    for e in range(order.shape[0]):
        o = order[e]
        out_s[e] = sem[o]
        out_i[e] = inst[o]
        out_p[e] = pos[o]
        out_id[e] = got[o]


@njit(cache=True, nogil=True, parallel=True)
def topk_finish(k, shift, semantic_bits, instance_bits, buf_k, buf_p, buf_n, ids, bound, out_s,
                out_i, out_p, out_id):
    """Each query's ``k`` best buffer entries in (key, id) order: semantic and instance
    distances, positions and ids into ``out_* (nq, k)`` (``int32, int32, int64, int64``).

    Padding (fewer than ``k`` candidates): ``semantic_bits + 1``, ``instance_bits + 1``,
    position and id ``-1``.
    """
    for qi in prange(buf_k.shape[0]):
        cnt = buf_n[qi]
        bk, bp = buf_k[qi], buf_p[qi]
        if cnt > k:
            cnt = compact_keys(k, cnt, bk, bp, ids, bound[qi])
        got = np.empty(cnt, dtype=np.int64)
        for e in range(cnt):
            got[e] = ids[bp[e]]
        _write_sorted(bk[:cnt], bp[:cnt], got, shift, semantic_bits, out_s[qi], out_i[qi],
                      out_p[qi], out_id[qi])
        for e in range(cnt, k):
            out_s[qi, e] = semantic_bits + 1
            out_i[qi, e] = instance_bits + 1
            out_p[qi, e] = -1
            out_id[qi, e] = -1


@njit(cache=True, nogil=True, inline="always")
def _range_hits(q, masks, shift, db, w, base, start, out, o, end, out_k, out_p):
    """Write the ``(key, global position)`` of the marked rows of one tile (``out``: its mask
    words) at ``o`` onwards while below ``end``; returns ``o`` past every marked row."""
    for mw in range(out.shape[0]):
        m = out[mw]
        while m != 0:
            j = start + mw * GROUP + np.int64(cttz64(m))
            m &= m - np.uint64(1)
            if o < end:
                out_k[o], out_p[o] = row_key(q, masks, shift, db, w, j), base + j
            o += 1
    return o


@njit(cache=True, nogil=True)
def _range_block(path, tile, queries, masks, spans, shift, qmasks, planes, geom, q_lo, q_hi, db,
                 t, base, offsets,
                 limits, out_k, out_p):
    """:func:`range_fill` for queries ``[q_lo, q_hi)``."""
    w = queries.shape[1]
    out, cols = _scratch(path, tile, w)
    for start in range(0, db.shape[0] // w, tile):
        stop = min(db.shape[0] // w, start + tile)
        tile_cols(path, db, w, start, stop, cols)
        marked = out[:(stop - start + GROUP - 1) // GROUP]
        for qi in range(q_lo, q_hi):
            q = queries[qi]
            if tile_masks(path, q, qmasks[qi], masks, spans, shift, db, cols, planes, geom, w, start,
                          stop, t, out) != 0:
                offsets[qi] = _range_hits(q, masks, shift, db, w, base, start, marked,
                                          offsets[qi], limits[qi], out_k, out_p)


@njit(cache=True, nogil=True, parallel=True)
def range_fill(path, tile, qblock, queries, masks, spans, shift, qmasks, planes, geom, db, radius,
               base, offsets,
               limits, out_k, out_p):
    """Rows within semantic distance ``radius >= 0`` of each query: ``(key, global position)``
    written at ``offsets[qi]`` onwards, in scan order, while below ``limits[qi]``.

    ``offsets`` advance past every row found, written or not (as in
    :func:`ahcl.index.kernels.range_fill`). Other arguments as in :func:`topk_scan`.
    """
    nq = queries.shape[0]
    t = (radius + 1) * ((1 << shift) + 1) - 1  # semantic distance <= radius, any instance one
    for blk in prange((nq + qblock - 1) // qblock):
        _range_block(path, tile, queries, masks, spans, shift, qmasks, planes, geom, blk * qblock,
                     min(nq, (blk + 1) * qblock), db, t, base, offsets, limits, out_k, out_p)


@njit(cache=True, nogil=True, parallel=True)
def sort_ranges(lims, shift, semantic_bits, keys, pos, ids, out_s, out_i):
    """Sort each query's slice ``[lims[i], lims[i+1])`` of ``keys/pos/ids`` by (key, id) in
    place, and write the semantic and instance distances ``out_s, out_i`` (``int32``)."""
    nq = lims.shape[0] - 1
    for qi in prange(nq):
        lo, hi = lims[qi], lims[qi + 1]
        _write_sorted(keys[lo:hi], pos[lo:hi].copy(), ids[lo:hi].copy(), shift, semantic_bits,
                      out_s[lo:hi], out_i[lo:hi], pos[lo:hi], ids[lo:hi])
