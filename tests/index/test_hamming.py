"""Hamming distances against an explicit unpackbits loop, for every word width."""

from __future__ import annotations

import numpy as np
import pytest

from ahcl.index.hamming import as_words, hamming_distances, hamming_distances_chunks
from ahcl.index.packing import pack_codes


def _loop_distances(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    qb = np.unpackbits(q, axis=1)
    db_bits = np.unpackbits(db, axis=1)
    out = np.zeros((len(q), len(db)), dtype=np.int64)
    for i in range(len(q)):
        for j in range(len(db)):
            out[i, j] = int(np.sum(qb[i] != db_bits[j]))
    return out


@pytest.mark.parametrize("n_bits", [8, 16, 24, 40, 64, 128, 1024])
def test_matches_unpackbits_loop(n_bits: int) -> None:
    rng = np.random.default_rng(n_bits)
    q = rng.integers(0, 256, (7, n_bits // 8), dtype=np.uint8)
    db = rng.integers(0, 256, (11, n_bits // 8), dtype=np.uint8)
    db[3] = q[2]  # a zero distance
    db[4] = ~q[1]  # the largest distance
    got = hamming_distances(q, db)
    assert got.dtype == np.uint16 and got.shape == (7, 11)
    want = _loop_distances(q, db)
    np.testing.assert_array_equal(got, want)
    assert got[2, 3] == 0 and got[1, 4] == n_bits


def test_hand_worked() -> None:
    # Bytes 0b00000000, 0b00000111, 0b11111111: distances 3, 8 from zero, 5 between the others.
    q = np.array([[0], [7]], dtype=np.uint8)
    db = np.array([[0], [7], [255]], dtype=np.uint8)
    np.testing.assert_array_equal(hamming_distances(q, db), [[0, 3, 8], [3, 0, 5]])


def test_pm1_codes_agree_with_packed_loop() -> None:
    rng = np.random.default_rng(1)
    pm1 = rng.choice([-1, 1], size=(5, 64))
    packed = pack_codes(pm1)
    want = (pm1[:, None, :] != pm1[None, :, :]).sum(axis=2)
    np.testing.assert_array_equal(hamming_distances(packed, packed), want)


@pytest.mark.parametrize("width, dtype", [(8, np.uint64), (4, np.uint32), (6, np.uint16),
                                          (3, np.uint8)])
def test_word_view(width: int, dtype: type) -> None:
    words = as_words(np.zeros((2, width), dtype=np.uint8))
    assert words.dtype == dtype and words.shape == (2, width // np.dtype(dtype).itemsize)


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_chunks_cover_all_queries(chunk: int) -> None:
    rng = np.random.default_rng(2)
    q = rng.integers(0, 256, (7, 16), dtype=np.uint8)
    db = rng.integers(0, 256, (9, 16), dtype=np.uint8)
    full = hamming_distances(q, db)
    starts, blocks = zip(*hamming_distances_chunks(q, db, chunk=chunk))
    assert list(starts) == list(range(0, 7, chunk))
    assert all(b.dtype == np.uint16 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), full)
    # Blocks are fresh arrays: a kept block must not be overwritten by later ones.
    np.testing.assert_array_equal(blocks[0], full[:len(blocks[0])])


def test_rejects_mismatched_widths() -> None:
    with pytest.raises(ValueError, match="same n_bits"):
        hamming_distances(np.zeros((1, 8), np.uint8), np.zeros((1, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        hamming_distances(np.zeros((1, 8), np.int64), np.zeros((1, 8), np.int64))
    with pytest.raises(ValueError, match="chunk"):
        next(hamming_distances_chunks(np.zeros((1, 8), np.uint8), np.zeros((1, 8), np.uint8), 0))
