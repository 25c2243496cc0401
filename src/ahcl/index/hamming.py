"""Hamming distances between packed codes: the numpy reference kernel.

Codes are packed ``uint8 (n, n_bits // 8)`` as in :mod:`ahcl.index.packing`. The distance between
two codes is the popcount of their XOR; the XOR is taken on the widest unsigned word view
(``uint64``, ``uint32``, ``uint16`` or ``uint8``) that divides the byte width, so a 64-bit code is
one XOR and one ``np.bitwise_count`` per pair. Compiled kernels live elsewhere; this one is the exact
reference they are tested against.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

_WORDS = (np.uint64, np.uint32, np.uint16, np.uint8)


def as_words(codes: np.ndarray) -> np.ndarray:
    """View packed codes as ``(n, n_words)`` unsigned words, the widest dtype that fits.

    Args:
        codes: ``uint8 (n, n_bytes)`` packed codes.

    Returns:
        A C-contiguous view (or copy when ``codes`` was not contiguous) of dtype ``uint64`` when
        ``n_bytes % 8 == 0``, else ``uint32`` / ``uint16`` / ``uint8``.
    """
    codes = np.ascontiguousarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2:
        raise ValueError(f"packed codes must be uint8 (n, n_bits/8), got {codes.dtype} {codes.shape}")
    for word in _WORDS:
        size = np.dtype(word).itemsize
        if codes.shape[1] % size == 0:
            return codes.view(word)
    raise AssertionError("unreachable: uint8 always divides")  # pragma: no cover


def distance_block(query_words: np.ndarray, db_words: np.ndarray, out: np.ndarray,
                   scratch: np.ndarray | None = None) -> np.ndarray:
    """Write Hamming distances of word-viewed codes into ``out`` and return it.

    Args:
        query_words: ``(c, n_words)`` words from :func:`as_words`.
        db_words: ``(n, n_words)`` words of the same dtype.
        out: ``(c, n)`` ``uint8`` or ``uint16`` array (``uint8`` only when ``n_bits <= 255``).
        scratch: optional ``(c, n)`` array of the word dtype reused for the XOR, so repeated
            calls do not allocate.

    Returns:
        ``out``.
    """
    c, n = out.shape
    if scratch is None or scratch.shape != (c, n) or scratch.dtype != query_words.dtype:
        scratch = np.empty((c, n), dtype=query_words.dtype)
    # Word by word: the XOR temporary stays (c, n) whatever the code width.
    for w in range(query_words.shape[1]):
        np.bitwise_xor(query_words[:, w, None], db_words[None, :, w], out=scratch)
        if w == 0:
            np.bitwise_count(scratch, out=out, casting="unsafe")
        else:
            out += np.bitwise_count(scratch)
    return out


def _check_pair(query_codes: np.ndarray, db_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    qw, dw = as_words(query_codes), as_words(db_codes)
    if np.shape(query_codes)[1] != np.shape(db_codes)[1]:
        raise ValueError(f"query codes have {np.shape(query_codes)[1] * 8} bits but database "
                         f"codes have {np.shape(db_codes)[1] * 8}; encode both with the same n_bits")
    return qw, dw


def hamming_distances(query_codes: np.ndarray, db_codes: np.ndarray) -> np.ndarray:
    """All Hamming distances between two sets of packed codes.

    Args:
        query_codes: ``uint8 (nq, n_bits // 8)``.
        db_codes: ``uint8 (n, n_bits // 8)``.

    Returns:
        ``uint16 (nq, n)`` distances in ``0..n_bits``. This allocates ``2 * nq * n`` bytes; use
        :func:`hamming_distances_chunks` to bound memory.
    """
    qw, dw = _check_pair(query_codes, db_codes)
    out = np.empty((qw.shape[0], dw.shape[0]), dtype=np.uint16)
    if out.size:
        distance_block(qw, dw, out)
    return out


def hamming_distances_chunks(query_codes: np.ndarray, db_codes: np.ndarray,
                             chunk: int = 256) -> Iterator[tuple[int, np.ndarray]]:
    """Hamming distances one block of queries at a time.

    Args:
        query_codes: ``uint8 (nq, n_bits // 8)``.
        db_codes: ``uint8 (n, n_bits // 8)``.
        chunk: queries per block (at least 1).

    Yields:
        ``(start, dist)``: ``dist`` is a fresh ``uint16 (min(chunk, nq - start), n)`` array with
        the distances of queries ``start:start + len(dist)``.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    qw, dw = _check_pair(query_codes, db_codes)
    scratch = np.empty((min(chunk, qw.shape[0]), dw.shape[0]), dtype=qw.dtype)
    for start in range(0, qw.shape[0], chunk):
        block = qw[start:start + chunk]
        out = np.empty((block.shape[0], dw.shape[0]), dtype=np.uint16)
        distance_block(block, dw, out, scratch[:block.shape[0]])
        yield start, out
