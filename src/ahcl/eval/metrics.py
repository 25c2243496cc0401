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
* **Split codes** (``semantic_bits``: the first ``semantic_bits`` bits are a class-level code,
  the other ``instance_bits = n_bits - semantic_bits`` an instance-level one). The database is
  ranked by (semantic distance, instance distance, database index): ``map`` and every ``@k``
  metric use this order, and ``map_tie_aware`` treats items tied on *both* distances as tied.
  The PR curve and ``precision_at_radius`` are defined on the **semantic** distance alone
  (retrieved set: semantic distance ``<= r``), so they have ``semantic_bits + 1`` levels.
  ``semantic_bits=None`` or ``n_bits`` means plain codes, exactly as above.

Cost: per query one popcount pass over the database and one counting pass in database order
(:mod:`ahcl.eval.counting`: a relevant item's rank is the number of items in the bins below its
distance plus those met before it in its own bin), no sort; everything else works on the
relevant items and the ``n_bits + 1`` distance bins (``(semantic_bits + 1) *
(instance_bits + 1)`` key bins for split codes). Queries go in blocks (numba threads), and
per-query values are summed in query order, so the result does not depend on the thread count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ahcl._progress import progress_bar
from ahcl.errors import AhclError
from ahcl.eval.counting import query_stats
from ahcl.index.kernels import thread_limit
from ahcl.index.lexicographic import split_masks
from ahcl.index.packing import as_packed

DEFAULT_CURVE_KS = (1, 5, 10, 20, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000)
# Queries per block: bounds the per-query outputs and, for multi-hot labels, the uint8
# relevance block (queries x database) to about this many bytes.
_CHUNK_BYTES = 4 << 20


class EvaluationError(AhclError, ValueError):
    """Codes or labels given to :func:`evaluate` do not fit together."""


@dataclass(frozen=True)
class PRCurve:
    """Mean precision and recall when every item within Hamming radius ``r`` is retrieved.

    For split codes the radius is on the semantic distance and there are ``semantic_bits + 1``
    levels instead of ``n_bits + 1``.

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
        pr_curve: precision / recall for Hamming radius ``0..n_bits`` (split codes: semantic
            distance ``0..semantic_bits``).
        precision_at_radius: mean precision within Hamming radius ``radius`` (split codes:
            semantic distance ``<= radius``).
        radius: the radius used for ``precision_at_radius``.
        n_queries, n_db, n_bits: sizes.
        semantic_bits: the class-level bits ranked first, for split codes; None for plain ones.
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
    semantic_bits: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: plain floats, ints and lists; ``@k`` dict keys as strings. A split
        report adds ``semantic_bits``; a plain one has exactly the keys it always had."""
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
        } | ({} if self.semantic_bits is None else {"semantic_bits": int(self.semantic_bits)})


