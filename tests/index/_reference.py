"""Slow exact references for the index tests: unpacked bits and an explicit (distance, id) sort."""

from __future__ import annotations

import numpy as np

N_BITS = (8, 16, 24, 64, 128, 256, 1024)


def brute_distances(queries: np.ndarray, db: np.ndarray) -> np.ndarray:
    """``int64 (nq, n)`` Hamming distances by counting unequal unpacked bits."""
    qb = np.unpackbits(queries, axis=1, bitorder="little").astype(bool)
    db_bits = np.unpackbits(db, axis=1, bitorder="little").astype(bool)
    return (qb[:, None, :] != db_bits[None, :, :]).sum(axis=2).astype(np.int64)


def brute_knn(queries: np.ndarray, db: np.ndarray, ids: np.ndarray, k: int,
              n_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by (distance, id) with the index's padding (``n_bits + 1``, ``-1``)."""
    dist = brute_distances(queries, db) if len(db) else np.zeros((len(queries), 0), np.int64)
    out_d = np.full((len(queries), k), n_bits + 1, dtype=np.int64)
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    for r in range(len(queries)):
        order = sorted(range(len(db)), key=lambda j: (dist[r, j], ids[j]))[:k]
        out_d[r, :len(order)] = dist[r, order]
        out_i[r, :len(order)] = ids[order]
    return out_d, out_i


def brute_range(queries: np.ndarray, db: np.ndarray, ids: np.ndarray,
                radius: int) -> list[list[tuple[int, int]]]:
    """Per query, the sorted ``(distance, id)`` pairs within ``radius``."""
    dist = brute_distances(queries, db) if len(db) else np.zeros((len(queries), 0), np.int64)
    return [sorted((int(dist[r, j]), int(ids[j])) for j in range(len(db)) if dist[r, j] <= radius)
            for r in range(len(queries))]


def tied_codes(rng: np.random.Generator, n: int, n_bits: int, n_distinct: int) -> np.ndarray:
    """``uint8 (n, n_bits/8)`` codes drawn from only ``n_distinct`` patterns: many exact ties."""
    patterns = rng.integers(0, 256, size=(max(1, n_distinct), n_bits // 8), dtype=np.uint8)
    return patterns[rng.integers(0, len(patterns), size=n)]


def fast_knn(queries: np.ndarray, db: np.ndarray, ids: np.ndarray, k: int,
             n_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`brute_knn` for large ``db``: numpy XOR + popcount and a lexsort on (distance, id)."""
    dist = np.stack([np.bitwise_count(q[None, :] ^ db).sum(axis=1, dtype=np.int64)
                     for q in queries]) if len(db) else np.zeros((len(queries), 0), np.int64)
    out_d = np.full((len(queries), k), n_bits + 1, dtype=np.int64)
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    for r in range(len(queries)):
        order = np.lexsort((ids, dist[r]))[:k]
        out_d[r, :len(order)] = dist[r, order]
        out_i[r, :len(order)] = ids[order]
    return out_d, out_i
