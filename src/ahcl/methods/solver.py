"""The two steps of AHCL's alternating optimisation in their scalable form (METHOD.md).

Notation: ``n`` database items with labels ``db_labels`` (K classes) and codes ``V ∈ {−1,+1}^{n×c}``
(stored ``int8``); a sampled set Ω of ``m`` database rows with network outputs ``U ∈ (−1,1)^{m×c}``.
Pairwise supervision is single-label: ``S_ij = 1`` when ``y_i = y_j`` and ``−r`` otherwise, where
``r`` is either the authors' soft balance (similar / dissimilar pairs in the m×n block) or 1 (ADSH).

Nothing here forms an m×n matrix or ``U Vᵀ``: every sum over the database collapses into per-class
sums (``P``, ``R``) and Gram matrices (``VᵀV``, ``UᵀU``). The dense forms live in the tests, which
check these functions against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

SIMILARITIES = ("soft", "hard")

#: Sums an array over the processes that each hold part of the rows (e.g.
#: :func:`ahcl.distributed.all_reduce_numpy`); ``None`` when one process holds them all.
Reduce = Callable[[np.ndarray], np.ndarray]


def dissimilar_weight(omega_labels: np.ndarray, class_counts: np.ndarray, similarity: str) -> float:
    """The weight ``r`` of dissimilar pairs (``S_ij = −r``).

    Args:
        omega_labels: int64 (m,) labels of the sampled rows.
        class_counts: int64 (K,) number of database items per class.
        similarity: ``"soft"`` (authors' code: r = #similar / #dissimilar pairs in the m×n block) or
            ``"hard"`` (ADSH paper: r = 1).
    """
    if similarity == "hard":
        return 1.0
    if similarity != "soft":
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    n = int(class_counts.sum())
    n_similar = int(class_counts[omega_labels].sum())
    n_dissimilar = len(omega_labels) * n - n_similar
    # A single-class block has no dissimilar pairs; r is then irrelevant and 0 keeps it finite.
    return n_similar / n_dissimilar if n_dissimilar else 0.0


@dataclass(frozen=True)
class DatabaseStats:
    """Sufficient statistics of ``V`` for the network step (all O(K·c + c²), independent of n).

    Attributes:
        gram: float32 (c, c) ``VᵀV``.
        class_sums: float32 (K, c) ``P[k] = Σ_{j: y_j = k} v_j``.
        total: float32 (c,) ``P_all = Σ_j v_j``.
        class_counts: int64 (K,) items per class.
    """

    gram: np.ndarray
    class_sums: np.ndarray
    total: np.ndarray
    class_counts: np.ndarray

    @property
    def n(self) -> int:
        return int(self.class_counts.sum())


def database_stats(V: np.ndarray, db_labels: np.ndarray, n_classes: int,
                   chunk: int = 65536, reduce: Reduce | None = None) -> DatabaseStats:
    """Compute :class:`DatabaseStats` of ``V`` (int8 (n, c) ±1) in row chunks.

    With ``reduce``, ``V`` and ``db_labels`` are this process's rows and the statistics are summed
    over all processes. They are integers (exact in float64 and, below 2**24 items, in float32),
    so the result does not depend on how the rows are split.
    """
    n, c = V.shape
    gram = np.zeros((c, c), np.float64)
    sums = np.zeros((n_classes, c), np.float64)
    for start in range(0, n, chunk):
        block = V[start:start + chunk].astype(np.float32)
        gram += block.T @ block
        sums += _class_sum(block, db_labels[start:start + chunk], n_classes)
    counts = np.bincount(db_labels, minlength=n_classes).astype(np.int64)
    if reduce is not None:
        gram, sums, counts = reduce(gram), reduce(sums), reduce(counts)
    return DatabaseStats(gram.astype(np.float32), sums.astype(np.float32),
                         sums.sum(0).astype(np.float32), counts)


def _class_sum(x: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class row sums: float64 (K, c). Exact for ±1 rows (integer-valued sums)."""
    out = np.zeros((n_classes, x.shape[1]), np.float64)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_classes + 1))
    xs = x[order]
    for k in range(n_classes):
        if bounds[k + 1] > bounds[k]:
            out[k] = xs[bounds[k]:bounds[k + 1]].sum(0, dtype=np.float64)
    return out