def evaluate(query_codes: np.ndarray, query_labels: np.ndarray, db_codes: np.ndarray,
             db_labels: np.ndarray, topk: Sequence[int] = (10, 100, 1000), radius: int = 2,
             *, curve_ks: Sequence[int] | None = None, chunk: int | None = None,
             threads: int | None = None, semantic_bits: int | None = None) -> RetrievalReport:
    """Rank the database for every query by Hamming distance and report retrieval metrics.

    Args:
        query_codes: packed ``uint8 (nq, n_bits // 8)``, or ``(nq, n_bits)`` ±1 / real codes
            (packed by sign via :func:`ahcl.index.packing.as_packed`).
        query_labels: ``int (nq,)`` class ids, or multi-hot ``(nq, K)`` 0/1.
        db_codes: same format as ``query_codes``, ``(n, ...)``.
        db_labels: same kind as ``query_labels``, ``(n,)`` or ``(n, K)``.
        topk: the ks of ``map_at`` / ``precision_at`` / ``recall_at`` (each ``>= 1``).
        radius: Hamming radius of ``precision_at_radius`` (clipped to ``n_bits``; for split
            codes a semantic distance, clipped to ``semantic_bits``).
        curve_ks: ks of ``precision_curve``; default :data:`DEFAULT_CURVE_KS` (those ``<= n``).
        chunk: queries per block (default: about 8 MB of working memory per block).
        threads: threads working on query blocks (default: the number of CPUs); the result does
            not depend on it beyond floating-point summation order.
        semantic_bits: split codes: the first ``semantic_bits`` bits (a multiple of 8, 8 to
            ``n_bits``) are ranked first, the rest break ties (see the module conventions); the
            PR curve and ``precision_at_radius`` then use the semantic distance. None or
            ``n_bits``: plain codes.

    Returns:
        A :class:`RetrievalReport`. Queries with no relevant item count with AP = 0 (they are
        not skipped) and are counted in ``n_queries_without_relevant``.

    Raises:
        EvaluationError: empty inputs, mismatched code widths, label shapes or kinds, or a
            bad ``topk`` / ``curve_ks`` / ``radius`` / ``chunk`` / ``semantic_bits``.
    """
    qc, dc = _packed(query_codes, "query_codes"), _packed(db_codes, "db_codes")
    if qc.shape[1] != dc.shape[1]:
        raise EvaluationError(f"query codes have {qc.shape[1] * 8} bits, database codes "
                              f"{dc.shape[1] * 8}; encode both with the same n_bits")
    nq, n, n_bits = qc.shape[0], dc.shape[0], qc.shape[1] * 8
    if nq == 0 or n == 0 or n_bits == 0:
        raise EvaluationError(f"need at least one query, one database item and 8 bits, got "
                              f"{nq} queries, {n} database items, {n_bits} bits")
    split = check_semantic_bits(semantic_bits, n_bits)
    relevance = _Relevance(query_labels, db_labels, nq, n)
    ks = _check_ks(topk, "topk")
    cks = [k for k in (_check_ks(curve_ks, "curve_ks") if curve_ks is not None
                       else DEFAULT_CURVE_KS) if k <= n]
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise EvaluationError(f"radius must be an integer >= 0, got {radius!r}")
    radius = int(radius)

    if chunk is None:
        chunk = max(1, _CHUNK_BYTES // (n if relevance.multi_hot else 8 * (n_bits + 40)))
    if chunk < 1:
        raise EvaluationError(f"chunk must be >= 1 queries, got {chunk}")
    chunk = min(chunk, nq)
    qw, dw = _words64(qc), _words64(dc).reshape(-1)
    sem_bits, radix, ms = split_params(n_bits, split)
    acc = _Accumulator(n, n_bits, np.minimum(np.array(ks + cks, dtype=np.int64), n), split)
    starts = list(range(0, nq, chunk))
    bar = progress_bar(len(starts), desc="evaluate")
    with thread_limit(threads if threads is not None else (os.cpu_count() or 1)):
        for start in starts:
            stop = min(start + chunk, nq)
            acc.add(*query_stats(qw[start:stop], dw, sem_bits, radix, ms,
                                 relevance.q_ids[start:stop], relevance.db_ids,
                                 relevance.block(start, stop), acc.ks, acc.harmonic))
            bar.update(1)
    bar.close()
    return acc.report(ks, cks, radius, nq)


def check_semantic_bits(semantic_bits: int | None, n_bits: int) -> int | None:
    """``semantic_bits`` checked against ``n_bits``: None for plain codes (None or ``n_bits``).

    Raises:
        EvaluationError: not an integer, not a multiple of 8, or outside ``8..n_bits``.
    """
    if semantic_bits is None:
        return None
    if isinstance(semantic_bits, bool) or not isinstance(semantic_bits, (int, np.integer)):
        raise EvaluationError(f"semantic_bits must be an integer or None, got {semantic_bits!r}")
    sem = int(semantic_bits)
    if sem % 8 or not 8 <= sem <= n_bits:
        raise EvaluationError(f"semantic_bits must be a multiple of 8 from 8 to n_bits="
                              f"{n_bits}, got {sem}")
    return None if sem == n_bits else sem


def split_params(n_bits: int, semantic_bits: int | None) -> tuple[int, int, np.ndarray]:
    """``(semantic_bits, radix, masks)`` of the counting kernels: the bits ranked first
    (``n_bits`` for plain codes), ``instance_bits + 1`` (1 for plain codes) and the ``uint64
    (W,)`` word masks of the semantic bits (:func:`ahcl.index.lexicographic.split_masks`)."""
    sem = n_bits if semantic_bits is None else semantic_bits
    return sem, n_bits - sem + 1, split_masks(n_bits, sem)


def _words64(codes: np.ndarray) -> np.ndarray:
    """``uint64 (n, ceil(n_bits / 64))`` words of packed codes, zero padded."""
    n, width = codes.shape
    words = -(-width // 8)
    if width == 8 * words and codes.flags.c_contiguous and codes.ctypes.data % 8 == 0:
        return codes.view(np.uint64)
    padded = np.zeros((n, 8 * words), dtype=np.uint8)
    padded[:, :width] = codes
    return padded.view(np.uint64)


_FORMS = ("packed uint8 (n, n_bits/8), or ±1 / real-valued (n, n_bits) whose signs are the "
          "bits")


def _packed(codes: np.ndarray, name: str) -> np.ndarray:
    """Packed codes, refusing the forms whose meaning is a guess (they used to give chance-level
    numbers silently): bools and 0/1 integers (they would all pack to ones), other integers
    than ±1 (packed bytes stored in a wider type), and NaN."""
    codes = np.asarray(codes)
    if codes.dtype == np.bool_:
        raise EvaluationError(f"{name}: bool codes are ambiguous; pass {_FORMS}")
    if not (np.issubdtype(codes.dtype, np.integer) or np.issubdtype(codes.dtype, np.floating)):
        raise EvaluationError(f"{name}: {codes.dtype} codes have no sign to read; pass {_FORMS}")
    if np.issubdtype(codes.dtype, np.integer) and codes.dtype != np.uint8 and codes.size \
            and not ((codes == 1) | (codes == -1)).all():  # one pass; unique() only to explain
        values = np.unique(codes)
        kind = ("0/1 bits" if np.isin(values, (0, 1)).all() else
                "packed bytes in a wider integer type" if values.min() >= 0
                and values.max() <= 255 else "integers other than ±1")
        raise EvaluationError(f"{name}: {codes.dtype} codes look like {kind}; pass {_FORMS}"
                              " (for 0/1 bits: 2 * bits - 1; for bytes: .astype(np.uint8))")
    if np.issubdtype(codes.dtype, np.floating) and not np.isfinite(codes).all():
        raise EvaluationError(f"{name}: codes hold NaN or infinite values; pass {_FORMS}")
    try:
        return as_packed(codes)
    except ValueError as exc:
        raise EvaluationError(f"{name}: {exc}") from None


def _check_ks(ks: Sequence[int], name: str) -> list[int]:
    try:
        ks = list(ks)
    except TypeError:
        raise EvaluationError(f"{name} must be a sequence of positive integers, got {ks!r}"
                              ) from None
    if any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise EvaluationError(f"{name} must be positive integers, got {ks}")
    return list(dict.fromkeys(int(k) for k in ks))


class _Relevance:
    """Which database items are relevant to which query: dense class ids, or multi-hot blocks."""

    def __init__(self, query_labels: np.ndarray, db_labels: np.ndarray, nq: int, n: int) -> None:
        ql, dl = np.asarray(query_labels), np.asarray(db_labels)
        if (ql.ndim == 2 and ql.shape[1] == 1) or (dl.ndim == 2 and dl.shape[1] == 1):
            raise EvaluationError(f"labels of shape {ql.shape} / {dl.shape} are ambiguous: pass "
                                  "class ids as (n,), or multi-hot (n, K) with K > 1")
        if ql.ndim != dl.ndim or ql.ndim not in (1, 2):
            raise EvaluationError(f"labels must be int (n,) class ids or multi-hot (n, K), both "
                                  f"the same kind; got shapes {ql.shape} and {dl.shape}")
        if ql.shape[0] != nq or dl.shape[0] != n:
            raise EvaluationError(f"{ql.shape[0]} query labels for {nq} query codes and "
                                  f"{dl.shape[0]} database labels for {n} database codes")
        self.multi_hot = ql.ndim == 2
        self.q_ids, self.db_ids = np.zeros(nq, np.int32), np.zeros(n, np.int32)
        if self.multi_hot:
            if ql.shape[1] != dl.shape[1]:
                raise EvaluationError(f"multi-hot labels have {ql.shape[1]} classes for queries "
                                      f"and {dl.shape[1]} for the database")
            for labels in (ql, dl):  # anything else than 0/1 (NaN, 0.5, 2) is a guess
                if labels.dtype != np.bool_ and not (
                        (np.issubdtype(labels.dtype, np.integer)
                         or np.issubdtype(labels.dtype, np.floating))
                        and np.isin(labels, (0, 1)).all()):
                    raise EvaluationError(f"multi-hot labels must be 0/1 (or bool) in every "
                                          f"entry; got {labels.dtype} values outside 0/1")
            # float32 matmul counts shared labels exactly (K < 2**24) and uses BLAS.
            self.ql, self.dl = (ql != 0).astype(np.float32), (dl != 0).astype(np.float32).T
            return
        if not (np.issubdtype(ql.dtype, np.integer) and np.issubdtype(dl.dtype, np.integer)):
            raise EvaluationError(f"class-id labels must be integers, got {ql.dtype} and "
                                  f"{dl.dtype}; use multi-hot (n, K) for multi-label data")
        # Dense ids; query classes absent from the database get -1 (matches nothing).
        classes, dense = np.unique(dl, return_inverse=True)
        pos = np.searchsorted(classes, ql)
        found = (pos < len(classes)) & (classes[np.minimum(pos, len(classes) - 1)] == ql)
        self.db_ids = dense.astype(np.int32).reshape(-1)
        self.q_ids = np.where(found, pos, -1).astype(np.int32)

    def block(self, start: int, stop: int) -> np.ndarray:
        """``uint8 (stop - start, n)`` relevance of a block of queries (multi-hot), else
        ``(0, 0)``: the kernel compares class ids itself."""
        if not self.multi_hot:
            return np.zeros((0, 0), dtype=np.uint8)
        return ((self.ql[start:stop] @ self.dl) > 0).view(np.uint8)


class _Accumulator:
    """Sums of per-query metrics, added block by block in query order."""

    def __init__(self, n: int, n_bits: int, ks: np.ndarray, semantic_bits: int | None) -> None:
        self.n, self.n_bits, self.ks, self.semantic_bits = n, n_bits, ks, semantic_bits
        # PR-curve levels: distances 0..n_bits, or semantic distances 0..semantic_bits
        self.levels = (n_bits if semantic_bits is None else semantic_bits) + 1
        # harmonic[i] = 1 + 1/2 + ... + 1/i, for the tie-aware closed form.
        self.harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])
        self.ap = self.ap_tie = 0.0
        self.ap_at = np.zeros(len(ks))
        self.hits_at = np.zeros(len(ks))
        self.recall_at = np.zeros(len(ks))
        self.pr_precision = np.zeros(self.levels)
        self.pr_recall = np.zeros(self.levels)
        self.no_relevant = 0

    def add(self, ap: np.ndarray, tie: np.ndarray, ap_at: np.ndarray, hits: np.ndarray,
            recall: np.ndarray, pr_p: np.ndarray, pr_r: np.ndarray, n_rel: np.ndarray) -> None:
        """Add a block's per-query values (:func:`ahcl.eval.counting.query_stats`)."""
        self.ap += float(ap.sum())
        self.ap_tie += float(tie.sum())
        self.ap_at += ap_at.sum(axis=0)
        self.hits_at += hits.sum(axis=0)
        self.recall_at += recall.sum(axis=0)
        self.pr_precision += pr_p.sum(axis=0)
        self.pr_recall += pr_r.sum(axis=0)
        self.no_relevant += int(np.count_nonzero(n_rel == 0))

    def report(self, ks: list[int], cks: list[int], radius: int, nq: int) -> RetrievalReport:
        n_top = len(ks)
        denom = np.minimum(self.ks, self.n) * nq
        precision = self.hits_at / denom
        r = min(radius, self.levels - 1)
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
            semantic_bits=self.semantic_bits,
        )
