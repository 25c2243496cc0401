"""Kernel paths (``ahcl.index.simd``): choice, forcing, and each path's pieces against references.

Every path is plain LLVM IR that compiles on any CPU, so every path is forced and checked here,
whatever CPU runs the tests (``test_search.py`` runs its properties on each path as well).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import ahcl.index.index as index_module
from ahcl.errors import UnknownNameError
from ahcl.index import HammingIndex, kernels, planes, selection, simd
from tests.index._reference import brute_distances, fast_knn, tied_codes

AVX512_CPU = frozenset({"popcnt", "avx2", "avx512f", "avx512vpopcntdq"})
AVX2_CPU = frozenset({"popcnt", "avx2"})


def _words(codes: np.ndarray) -> np.ndarray:
    """``uint64 (n * W,)`` flat rows of packed codes, zero padded (the kernels' input)."""
    w = -(-codes.shape[1] // 8)
    padded = np.zeros((codes.shape[0], 8 * w), dtype=np.uint8)
    padded[:, :codes.shape[1]] = codes
    return padded.view(np.uint64).reshape(-1)


# ---------------------------------------------------------------- choosing and forcing


def test_best_path_follows_the_features() -> None:
    assert simd.best_path(AVX512_CPU) == "avx512"
    assert simd.best_path(AVX512_CPU, n_bits=64) == "avx512"
    assert simd.best_path(AVX512_CPU, n_bits=32) == "avx2"  # 32 planes beat a 64-bit popcount
    assert simd.best_path(AVX2_CPU) == simd.best_path(AVX2_CPU, n_bits=256) == "avx2"
    assert simd.best_path(frozenset({"popcnt", "sse4.2"})) == "popcnt"
    assert simd.best_path(frozenset({"avx512f", "avx2"})) == "avx2"  # AVX-512 without VPOPCNTQ


def test_target_features_follow_numba_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simd.numba.config, "CPU_FEATURES", "+avx2,-avx512f,+popcnt")
    assert simd.target_features() == {"avx2", "popcnt"}
    assert simd.best_path() == "avx2"


def test_environment_variable_forces_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in simd.PATHS:
        monkeypatch.setenv(simd.ENV, name.upper())
        assert simd.current_path() == name and simd.path_code() == simd.PATHS.index(name)
    monkeypatch.setenv(simd.ENV, "auto")
    assert simd.current_path(64) == simd.best_path(n_bits=64)
    monkeypatch.setenv(simd.ENV, "sse9")
    with pytest.raises(UnknownNameError) as info:
        simd.current_path()
    assert info.value.name == "sse9" and set(simd.PATHS) <= set(info.value.choices)
    assert simd.ENV in str(info.value) and "\n" not in str(info.value)


def test_use_path_is_scoped_to_the_block_and_the_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(simd.ENV, "popcnt")
    seen: list[str] = []
    with simd.use_path("avx2"):
        assert simd.current_path() == "avx2"  # over the environment variable
        other = threading.Thread(target=lambda: seen.append(simd.current_path()))
        other.start()
        other.join()
        with simd.use_path("auto"):
            assert simd.current_path(64) == simd.best_path(n_bits=64)
        assert simd.current_path() == "avx2"
    assert seen == ["popcnt"] and simd.current_path() == "popcnt"
    with pytest.raises(UnknownNameError), simd.use_path("neon"):
        pass


def test_cpu_summary_names_a_model_and_a_path() -> None:
    summary = simd.cpu_summary()
    assert summary["model"] and summary["best_path"] in simd.PATHS
    assert set(summary["simd"]) <= simd.target_features()


# ---------------------------------------------------------------- the pieces of each path


@pytest.mark.parametrize("n_bits", [8, 16, 24, 64, 72, 128, 192, 256, 1024])
def test_bit_planes_hold_each_rows_bits(n_bits: int) -> None:
    rng = np.random.default_rng(n_bits)
    n = 300  # two blocks, the second one partly empty
    codes = rng.integers(0, 256, size=(n, n_bits // 8), dtype=np.uint8)
    n_planes = planes.n_planes(n_bits)
    got = planes.to_planes(_words(codes), n, -(-n_bits // 64), n_planes)
    got = got.reshape(2, n_planes, 4)
    bits = np.unpackbits(codes, axis=1, bitorder="little")
    for row in (0, 1, 63, 64, 200, 255, 256, 299):
        blk, lane, bit = row // 256, row % 256 // 64, row % 64
        plane_bits = (got[blk, :, lane] >> np.uint64(bit)) & np.uint64(1)
        np.testing.assert_array_equal(plane_bits[:n_bits], bits[row])
        assert not plane_bits[n_bits:].any()  # padding planes are zero
    # rows past n (300): lanes 1-3 of block 1, and bits 44.. of its lane 0, are zero
    assert not got[1, :, 1:].any() and not (got[1, :, 0] >> np.uint64(44)).any()
    masks = planes.query_masks(_words(codes[:3]).reshape(3, -1), n_planes)
    np.testing.assert_array_equal(masks[:, :n_bits] != 0, bits[:3].astype(bool))
    assert not masks[:, n_bits:].any()


@pytest.mark.parametrize("path", simd.PATHS)
@pytest.mark.parametrize("n_bits", [8, 16, 24, 64, 128, 192, 256, 320])
def test_tile_masks_mark_exactly_the_rows_within_t(path: str, n_bits: int) -> None:
    rng = np.random.default_rng(n_bits)
    # a full tile; 300 rows, filling no group of 64 and no block of 256 (the rows after them
    # exist and must stay unmarked); 320 rows, filling groups of 64 but no block of 256
    n = 2048 + 320
    db = tied_codes(rng, n, n_bits, 50)
    q = tied_codes(rng, 1, n_bits, 1)
    words, w = _words(db), -(-n_bits // 64)
    qw = _words(q)
    code = simd.PATHS.index(path)
    n_planes = planes.n_planes(n_bits)
    bits = planes.to_planes(words, n, w, n_planes) if code == simd.AVX2 else np.zeros(0, np.uint64)
    qmask = planes.query_masks(qw.reshape(1, w), n_planes)[0]
    n_groups, hi = kernels._plane_geometry(n_planes, n_bits)
    dist = brute_distances(q, db)[0]
    for t in sorted({0, 1, int(np.median(dist)), int(dist.min()), n_bits - 1, n_bits}):
        for start, stop in ((0, 2048), (2048, 2348), (2048, n)):
            cols = np.empty(2048 * w if code == simd.AVX512 and w > 1 else 0, dtype=np.uint64)
            kernels.tile_cols(code, words, w, start, stop, cols)
            masks = np.full(32, 0xDEAD, dtype=np.uint64)
            any_ = kernels.tile_masks(code, qw, qmask, words, cols, bits, w, n_groups, hi, start,
                                      stop, t, masks)
            used = -(-(stop - start) // 64)
            got = np.unpackbits(masks[:used].view(np.uint8), bitorder="little")[:stop - start]
            np.testing.assert_array_equal(got.astype(bool), dist[start:stop] <= t)
            assert bool(any_) == bool((dist[start:stop] <= t).any())
            if used * 64 > stop - start:  # the rows past the end of a partial word stay clear
                assert masks[used - 1] >> np.uint64((stop - start) % 64) == 0


def test_compact_keeps_the_k_best_by_distance_then_id() -> None:
    # positions 0..7 with ids 70, 10, 60, 20, 50, 30, 40, 0; distances below
    ids = np.array([70, 10, 60, 20, 50, 30, 40, 0], dtype=np.int64)
    bd = np.array([3, 1, 1, 2, 1, 5, 1, 4], dtype=np.int32)
    bp = np.arange(8, dtype=np.int64)
    bound, hist = np.zeros(2, dtype=np.int64), np.full(8, 99, dtype=np.int64)
    cnt = selection.compact(3, 6, 8, bd, bp, ids, bound, hist)
    # distance 1 holds ids 10, 60, 50, 40: the 3 smallest are 10, 40, 50
    assert cnt == 3 and sorted(ids[bp[:3]].tolist()) == [10, 40, 50]
    assert bound.tolist() == [1, 50] and hist.tolist() == [0, 3, 0, 0, 0, 0, 0, 0]
    out = [np.empty(5, dtype=t) for t in (np.int32, np.int64, np.int64)]
    selection.finish_one(5, 6, cnt, bd, bp, ids, bound, *out)
    assert out[0].tolist() == [1, 1, 1, 7, 7] and out[2].tolist() == [10, 40, 50, -1, -1]


def test_tie_id_without_sorting_ascending_ties() -> None:
    ids = np.arange(10, dtype=np.int64) * 3
    bd = np.array([2, 2, 1, 2, 2, 2, 0, 2, 2, 2], dtype=np.int32)
    bp = np.arange(10, dtype=np.int64)
    assert selection.kth_tie_id(2, 4, 8, 10, bd, bp, ids) == 12  # ascending: the 4th in order
    bp = bp[::-1].copy()  # ties now in descending id order: the selection path
    assert selection.kth_tie_id(2, 4, 8, 10, bd, bp, ids) == 12


# ---------------------------------------------------------------- large k: the seeded bound


@pytest.mark.parametrize("path", simd.PATHS)
@pytest.mark.parametrize("rank", [None, 0.0, 50.0])
def test_seeded_large_k_search_is_exact(path: str, rank: float | None,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # k = 300 over 60,000 codes samples a bound first. SEED_RANK 0 makes the sampled bound too
    # low for every query (each is scanned again without it); 50 makes it loose (many enter).
    if rank is not None:
        monkeypatch.setattr(index_module, "SEED_RANK", rank)
    rng = np.random.default_rng(7)
    n, n_bits, k = 60_000, 64, 300
    db = tied_codes(rng, n, n_bits, 20_000)
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    queries = np.concatenate([db[:3], tied_codes(rng, 3, n_bits, 3)])
    index = HammingIndex(n_bits, threads=2)
    index.add(db[:45_000], ids=ids[:45_000])
    index.add(db[45_000:], ids=ids[45_000:])
    seeded = []
    real_seed = index._seed_bounds
    monkeypatch.setattr(index, "_seed_bounds",
                        lambda *a: seeded.append(real_seed(*a)) or seeded[-1])
    with simd.use_path(path):
        d, i = index.search(queries, k)
    assert seeded[0]  # the sample was used (and, with SEED_RANK 0, then refused)
    ref_d, ref_i = fast_knn(queries, db, ids, k, n_bits)
    np.testing.assert_array_equal(d, ref_d)
    np.testing.assert_array_equal(i, ref_i)
