"""Near-duplicate retrieval: where an altered copy's source ranks in the database.

The protocol of ``ahcl evaluate --near-duplicates N`` (the alterations themselves are
:mod:`ahcl.data.alter`): ``N`` database images are altered (crop, quarter turn, brightness,
JPEG), encoded as queries, and for each the database is ranked exactly as :func:`evaluate
<ahcl.eval.metrics.evaluate>` ranks it: by Hamming distance, or for split codes by (semantic
distance, instance distance), ties by database row. :func:`near_duplicate_ranks` gives the
1-based rank of each query's source row in that order, :func:`near_duplicate_report` recall@k
and the mean and median rank.

The rank needs no sort: with ``key`` the ranking key of :mod:`ahcl.eval.counting` (the distance,
or ``R * d_sem + d_inst`` with ``R = instance_bits + 1``) and ``src`` the source row,

    rank = 1 + #{rows j < src: key_j <= key_src} + #{rows j > src: key_j < key_src},

one pass over the database per query (numba threads over queries).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from numba import njit, prange

from ahcl.eval.counting import row_key
from ahcl.eval.metrics import (EvaluationError, _check_ks, _packed, _words64,
                               check_semantic_bits, split_params)
from ahcl.index.kernels import thread_limit

#: Default cut-offs of :func:`near_duplicate_report`.
DEFAULT_KS = (1, 10, 100)


@njit(cache=True, nogil=True, parallel=True)
def _ranks(qw, dw, ms, scale, sources, out):
    """``out[i]``: 1-based rank of row ``sources[i]`` for query ``i`` in the (key, row) order.

    ``qw``: ``uint64 (c, W)``; ``dw``: ``uint64 (n * W,)``; ``ms``: ``uint64 (W,)`` semantic
    masks; ``scale``: ``uint64`` ``instance_bits`` (0 for plain codes)."""
    c, w = qw.shape
    n = dw.shape[0] // w
    for i in prange(c):
        q = qw[i]
        src = sources[i]
        key = row_key(q, dw, src, w, ms, scale)
        before = 0
        for j in range(src):  # rows before the source: a tie ranks ahead of it
            before += row_key(q, dw, j, w, ms, scale) <= key
        for j in range(src + 1, n):  # rows after it: only smaller keys do
            before += row_key(q, dw, j, w, ms, scale) < key
        out[i] = before + 1


def near_duplicate_ranks(query_codes: np.ndarray, db_codes: np.ndarray, sources: np.ndarray, *,
                         semantic_bits: int | None = None,
                         threads: int | None = None) -> np.ndarray:
    """The 1-based rank of each query's source row in the database ranking.

    Args:
        query_codes: codes of the altered copies, packed ``uint8 (nq, n_bits // 8)`` or ±1 /
            real ``(nq, n_bits)`` (as :func:`ahcl.eval.evaluate` takes them).
        db_codes: the database codes, same format, ``(n, ...)``.
        sources: ``int (nq,)``: the database row each query was made from.
        semantic_bits: split codes: rank by (semantic distance, instance distance) as
            :func:`ahcl.eval.evaluate` does (a multiple of 8, 8 to ``n_bits``); None or
            ``n_bits``: by Hamming distance.
        threads: threads over queries (default: the number of CPUs).

    Returns:
        ``int64 (nq,)``: ``1 + #rows with a smaller key + #rows with the same key and a smaller
        row`` (1 when the source comes first).

    Raises:
        EvaluationError: empty or mismatched codes, ``sources`` of the wrong length, not
            integers or out of range, or a bad ``semantic_bits``.
    """
    qc, dc = _packed(query_codes, "query_codes"), _packed(db_codes, "db_codes")
    if qc.shape[1] != dc.shape[1]:
        raise EvaluationError(f"query codes have {qc.shape[1] * 8} bits, database codes "
                              f"{dc.shape[1] * 8}; encode both with the same n_bits")
    nq, n, n_bits = qc.shape[0], dc.shape[0], qc.shape[1] * 8
    if n == 0 or n_bits == 0:
        raise EvaluationError(f"need at least one database item and 8 bits, got {n} database "
                              f"items, {n_bits} bits")
    src = np.asarray(sources)
    if src.ndim != 1 or src.shape[0] != nq:
        raise EvaluationError(f"sources must be int ({nq},), one database row per query, got "
                              f"shape {src.shape}")
    if nq and not np.issubdtype(src.dtype, np.integer):
        raise EvaluationError(f"sources must be integer database rows, got {src.dtype}")
    src = src.astype(np.int64)
    if nq and (src.min() < 0 or src.max() >= n):
        raise EvaluationError(f"sources must be database rows in 0..{n - 1}, got "
                              f"{int(src.min())}..{int(src.max())}")
    sem = check_semantic_bits(semantic_bits, n_bits)
    _, radix, ms = split_params(n_bits, sem)
    out = np.zeros(nq, dtype=np.int64)
    if nq:
        with thread_limit(threads if threads is not None else (os.cpu_count() or 1)):
            _ranks(_words64(qc), _words64(dc).reshape(-1), ms, np.uint64(radix - 1), src, out)
    return out


@dataclass(frozen=True)
class NearDuplicateReport:
    """How well altered copies find their sources.

    Attributes:
        n: number of altered copies (queries).
        recall_at: ``{k: fraction of copies whose source ranks within the top k}``.
        mean_rank, median_rank: of the sources' 1-based ranks.
    """

    n: int
    recall_at: dict[int, float]
    mean_rank: float
    median_rank: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; ``recall_at`` keys as strings (as :class:`RetrievalReport`'s)."""
        return {"n": int(self.n),
                "recall_at": {str(k): float(v) for k, v in self.recall_at.items()},
                "mean_rank": float(self.mean_rank), "median_rank": float(self.median_rank)}


def near_duplicate_report(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS, *,
                          n_db: int | None = None) -> NearDuplicateReport:
    """Recall@k and the mean and median of :func:`near_duplicate_ranks`' ranks.

    Args:
        ranks: ``int (n,)`` 1-based ranks, ``n >= 1``.
        ks: cut-offs (positive integers, duplicates dropped).
        n_db: the database size, if known: ranks must be ``<= n_db``, and each k above it is
            clipped to ``n_db`` (its recall is 1), so a small database reports recall@n_db
            instead of a misleading recall@100.

    Raises:
        EvaluationError: no ranks, ranks not integers ``>= 1`` (or above ``n_db``), bad ``ks``.
    """
    r = np.asarray(ranks)
    if r.ndim != 1 or r.shape[0] == 0:
        raise EvaluationError(f"ranks must be a non-empty 1-D array, got shape {r.shape}")
    if not np.issubdtype(r.dtype, np.integer) or r.min() < 1:
        raise EvaluationError("ranks must be 1-based integer ranks (>= 1)")
    cut = _check_ks(ks, "ks")
    if n_db is not None:
        if int(n_db) < 1:
            raise EvaluationError(f"n_db must be >= 1, got {n_db}")
        if r.max() > n_db:
            raise EvaluationError(f"a rank of {int(r.max())} in a database of {n_db} items")
        cut = list(dict.fromkeys(min(k, int(n_db)) for k in cut))
    r = r.astype(np.int64)
    return NearDuplicateReport(n=int(r.shape[0]),
                               recall_at={k: float(np.mean(r <= k)) for k in cut},
                               mean_rank=float(r.mean()), median_rank=float(np.median(r)))
