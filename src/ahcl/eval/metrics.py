"""Retrieval metrics for Hamming ranking: mAP (stable and tie-aware), AP@k, P@k, R@k, PR curve.

Conventions (every number in :class:`RetrievalReport` follows them):

* **Ranking.** For each query the whole database is ranked by Hamming distance; items at the same
  distance are ranked by database index (a stable sort). ``map`` and every ``@k`` metric use this
  order, so they are deterministic. ``map_tie_aware`` instead takes the expectation over all
  orderings of tied items (He et al., CVPR 2018; McSherry & Najork, ECIR 2008), in closed form.
* **Relevance.** Integer labels: relevant = same class. Multi-hot labels ``(n, K)``: relevant =
  at least one shared label.
* **Queries with no relevant item** are *not* skipped: their AP, AP@k, recall and tie-aware AP
  count as 0 in every mean, and they are counted in ``n_queries_without_relevant``.
* **AP@k** divides by the number of relevant items retrieved within the top k (the convention of
  the deep-hashing code most papers report, e.g. HashNet's ``CalcTopMap``), and is 0 when the top k
  holds no relevant item. With ``k >= n_db`` it equals the full AP.
* **P@k** = relevant in top k / ``min(k, n_db)``; **R@k** = relevant in top k / all relevant.
* **PR curve / precision within radius.** For radius ``r`` the retrieved set is every item at
  distance ``<= r``; precision of an empty retrieved set is 0 (as in DPSH/HashNet's "precision
  within Hamming radius 2"). Both curves are means over all queries.

Cost: per query one popcount pass, one radix argsort (numpy's stable sort of ``uint8``/``uint16``
distances is a counting sort, O(n)), one label gather and one ``flatnonzero``; everything else
works on the relevant items only. Queries go in blocks so memory stays bounded. Tie-aware AP, the
PR curve and radius precision need only per-distance counts of all and of relevant items; the
counts of all items come out of the sort itself through one marker item per distance.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ahcl._progress import progress_bar
from ahcl.errors import AhclError
from ahcl.index.hamming import as_words, distance_block
from ahcl.index.packing import as_packed

DEFAULT_CURVE_KS = (1, 5, 10, 20, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000)
# Working memory per block of queries (about 20 bytes per pair): small blocks stay in cache.
_CHUNK_BYTES = 8 << 20


class EvaluationError(AhclError, ValueError):
    """Codes or labels given to :func:`evaluate` do not fit together."""


@dataclass(frozen=True)
class PRCurve:
    """Mean precision and recall when every item within Hamming radius ``r`` is retrieved.

    Attributes:
        radius: ``int64 (n_bits + 1,)``, ``0..n_bits``.
        precision: ``float64 (n_bits + 1,)``.
        recall: ``float64 (n_bits + 1,)``.
    """

    radius: np.ndarray
    precision: np.ndarray
    recall: np.ndarray

    def to_dict(self) -> dict[str, list]:
        return {"radius": [int(r) for r in self.radius],
                "precision": [float(p) for p in self.precision],
                "recall": [float(r) for r in self.recall]}


@dataclass(frozen=True)
class RetrievalReport:
    """Retrieval quality of query codes against database codes (see the module conventions).

    Attributes:
        map: mean AP over the whole ranked database, ties ranked by database index.
        map_tie_aware: mean of the expected AP over all orderings of tied items.
        map_at: ``{k: mean AP@k}`` (normalised by relevant items retrieved within the top k).
        precision_at: ``{k: mean P@k}``.
        recall_at: ``{k: mean R@k}``.
        pr_curve: precision / recall for Hamming radius ``0..n_bits``.
        precision_at_radius: mean precision within Hamming radius ``radius``.
        radius: the radius used for ``precision_at_radius``.
        n_queries, n_db, n_bits: sizes.
        n_queries_without_relevant: queries with no relevant database item (counted with AP 0).
        precision_curve_ks: the ks of ``precision_curve`` (all ``<= n_db``).
        precision_curve: mean P@k at each of ``precision_curve_ks``, for P@K plots.
    """

    map: float
    map_tie_aware: float
    map_at: dict[int, float]
    precision_at: dict[int, float]
    recall_at: dict[int, float]
    pr_curve: PRCurve
    precision_at_radius: float
    radius: int
    n_queries: int
    n_db: int
    n_bits: int
    n_queries_without_relevant: int
    precision_curve_ks: list[int] = field(default_factory=list)
    precision_curve: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: plain floats, ints and lists; ``@k`` dict keys as strings."""
        return {
            "map": float(self.map),
            "map_tie_aware": float(self.map_tie_aware),
            "map_at": {str(k): float(v) for k, v in self.map_at.items()},
            "precision_at": {str(k): float(v) for k, v in self.precision_at.items()},
            "recall_at": {str(k): float(v) for k, v in self.recall_at.items()},
            "pr_curve": self.pr_curve.to_dict(),
            "precision_at_radius": float(self.precision_at_radius),
            "radius": int(self.radius),
            "n_queries": int(self.n_queries),
            "n_db": int(self.n_db),
            "n_bits": int(self.n_bits),
            "n_queries_without_relevant": int(self.n_queries_without_relevant),
            "precision_curve_ks": [int(k) for k in self.precision_curve_ks],
            "precision_curve": [float(p) for p in self.precision_curve],
        }