def pairwise_loss(u: torch.Tensor, labels: torch.Tensor, stats: DatabaseStats, r: float,
                  n_bits: int) -> torch.Tensor:
    """``Σ_{i∈B} Σ_j (u_iᵀ v_j − c·S_ij)²`` for a mini-batch, in O(|B|·c²), differentiable in ``u``.

    Uses ``Σ_j (u_iᵀv_j − cS_ij)² = u_iᵀ(VᵀV)u_i − 2c·u_iᵀ((1+r)P[y_i] − r·P_all)
    + c²·(N[y_i] + r²(n − N[y_i]))``.

    Args:
        u: float (B, c) tanh outputs.
        labels: int64 (B,) labels of the batch rows.
        stats: statistics of the current ``V``.
        r: dissimilar weight from :func:`dissimilar_weight`.
        n_bits: ``c``.

    Returns:
        Scalar: the sum over the batch (not normalised).
    """
    gram = torch.as_tensor(stats.gram, dtype=u.dtype, device=u.device)
    sums = torch.as_tensor(stats.class_sums, dtype=u.dtype, device=u.device)
    total = torch.as_tensor(stats.total, dtype=u.dtype, device=u.device)
    counts = torch.as_tensor(stats.class_counts, dtype=u.dtype, device=u.device)
    sv = (1.0 + r) * sums[labels] - r * total  # Σ_j S_ij v_j, (B, c)
    quad = ((u @ gram) * u).sum(1)
    lin = (u * sv).sum(1)
    n_same = counts[labels]
    const = n_bits ** 2 * (n_same + r * r * (stats.n - n_same))
    return (quad - 2.0 * n_bits * lin + const).sum()


