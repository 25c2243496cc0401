"""Per-query retrieval statistics by counting, not sorting (numba).

For one query the whole database is ranked by (Hamming distance, database index). With
distances in ``0..n_bits`` no sort is needed: one pass in database order keeps ``seen[d]``, the
items met so far at distance ``d``, and ``seen_rel[d]``, the relevant ones. When it meets a
relevant item at distance ``d`` these counts are its rank inside its distance bin, among all
items and among the relevant ones, so after the pass (which also leaves the bins' totals)

    rank         = items below d      + seen[d]       (0-based, stable order)
    relevant_no. = relevant below d   + seen_rel[d]   (0-based)
    precision    = (relevant_no. + 1) / (rank + 1)

gives every relevant item's precision, hence AP, AP@k, P@k and R@k, while the bins' totals
give the tie-aware AP (a closed form per bin), the PR curve and the precision within a radius.
The pass touches each item once; everything after it works on the relevant items and the
``n_bits + 1`` bins.

**Split codes** (``semantic_bits`` class-level bits first, then ``instance_bits`` instance-level
bits) are ranked by (semantic distance, instance distance, database index). With
``R = instance_bits + 1`` the integer key ``R * d_sem + d_inst`` (``= d + instance_bits * d_sem``,
``d`` the whole distance; :func:`row_key`) has that order and takes ``(semantic_bits + 1) * R``
values, so the same pass runs over key bins instead of distance bins: ranks, AP, AP@k, P@k and
R@k follow the stable order (key, index), and the tie-aware AP treats items with equal keys as
tied. A semantic distance ``s`` is the run of key bins ``s * R .. s * R + R - 1``, so the PR
curve and the precision within a radius (on the semantic distance) read the bins' cumulative
totals at ``(s + 1) * R``. Plain codes are the case ``R = 1`` (the key is the distance) and keep
the popcount-only pass (:func:`_distances`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ahcl.index.intrinsics import popcount64


@njit(cache=True, nogil=True)
def _distances(q, db, w, out):
    """``out[j] = popcount(q ^ row j)`` for the flat ``uint64 (n * w,)`` rows ``db``.

    Loops per word count, over slices from 0, so LLVM vectorises them (a runtime word count
    or negative-index wraparound in the loop blocks that).
    """
    n = out.shape[0]
    if w == 1:
        q0 = q[0]
        for j in range(n):
            out[j] = popcount64(q0 ^ db[j])
    elif w == 2:
        q0, q1 = q[0], q[1]
        for j in range(n):
            out[j] = popcount64(q0 ^ db[2 * j]) + popcount64(q1 ^ db[2 * j + 1])
    else:
        for j in range(n):
            row = db[j * w:j * w + w]
            s = np.uint64(0)
            for c in range(w):
                s += popcount64(q[c] ^ row[c])
            out[j] = s


@njit(cache=True, nogil=True, inline="always")
def row_key(q, db, j, w, ms, scale):
    """Key of row ``j`` of the flat ``uint64 (n * w,)`` rows ``db``: ``d + scale * d_sem``, with
    ``d = popcount(q ^ row)``, ``d_sem`` the same within the semantic masks ``ms`` (``uint64
    (w,)``) and ``scale = instance_bits`` (``uint64``); with ``scale == 0`` (plain codes) the
    distance. Returns ``int64``."""
    d = np.uint64(0)
    sem = np.uint64(0)
    for c in range(w):
        x = q[c] ^ db[j * w + c]
        d += popcount64(x)
        sem += popcount64(x & ms[c])
    return np.int64(d + scale * sem)


@njit(cache=True, nogil=True)
def _keys(q, db, w, ms, scale, out):
    """``out[j] = row_key(q, db, j, w, ms, scale)`` for every row (split codes)."""
    n = out.shape[0]
    if w == 1:
        q0, m0 = q[0], ms[0]
        for j in range(n):
            x = q0 ^ db[j]
            out[j] = popcount64(x) + scale * popcount64(x & m0)
    else:
        for j in range(n):
            out[j] = row_key(q, db, j, w, ms, scale)


@njit(cache=True, nogil=True)
def _one_query(i, dist, relevant, ks, harmonic, levels, radix, out_ap, out_tie, out_ap_at,
               out_hits, out_recall, out_pr_p, out_pr_r, rec_d, rec_seen, rec_rel, seen, seen_rel):
    """Counting pass and statistics of query ``i`` (see the module docstring); writes row ``i``
    of the outputs. ``dist``: the rows' keys (distances for plain codes) in ``0..levels - 1``;
    ``radix``: key bins per PR-curve level (1 for plain codes). ``relevant``: ``uint8 (n,)``."""
    n = dist.shape[0]
    seen[:] = 0
    seen_rel[:] = 0
    r = 0
    for j in range(n):
        d = dist[j]
        if relevant[j]:
            rec_d[r] = d
            rec_seen[r] = seen[d]
            rec_rel[r] = seen_rel[d]
            seen_rel[d] += 1
            r += 1
        seen[d] += 1
    # seen / seen_rel now hold each bin's totals; turn them into "below d" counts
    below = np.empty(levels + 1, dtype=np.int64)
    rel_below = np.empty(levels + 1, dtype=np.int64)
    below[0] = rel_below[0] = 0
    for d in range(levels):
        below[d + 1] = below[d] + seen[d]
        rel_below[d + 1] = rel_below[d] + seen_rel[d]
    ap = 0.0
    nk = ks.shape[0]
    for e in range(r):
        d = rec_d[e]
        rank = below[d] + rec_seen[e]
        prec = (rel_below[d] + rec_rel[e] + 1) / (rank + 1)
        ap += prec
        for x in range(nk):
            if rank < ks[x]:
                out_hits[i, x] += 1
                out_ap_at[i, x] += prec
    safe = max(r, 1)
    out_ap[i] = ap / safe
    for x in range(nk):
        h = out_hits[i, x]
        out_recall[i, x] = h / safe
        out_ap_at[i, x] = out_ap_at[i, x] / h if h > 0 else 0.0
    for lv in range(out_pr_p.shape[1]):  # PR level lv: every key bin below (lv + 1) * radix
        top = (lv + 1) * radix
        out_pr_r[i, lv] = rel_below[top] / safe
        total = below[top]
        out_pr_p[i, lv] = rel_below[top] / total if total > 0 else 0.0
    tie = 0.0
    for d in range(levels):
        t, rr = seen[d], seen_rel[d]
        if rr == 0:
            continue
        # E[sum of precisions at the bin's relevant items] over random orders within the bin:
        # (r/t) [(Rb + 1) S + (r - 1)/(t - 1) (t - (N + 1) S)], S = H(N + t) - H(N)
        nb, rb = below[d], rel_below[d]
        s = harmonic[nb + t] - harmonic[nb]
        pair = (rr - 1) / (t - 1) if t > 1 else 0.0
        tie += rr / t * ((rb + 1) * s + pair * (t - (nb + 1) * s))
    out_tie[i] = tie / safe
    return r


@njit(cache=True, nogil=True, parallel=True)
def query_stats(qw, dw, semantic_bits, radix, ms, q_labels, db_labels, relevance, ks, harmonic):
    """Statistics of every query of a block.

    Args:
        qw: ``uint64 (c, W)`` query words; dw: ``uint64 (n * W,)`` database rows.
        semantic_bits: bits ranked first (``n_bits`` for plain codes).
        radix: ``instance_bits + 1`` (1 for plain codes): the keys are
            ``radix * d_sem + d_inst``, in ``0..(semantic_bits + 1) * radix - 1``.
        ms: ``uint64 (W,)`` word masks of the semantic bits (unused for plain codes).
        q_labels, db_labels: ``int32 (c,)`` / ``int32 (n,)`` dense class ids (relevant: equal),
            used when ``relevance`` has no rows.
        relevance: ``uint8 (c, n)`` (multi-hot labels) or ``(0, 0)``.
        ks: ``int64`` cut-offs, already clipped to ``n``.
        harmonic: ``float64 (n + 1,)``, ``harmonic[i] = 1 + 1/2 + ... + 1/i``.

    Returns:
        ``ap (c,)``, ``tie (c,)``, ``ap_at (c, nk)``, ``hits (c, nk)``, ``recall (c, nk)``,
        ``pr_p (c, semantic_bits + 1)``, ``pr_r (c, semantic_bits + 1)``, ``n_rel (c,)``.
    """
    c, w = qw.shape
    n = dw.shape[0] // w
    nk = ks.shape[0]
    pr_levels = semantic_bits + 1
    levels = pr_levels * radix
    scale = np.uint64(radix - 1)
    ap, tie = np.zeros(c), np.zeros(c)
    ap_at, hits, recall = np.zeros((c, nk)), np.zeros((c, nk), dtype=np.int64), np.zeros((c, nk))
    pr_p, pr_r = np.zeros((c, pr_levels)), np.zeros((c, pr_levels))
    n_rel = np.zeros(c, dtype=np.int64)
    by_labels = relevance.shape[0] == 0
    n_blocks = (c + 31) // 32
    for blk in prange(n_blocks):
        dist = np.empty(n, dtype=np.int64)
        rel = np.empty(n, dtype=np.uint8)
        rec_d = np.empty(n, dtype=np.int64)
        rec_seen = np.empty(n, dtype=np.int64)
        rec_rel = np.empty(n, dtype=np.int64)
        seen = np.empty(levels, dtype=np.int64)
        seen_rel = np.empty(levels, dtype=np.int64)
        for i in range(blk * 32, min(c, blk * 32 + 32)):
            if scale == 0:
                _distances(qw[i], dw, w, dist)
            else:
                _keys(qw[i], dw, w, ms, scale, dist)
            if by_labels:
                lab = q_labels[i]
                for j in range(n):
                    rel[j] = db_labels[j] == lab
                row = rel
            else:
                row = relevance[i]
            n_rel[i] = _one_query(i, dist, row, ks, harmonic, levels, radix, ap, tie, ap_at,
                                  hits, recall, pr_p, pr_r, rec_d, rec_seen, rec_rel, seen,
                                  seen_rel)
    return ap, tie, ap_at, hits, recall, pr_p, pr_r, n_rel