def evaluate(query_codes: np.ndarray, query_labels: np.ndarray, db_codes: np.ndarray,
             db_labels: np.ndarray, topk: Sequence[int] = (10, 100, 1000), radius: int = 2,
             *, curve_ks: Sequence[int] | None = None, chunk: int | None = None,
             threads: int | None = None) -> RetrievalReport:
    """Rank the database for every query by Hamming distance and report retrieval metrics.

    Args:
        query_codes: packed ``uint8 (nq, n_bits // 8)``, or ``(nq, n_bits)`` ±1 / real codes
            (packed by sign via :func:`ahcl.index.packing.as_packed`).
        query_labels: ``int (nq,)`` class ids, or multi-hot ``(nq, K)`` 0/1.
        db_codes: same format as ``query_codes``, ``(n, ...)``.
        db_labels: same kind as ``query_labels``, ``(n,)`` or ``(n, K)``.
        topk: the ks of ``map_at`` / ``precision_at`` / ``recall_at`` (each ``>= 1``).
        radius: Hamming radius of ``precision_at_radius`` (clipped to ``n_bits``).
        curve_ks: ks of ``precision_curve``; default :data:`DEFAULT_CURVE_KS` (those ``<= n``).
        chunk: queries per block (default: about 8 MB of working memory per block).
        threads: threads working on query blocks (default: the number of CPUs); the result does
            not depend on it beyond floating-point summation order.

    Returns:
        A :class:`RetrievalReport`. Queries with no relevant item count with AP = 0 (they are
        not skipped) and are counted in ``n_queries_without_relevant``.

    Raises:
        EvaluationError: empty inputs, mismatched code widths, label shapes or kinds, or a
            bad ``topk`` / ``curve_ks`` / ``radius`` / ``chunk``.
    """
    qc, dc = _packed(query_codes, "query_codes"), _packed(db_codes, "db_codes")
    if qc.shape[1] != dc.shape[1]:
        raise EvaluationError(f"query codes have {qc.shape[1] * 8} bits, database codes "
                              f"{dc.shape[1] * 8}; encode both with the same n_bits")
    nq, n, n_bits = qc.shape[0], dc.shape[0], qc.shape[1] * 8
    if nq == 0 or n == 0 or n_bits == 0:
        raise EvaluationError(f"need at least one query, one database item and 8 bits, got "
                              f"{nq} queries, {n} database items, {n_bits} bits")
    relevance = _Relevance(query_labels, db_labels, nq, n, n_bits + 1)
    ks = _check_ks(topk, "topk")
    cks = [k for k in (_check_ks(curve_ks, "curve_ks") if curve_ks is not None
                       else DEFAULT_CURVE_KS) if k <= n]
    radius = int(radius)
    if radius < 0:
        raise EvaluationError(f"radius must be >= 0, got {radius}")

    if chunk is None:
        chunk = max(1, _CHUNK_BYTES // (20 * n))
    if chunk < 1:
        raise EvaluationError(f"chunk must be >= 1 queries, got {chunk}")
    chunk = min(chunk, nq)
    qw, dw = as_words(qc), as_words(dc)
    levels = n_bits + 1
    starts = list(range(0, nq, chunk))
    n_threads = max(1, min(threads if threads is not None else (os.cpu_count() or 1),
                           len(starts)))
    bar = progress_bar(len(starts), desc="evaluate")
    lock = threading.Lock()

    def work(my_starts: list[int]) -> _Accumulator:
        acc = _Accumulator(n, n_bits, np.array(ks + cks, dtype=np.int64))
        # Each row gets one marker item per distance r (index n + r, distance r) after the
        # database: the stable sort puts marker r last in bucket r, so the sorted order itself
        # tells where each bucket ends and no separate histogram pass over all pairs is needed.
        dist = np.empty((chunk, n + levels), dtype=np.uint8 if n_bits <= 255 else np.uint16)
        dist[:, n:] = np.arange(levels)
        scratch = np.empty((chunk, n), dtype=qw.dtype)
        for start in my_starts:
            stop = min(start + chunk, nq)
            c = stop - start
            distance_block(qw[start:stop], dw, dist[:c, :n], scratch[:c])
            acc.add(c, *relevance.ranked(start, stop, dist[:c]))
            with lock:
                bar.update(1)
        return acc

    # numpy releases the GIL in its popcount, sort and gather loops, so query blocks run in
    # threads; blocks are dealt round-robin and merged in thread order (deterministic sums).
    if n_threads == 1:
        accs = [work(starts)]
    else:
        with ThreadPoolExecutor(n_threads) as pool:
            accs = list(pool.map(work, [starts[i::n_threads] for i in range(n_threads)]))
    bar.close()
    acc = accs[0]
    for other in accs[1:]:
        acc.merge(other)
    return acc.report(ks, cks, radius, nq)


def _packed(codes: np.ndarray, name: str) -> np.ndarray:
    try:
        return as_packed(codes)
    except ValueError as exc:
        raise EvaluationError(f"{name}: {exc}") from None


def _check_ks(ks: Sequence[int], name: str) -> list[int]:
    out = [int(k) for k in ks]
    if any(k < 1 for k in out) or any(k != k_ for k, k_ in zip(out, ks)):
        raise EvaluationError(f"{name} must be positive integers, got {list(ks)}")
    return list(dict.fromkeys(out))


class _Relevance:
    """Relevant items and bucket markers of a block of queries, in ranked order."""

    def __init__(self, query_labels: np.ndarray, db_labels: np.ndarray, nq: int, n: int,
                 levels: int) -> None:
        ql, dl = np.asarray(query_labels), np.asarray(db_labels)
        if ql.ndim != dl.ndim or ql.ndim not in (1, 2):
            raise EvaluationError(f"labels must be int (n,) class ids or multi-hot (n, K), both "
                                  f"the same kind; got shapes {ql.shape} and {dl.shape}")
        if ql.shape[0] != nq or dl.shape[0] != n:
            raise EvaluationError(f"{ql.shape[0]} query labels for {nq} query codes and "
                                  f"{dl.shape[0]} database labels for {n} database codes")
        self.multi_hot = ql.ndim == 2
        if self.multi_hot:
            if ql.shape[1] != dl.shape[1]:
                raise EvaluationError(f"multi-hot labels have {ql.shape[1]} classes for queries "
                                      f"and {dl.shape[1]} for the database")
            # float32 matmul counts shared labels exactly (K < 2**24) and uses BLAS.
            self.ql, self.dl = (ql != 0).astype(np.float32), (dl != 0).astype(np.float32).T
            self.levels = levels
            return
        if not (np.issubdtype(ql.dtype, np.integer) and np.issubdtype(dl.dtype, np.integer)):
            raise EvaluationError(f"class-id labels must be integers, got {ql.dtype} and "
                                  f"{dl.dtype}; use multi-hot (n, K) for multi-label data")
        # Dense ids in the smallest dtype keep the per-pair label gather cheap. Query classes
        # absent from the database get id n_classes (matches nothing); markers get n_classes + 1.
        classes, dense = np.unique(dl, return_inverse=True)
        small = np.min_scalar_type(len(classes) + 1)
        pos = np.searchsorted(classes, ql)
        found = (pos < len(classes)) & (classes[np.minimum(pos, len(classes) - 1)] == ql)
        self.marker = len(classes) + 1
        self.dl = np.concatenate([dense, np.full(levels, self.marker)]).astype(small)
        self.ql = np.where(found, pos, len(classes)).astype(small)

    def ranked(self, start: int, stop: int, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of relevant items and markers in the stable (distance, index) order.

        Args:
            start, stop: the query block.
            dist: ``(c, n + levels)`` distances of the block, the markers in the last columns.

        Returns:
            ``(flat, is_marker)``: sorted ``int64`` positions ``row * (n + levels) + position``
            of every relevant item and marker, and ``bool`` flags telling markers apart.
        """
        # Stable sort of small unsigned ints is numpy's radix sort: O(n), ties by index.
        order = np.argsort(dist, axis=1, kind="stable")
        if self.multi_hot:
            n = self.dl.shape[1]
            kind = np.full(dist.shape, 2, dtype=np.uint8)  # 0 other, 1 relevant, 2 marker
            kind[:, :n] = (self.ql[start:stop] @ self.dl) > 0
            kind = np.take_along_axis(kind, order, axis=1)
            flat = np.flatnonzero(kind)
            return flat, kind.ravel()[flat] == 2
        label = np.take(self.dl, order)
        keep = label == self.ql[start:stop, None]
        keep |= label == self.marker
        flat = np.flatnonzero(keep)
        return flat, label.ravel()[flat] == self.marker


class _Accumulator:
    """Sums of per-query metrics over blocks of queries."""

    def __init__(self, n: int, n_bits: int, ks: np.ndarray) -> None:
        self.n, self.n_bits, self.ks = n, n_bits, ks
        self.levels = n_bits + 1
        # harmonic[i] = 1 + 1/2 + ... + 1/i, for the tie-aware closed form.
        self.harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])
        self.ap = self.ap_tie = 0.0
        self.ap_at = np.zeros(len(ks))
        self.hits_at = np.zeros(len(ks))
        self.recall_at = np.zeros(len(ks))
        self.pr_precision = np.zeros(self.levels)
        self.pr_recall = np.zeros(self.levels)
        self.no_relevant = 0

    def merge(self, other: "_Accumulator") -> None:
        """Add another accumulator's sums (blocks evaluated in another thread)."""
        for name in ("ap", "ap_tie", "ap_at", "hits_at", "recall_at", "pr_precision",
                     "pr_recall", "no_relevant"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def add(self, c: int, flat: np.ndarray, is_marker: np.ndarray) -> None:
        """Add a block of ``c`` queries from :meth:`_Relevance.ranked`."""
        n, levels = self.n, self.levels
        rows_all, pos = np.divmod(flat, n + levels)
        # Markers before an entry in its row = its bucket (distance); every row has `levels`.
        markers_before = np.cumsum(is_marker) - is_marker - rows_all * levels
        is_rel = ~is_marker
        rows, bucket = rows_all[is_rel], markers_before[is_rel]
        rank = pos[is_rel] - bucket
        flat = rows * n + rank  # positions without markers, still sorted
        # Marker r sits after the items at distance <= r and after markers 0..r-1.
        cum_total = (pos[is_marker] - np.tile(np.arange(levels), c)).reshape(c, levels)
        total = np.diff(cum_total, axis=1, prepend=0)

        n_rel = np.bincount(rows, minlength=c)
        first = np.cumsum(n_rel) - n_rel
        # m-th relevant item (0-based) at 0-based rank p contributes precision (m + 1) / (p + 1).
        prec = (np.arange(len(flat)) - first[rows] + 1) / (rank + 1)
        safe_rel = np.maximum(n_rel, 1)
        self.ap += float(np.sum(np.bincount(rows, prec, minlength=c) / safe_rel))
        self.no_relevant += int(np.count_nonzero(n_rel == 0))

        # Relevant items within the top k of each row, by binary search in the sorted flat list.
        row_base = np.arange(c, dtype=np.int64)[:, None] * n
        upto = np.searchsorted(flat, row_base + np.minimum(self.ks, n)[None, :])
        hits = upto - first[:, None]
        cum_prec = np.concatenate([[0.0], np.cumsum(prec)])
        ap_sum = cum_prec[upto] - cum_prec[first][:, None]
        self.ap_at += np.sum(np.divide(ap_sum, hits, out=np.zeros_like(ap_sum),
                                       where=hits > 0), axis=0)
        self.hits_at += hits.sum(axis=0)
        self.recall_at += np.sum(hits / safe_rel[:, None], axis=0)

        # Per-distance counts of relevant items.
        rel_count = np.bincount(rows * levels + bucket, minlength=c * levels).reshape(c, levels)
        cum_rel = np.cumsum(rel_count, axis=1)

        self.ap_tie += float(np.sum(self._tie_aware_sum(total, cum_total, rel_count, cum_rel)
                                    / safe_rel))
        self.pr_precision += np.sum(np.divide(cum_rel, cum_total, out=np.zeros(cum_rel.shape),
                                              where=cum_total > 0), axis=0)
        self.pr_recall += np.sum(cum_rel / safe_rel[:, None], axis=0)

    def _tie_aware_sum(self, total: np.ndarray, cum_total: np.ndarray, rel_count: np.ndarray,
                       cum_rel: np.ndarray) -> np.ndarray:
        """Expected sum of precisions at relevant items, over random orders within each bucket.

        A bucket holds ``t`` items, ``r`` relevant, after ``N`` items (``Rb`` relevant). A
        relevant item lands at position ``j`` (1..t) with probability 1/t, and then each of the
        other ``r - 1`` relevant items precedes it with probability ``(j-1)/(t-1)``, so

            E[sum] = (r/t) * sum_j (Rb + 1 + (j-1)(r-1)/(t-1)) / (N + j)
                   = (r/t) * [(Rb + 1) S + (r-1)/(t-1) * (t - (N+1) S)],
            S = sum_j 1/(N + j) = H(N + t) - H(N).

        Returns:
            ``float64 (c,)`` per-query sums (divide by the number of relevant items for AP).
        """
        before = cum_total - total
        rel_before = cum_rel - rel_count
        s = self.harmonic[cum_total] - self.harmonic[before]
        t = np.maximum(total, 1)
        pair = np.divide(rel_count - 1, total - 1, out=np.zeros(total.shape),
                         where=total > 1)
        contrib = rel_count / t * ((rel_before + 1) * s + pair * (total - (before + 1) * s))
        return np.sum(np.where(rel_count > 0, contrib, 0.0), axis=1)

    def report(self, ks: list[int], cks: list[int], radius: int, nq: int) -> RetrievalReport:
        n_top = len(ks)
        denom = np.minimum(self.ks, self.n) * nq
        precision = self.hits_at / denom
        r = min(radius, self.n_bits)
        return RetrievalReport(
            map=self.ap / nq,
            map_tie_aware=self.ap_tie / nq,
            map_at={k: float(self.ap_at[i] / nq) for i, k in enumerate(ks)},
            precision_at={k: float(precision[i]) for i, k in enumerate(ks)},
            recall_at={k: float(self.recall_at[i] / nq) for i, k in enumerate(ks)},
            pr_curve=PRCurve(radius=np.arange(self.levels), precision=self.pr_precision / nq,
                             recall=self.pr_recall / nq),
            precision_at_radius=float(self.pr_precision[r] / nq),
            radius=radius, n_queries=nq, n_db=self.n, n_bits=self.n_bits,
            n_queries_without_relevant=self.no_relevant,
            precision_curve_ks=list(cks),
            precision_curve=[float(p) for p in precision[n_top:]],
        )
