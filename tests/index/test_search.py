"""HammingIndex search, range search, MIH and bookkeeping against brute-force references.

The search and range-search properties run on every kernel path (``ahcl.index.simd.PATHS``),
forced one at a time: each compiles and runs on any CPU, so each is checked here whatever the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ahcl.index import HammingIndex, HammingIndexError, pack_codes, search_results, simd
from ahcl.index.mih import MultiIndexHash, plan_substrings
from tests.index._reference import N_BITS, brute_knn, brute_range, tied_codes

cases = st.fixed_dictionaries({
    "n_bits": st.sampled_from(N_BITS),
    "n": st.integers(0, 70),
    "distinct": st.integers(1, 6),
    "k": st.integers(1, 90),
    "seed": st.integers(0, 2**32 - 1),
    "shuffle_ids": st.booleans(),
    "split": st.integers(0, 70),
})


def _build(c: dict, mih: bool = False) -> tuple[HammingIndex, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(c["seed"])
    db = tied_codes(rng, c["n"], c["n_bits"], c["distinct"])
    ids = (rng.permutation(10 * c["n"] + 1)[:c["n"]] if c["shuffle_ids"]
           else np.arange(c["n"])).astype(np.int64)
    index = HammingIndex(c["n_bits"], mih=mih, threads=1)
    cut = min(c["split"], c["n"])  # two segments: the scan carries state across them
    index.add(db[:cut], ids=ids[:cut])
    index.add(db[cut:], ids=ids[cut:])
    queries = np.concatenate([db[:2], tied_codes(rng, 3, c["n_bits"], 2)])
    return index, db, ids, queries


@pytest.mark.parametrize("path", simd.PATHS)
@settings(max_examples=60, deadline=None)
@given(c=cases)
def test_search_matches_brute_force(path: str, c: dict) -> None:
    index, db, ids, queries = _build(c)
    with simd.use_path(path):
        d, i = index.search(queries, c["k"])
    ref_d, ref_i = brute_knn(queries, db, ids, c["k"], c["n_bits"])
    assert d.dtype == np.int32 and i.dtype == np.int64 and d.shape == (len(queries), c["k"])
    np.testing.assert_array_equal(d, ref_d)
    np.testing.assert_array_equal(i, ref_i)


@settings(max_examples=40, deadline=None)
@given(cases)
def test_mih_equals_flat(c: dict) -> None:
    index, db, ids, queries = _build(c, mih=True)
    d, i = index.search(queries, c["k"])
    ref_d, ref_i = brute_knn(queries, db, ids, c["k"], c["n_bits"])
    np.testing.assert_array_equal(d, ref_d)
    np.testing.assert_array_equal(i, ref_i)


@pytest.mark.parametrize("path", simd.PATHS)
@settings(max_examples=40, deadline=None)
@given(c=cases, radius=st.integers(-1, 40))
def test_range_search_matches_brute_force(path: str, c: dict, radius: int) -> None:
    index, db, ids, queries = _build(c)
    with simd.use_path(path):
        lims, d, i = index.range_search(queries, radius)
    assert lims.dtype == np.int64 and d.dtype == np.int32 and i.dtype == np.int64
    expected = brute_range(queries, db, ids, radius)
    got = [list(zip(d[lims[r]:lims[r + 1]].tolist(), i[lims[r]:lims[r + 1]].tolist()))
           for r in range(len(queries))]
    assert got == expected


@settings(max_examples=30, deadline=None)
@given(cases, st.data())
def test_removals(c: dict, data: st.DataObject) -> None:
    index, db, ids, queries = _build(c)
    gone = data.draw(st.lists(st.sampled_from(ids.tolist()), unique=True)) if len(ids) else []
    assert index.remove(gone + [10**12]) == len(gone)
    keep = ~np.isin(ids, gone)
    assert len(index) == int(keep.sum())
    d, i = index.search(queries, c["k"])
    ref_d, ref_i = brute_knn(queries, db[keep], ids[keep], c["k"], c["n_bits"])
    np.testing.assert_array_equal(d, ref_d)
    np.testing.assert_array_equal(i, ref_i)


def test_mih_on_clustered_codes_answers_without_fallback() -> None:
    rng = np.random.default_rng(3)
    centres = rng.integers(0, 2, size=(20, 64))
    bits = centres[rng.integers(0, 20, size=5000)]
    bits ^= rng.random(bits.shape) < 0.05
    db = np.packbits(bits.astype(np.uint8), axis=1, bitorder="little")
    index = HammingIndex(64, threads=1)
    index.add(db)
    queries = db[rng.integers(0, 5000, size=30)]
    ref_d, ref_i = index.search(queries, 10)
    index.build_mih()
    words = index._segment_words()[0]
    out = [np.empty((30, 10), dtype=t) for t in (np.int32, np.int64, np.int64)]
    done = MultiIndexHash(words, 64).search(index._queries(queries), index.ids, 10, *out)
    assert done.all()  # the MIH path itself answered every query
    np.testing.assert_array_equal(out[0], ref_d)
    np.testing.assert_array_equal(out[2], ref_i)
    assert index.mih_nbytes > 0
    # a tiny budget gives some queries back (for the flat scan); the ones answered are exact
    out = [np.full((30, 10), -7, dtype=t) for t in (np.int32, np.int64, np.int64)]
    done = MultiIndexHash(words, 64).search(index._queries(queries), index.ids, 10, *out,
                                            budget_fraction=0.0)
    assert not done.all()
    np.testing.assert_array_equal(out[2][done], ref_i[done])
    np.testing.assert_array_equal(index.search(queries, 10)[1], ref_i)


def test_plan_substrings_covers_every_bit_once() -> None:
    for n_bits in N_BITS:
        subs = plan_substrings(n_bits, 10_000)
        covered = np.zeros(((n_bits + 63) // 64) * 64, dtype=int)
        for word, shift, width in subs:
            covered[64 * word + shift: 64 * word + shift + width] += 1
        assert covered[:n_bits].tolist() == [1] * n_bits and covered[n_bits:].sum() == 0


def test_hand_worked_example_with_ties_and_padding() -> None:
    index = HammingIndex(8)
    #                 bits 0..7 (little): distances to query 0b00000000 are 0, 1, 1, 2
    index.add(np.array([[0b00000000], [0b00000001], [0b10000000], [0b00000011]], np.uint8),
              ids=[7, 5, 3, 9])
    d, i = index.search(np.array([[0]], np.uint8), 6)
    assert d.tolist() == [[0, 1, 1, 2, 9, 9]]
    assert i.tolist() == [[7, 3, 5, 9, -1, -1]]


def test_default_ids_labels_meta_and_pm1_input() -> None:
    index = HammingIndex(16)
    pm1 = np.where(np.random.default_rng(0).random((3, 16)) < 0.5, -1, 1)
    assert index.add(pm1, labels=[2, -1, 0], meta=[{"path": "a"}, None, {"path": "c"}]).tolist() \
        == [0, 1, 2]
    assert index.add(pack_codes(pm1[:1]), ids=[10]).tolist() == [10]
    assert index.add(pack_codes(pm1[:1])).tolist() == [11]
    assert index.labels_of([2, 0, 10]).tolist() == [0, 2, -1]
    assert index.meta_of([0, 1, 11]) == [{"path": "a"}, None, None]
    hits = search_results(index, pm1[:1], 2)
    assert hits[0][0].distance == 0 and hits[0][0].id == 0
    assert hits[0][0].label == 2 and hits[0][0].meta == {"path": "a"}
    assert hits[0][0].path == "a" and hits[0][0].class_name is None


def test_errors_are_one_line_user_errors() -> None:
    index = HammingIndex(64)
    index.add(np.zeros((2, 8), np.uint8))
    with pytest.raises(HammingIndexError, match="already in the index"):
        index.add(np.zeros((1, 8), np.uint8), ids=[1])
    with pytest.raises(HammingIndexError, match="duplicate ids"):
        index.add(np.zeros((2, 8), np.uint8), ids=[5, 5])
    with pytest.raises(HammingIndexError, match="32 bits"):
        index.search(np.zeros((1, 4), np.uint8), 1)
    with pytest.raises(HammingIndexError, match="k must be"):
        index.search(np.zeros((1, 8), np.uint8), 0)
    with pytest.raises(HammingIndexError, match="not in the index"):
        index.labels_of([99])
    with pytest.raises(HammingIndexError, match="multiple of 8"):
        HammingIndex(12)


def test_errors_carry_their_facts_as_fields() -> None:
    index = HammingIndex(64)
    index.add(np.zeros((2, 8), np.uint8))
    with pytest.raises(ValueError) as info:  # HammingIndexError is a ValueError
        index.add(np.zeros((1, 8), np.uint8), ids=[1])
    assert isinstance(info.value, HammingIndexError) and info.value.id == 1
    with pytest.raises(HammingIndexError) as info:
        index.search(np.zeros((1, 4), np.uint8), 1)
    assert (info.value.n_bits, info.value.got_bits) == (64, 32)
    with pytest.raises(HammingIndexError) as info:
        index.codes_of([99])
    assert info.value.id == 99 and str(info.value) == "id 99 is not in the index"
    with pytest.raises(HammingIndexError) as info:
        index.search(np.zeros((1, 8), np.uint8), 0)
    assert info.value.k == 0


def test_empty_index_and_no_queries() -> None:
    index = HammingIndex(128)
    d, i = index.search(np.zeros((2, 16), np.uint8), 3)
    assert (d == 129).all() and (i == -1).all()
    lims, d, i = index.range_search(np.zeros((2, 16), np.uint8), 128)
    assert lims.tolist() == [0, 0, 0] and d.shape == (0,)
    index.add(np.zeros((1, 16), np.uint8))
    d, i = index.search(np.zeros((0, 16), np.uint8), 3)
    assert d.shape == (0, 3)


def test_threads_do_not_change_results() -> None:
    rng = np.random.default_rng(5)
    db = tied_codes(rng, 3000, 64, 40)
    queries = tied_codes(rng, 37, 64, 40)
    one, two = HammingIndex(64, threads=1), HammingIndex(64, threads=2)
    one.add(db)
    two.add(db)
    for k in (1, 50, 500):
        np.testing.assert_array_equal(one.search(queries, k)[1], two.search(queries, k)[1])


@pytest.mark.parametrize("path", simd.PATHS)
@pytest.mark.parametrize("n_bits", [24, 64, 256])
def test_compaction_with_heavy_ties_matches_brute_force(n_bits: int, path: str) -> None:
    # far more codes than the candidate buffer, so the running bound and tie-by-id pruning run
    rng = np.random.default_rng(n_bits)
    db = tied_codes(rng, 2500, n_bits, 12)
    ids = rng.permutation(10**6)[:2500].astype(np.int64)
    queries = tied_codes(rng, 4, n_bits, 12)
    for mih in (False, True):
        index = HammingIndex(n_bits, mih=mih, threads=1)
        index.add(db[:1000], ids=ids[:1000])
        index.add(db[1000:], ids=ids[1000:])
        for k in (1, 7, 300):
            ref_d, ref_i = brute_knn(queries, db, ids, k, n_bits)
            with simd.use_path(path):
                d, i = index.search(queries, k)
            np.testing.assert_array_equal(d, ref_d)
            np.testing.assert_array_equal(i, ref_i)


def test_codes_of_returns_stored_codes_across_segments():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (5, 4), dtype=np.uint8)
    b = rng.integers(0, 256, (3, 4), dtype=np.uint8)
    index = HammingIndex(32)
    index.add(a)
    index.add(b, ids=[100, 7, 50])
    np.testing.assert_array_equal(index.codes_of([7, 0, 4, 100]), np.stack([b[1], a[0], a[4], b[0]]))
    with pytest.raises(ValueError):
        index.codes_of([999])


@pytest.mark.parametrize("ids, message", [
    ([-1], "ids must be in 0"), ([1000.5], "ids must be integers"), ([2**63 - 1], "0.."),
    ([True], "ids must be integers"),
])
def test_add_refuses_ids_that_break_the_contract(ids, message) -> None:
    index = HammingIndex(8)
    with pytest.raises(HammingIndexError, match=message):
        index.add(np.zeros((1, 1), np.uint8), ids=ids)
    assert len(index) == 0


@pytest.mark.parametrize("k", [1.7, "3", True, 0])
def test_k_must_be_an_integer(k) -> None:
    index = HammingIndex(8)
    index.add(np.zeros((2, 1), np.uint8))
    with pytest.raises(HammingIndexError, match="k must be an integer"):
        index.search(np.zeros((1, 1), np.uint8), k)


def test_absurd_k_is_refused_not_allocated() -> None:
    """#16: k = 10**9 on a 128-item index used to size its output by k (OOM)."""
    rng = np.random.default_rng(0)
    for index in (HammingIndex(64), HammingIndex(64, semantic_bits=16)):
        index.add(rng.integers(0, 256, (128, 8), dtype=np.uint8))
        q = rng.integers(0, 256, (3, 8), dtype=np.uint8)
        with pytest.raises(HammingIndexError, match="ask for at most 128"):
            index.search(q, 10**9)
        d, i = index.search(q, 1000)  # modest padding still follows the faiss contract
        assert d.shape == (3, 1000) and (i[:, 128:] == -1).all()