def omega_stats(U: np.ndarray, omega_labels: np.ndarray, n_classes: int,
                dtype: type = np.float32, reduce: Reduce | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """``M = UᵀU`` (c, c) and ``R[k] = Σ_{i∈Ω: y_i=k} u_i`` (K, c): all the code step reads of U
    besides the sampled rows' own outputs.

    With ``reduce``, ``U`` holds this process's sampled rows and both sums are taken over all
    processes in float64 before the cast to ``dtype``.
    """
    U64 = np.asarray(U, np.float64)
    M, R = U64.T @ U64, _class_sum(U64, omega_labels, n_classes)
    if reduce is not None:
        M, R = reduce(M), reduce(R)
    return M.astype(dtype), R.astype(dtype)


def _ubar(omega: np.ndarray, U: np.ndarray, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Ū's non-zero rows: sorted unique rows of ``omega`` and the sum of their ``U`` rows."""
    # Several draws of one row add up.
    ubar_rows, inverse = np.unique(omega, return_inverse=True)
    ubar = np.zeros((len(ubar_rows), np.shape(U)[1]), dtype)
    np.add.at(ubar, inverse, np.asarray(U, dtype))
    return ubar_rows, ubar


def code_step(V: np.ndarray, U: np.ndarray, omega: np.ndarray, db_labels: np.ndarray,
              n_classes: int, r: float, lam: float, sweeps: int = 1, rows: slice | None = None,
              chunk: int = 8192, dtype: type = np.float32) -> np.ndarray:
    """The database-code step: discrete cyclic coordinate descent over bits, in row chunks.

    Minimises ``‖V Uᵀ‖² + tr(V Qᵀ)`` with ``Q = −2c·SᵀU − 2λ·Ū`` bit by bit:
    ``V[:, k] = −sign(Q[:, k] + 2·V[:, ≠k]·M[≠k, k])``, ``M = UᵀU``, using the columns already
    updated. ``(SᵀU)[j] = (1+r)·R[y_j] − r·R_all`` with ``R[k] = Σ_{i∈Ω: y_i=k} u_i``, so no m×n
    matrix is formed and the rows are independent given (M, R): they are processed in chunks,
    and ``rows`` restricts the update to a slice (for sharding or newly added items).

    Tie rule: sign(0) = +1, so an exact tie (argument 0) sets the bit to −1.

    Args:
        V: int8 (n, c) ±1 database codes, updated in place (only ``rows``).
        U: float32 (m, c) network outputs on Ω.
        omega: int64 (m,) database row of each sampled item.
        db_labels: int64 (n,) labels of all database rows.
        n_classes: K.
        r: dissimilar weight.
        lam: λ, the weight tying sampled rows to their own ``u``.
        sweeps: number of passes over all bits.
        rows: the rows to update (default: all).
        chunk: rows per block (keeps a block of V in cache).
        dtype: arithmetic precision (float32 is the fast default; tests compare in float64).

    Returns:
        ``V`` (the same array).
    """
    M, R = omega_stats(U, db_labels[omega], n_classes, dtype)
    ubar_rows, ubar = _ubar(omega, U, dtype)
    return code_step_from_stats(V, db_labels, M, R, r, lam, ubar_rows, ubar, sweeps, rows,
                                chunk, dtype)


def code_step_shard(V: np.ndarray, row_start: int, U: np.ndarray, omega: np.ndarray,
                    db_labels: np.ndarray, n_classes: int, r: float, lam: float,
                    reduce: Reduce | None, sweeps: int = 1, chunk: int = 8192,
                    dtype: type = np.float32, device: torch.device | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`code_step` on one process's contiguous block of database rows.

    Each process holds only its rows of ``V`` and the outputs of the sampled rows that fall in
    them; ``M`` and ``R`` are summed over processes with ``reduce``. The union of the blocks
    equals :func:`code_step` on the whole database whenever those sums come out the same as a
    serial sum (exact, e.g., in float64 when the sums are exact; see the tests).

    Args:
        V: int8 (n_local, c) ±1 codes of rows ``[row_start, row_start + n_local)``, updated in
            place.
        row_start: database row of ``V[0]``.
        U: float32 (m_local, c) network outputs of the sampled rows in this block.
        omega: int64 (m_local,) their database rows.
        db_labels: int64 (n_local,) labels of this block's rows.
        n_classes: K.
        r: dissimilar weight.
        lam: λ.
        reduce: the sum over processes (``None``: this process holds everything).
        sweeps: passes over all bits.
        chunk: rows per block.
        dtype: arithmetic precision.
        device: run the bit updates in torch on this device (a GPU; ``None``: numpy on the CPU).
            The statistics ``M``, ``R`` are summed in float64 on the CPU either way.

    Returns:
        ``(V, M, R)``: the updated codes and the reduced statistics (``dtype``).
    """
    local = np.asarray(omega, np.int64) - row_start
    if len(local) and (local.min() < 0 or local.max() >= len(V)):
        raise ValueError("omega holds rows outside this block")
    M, R = omega_stats(U, db_labels[local], n_classes, dtype, reduce)
    ubar_rows, ubar = _ubar(local, U, dtype)
    if device is None:
        code_step_from_stats(V, db_labels, M, R, r, lam, ubar_rows, ubar, sweeps, None, chunk,
                             dtype)
    else:
        code_step_from_stats_torch(V, db_labels, M, R, r, lam, ubar_rows, ubar, sweeps, device)
    return V, M, R


def code_step_from_stats(V: np.ndarray, db_labels: np.ndarray, M: np.ndarray, R: np.ndarray,
                         r: float, lam: float, ubar_rows: np.ndarray | None = None,
                         ubar: np.ndarray | None = None, sweeps: int = 1,
                         rows: slice | None = None, chunk: int = 8192,
                         dtype: type = np.float32) -> np.ndarray:
    """:func:`code_step` given ``M`` (c, c), ``R`` (K, c) and the sampled rows' ``Ū``.

    ``ubar_rows`` (sorted int64) and ``ubar`` (float (len, c)) hold Ū's non-zero rows; leave them
    ``None`` for rows outside Ω (new labelled archive items), whose ``Ū`` is 0.
    """
    n, c = V.shape
    M, R = np.asarray(M, dtype), np.asarray(R, dtype)
    R_all = R.sum(0)
    if ubar_rows is None:
        ubar_rows, ubar = np.zeros(0, np.int64), np.zeros((0, c), dtype)
    start_all, stop_all, _ = (rows or slice(0, n)).indices(n)
    two_c = 2.0 * c
    diag = np.diag(M).copy()
    for start in range(start_all, stop_all, chunk):
        stop = min(start + chunk, stop_all)
        Q = -two_c * ((1.0 + r) * R[db_labels[start:stop]] - r * R_all)
        lo, hi = np.searchsorted(ubar_rows, [start, stop])
        Q[ubar_rows[lo:hi] - start] -= 2.0 * lam * ubar[lo:hi]
        block = V[start:stop].astype(dtype)
        for _ in range(sweeps):
            for k in range(c):
                x = Q[:, k] + 2.0 * (block @ M[:, k] - block[:, k] * diag[k])
                block[:, k] = np.where(x >= 0, -1.0, 1.0)
        V[start:stop] = block.astype(np.int8)
    return V


def code_step_from_stats_torch(V: np.ndarray, db_labels: np.ndarray, M: np.ndarray,
                               R: np.ndarray, r: float, lam: float,
                               ubar_rows: np.ndarray | None = None,
                               ubar: np.ndarray | None = None, sweeps: int = 1,
                               device: torch.device | str = "cpu", chunk: int = 1 << 20,
                               dtype: torch.dtype = torch.float32) -> np.ndarray:
    """:func:`code_step_from_stats` with the arithmetic in torch on ``device`` (a GPU for large
    databases): the same bit-by-bit updates in the same order, on blocks of ``chunk`` rows.

    The statistics stay float32 (``dtype``) as in the numpy form; results agree with it except
    where a bit's argument is within float rounding of 0 (tested equal in float64).

    Returns:
        ``V`` (int8 (n, c), updated in place).
    """
    n, c = V.shape
    dev = torch.device(device)
    M_t = torch.as_tensor(np.asarray(M), dtype=dtype, device=dev)
    R_t = torch.as_tensor(np.asarray(R), dtype=dtype, device=dev)
    R_all = R_t.sum(0)
    diag = torch.diagonal(M_t).clone()
    if ubar_rows is None:
        ubar_rows, ubar = np.zeros(0, np.int64), np.zeros((0, c), np.float32)
    labels_t = torch.as_tensor(np.asarray(db_labels, np.int64), device=dev)
    two_c = 2.0 * c
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        Q = -two_c * ((1.0 + r) * R_t[labels_t[start:stop]] - r * R_all)
        lo, hi = np.searchsorted(ubar_rows, [start, stop])
        if hi > lo:
            local = torch.as_tensor(ubar_rows[lo:hi] - start, device=dev)
            Q[local] -= 2.0 * lam * torch.as_tensor(ubar[lo:hi], dtype=dtype, device=dev)
        block = torch.as_tensor(V[start:stop], device=dev).to(dtype)
        for _ in range(sweeps):
            for k in range(c):
                x = Q[:, k] + 2.0 * (block @ M_t[:, k] - block[:, k] * diag[k])
                block[:, k] = torch.where(x >= 0, -1.0, 1.0)
        V[start:stop] = block.to(torch.int8).cpu().numpy()
    return V
