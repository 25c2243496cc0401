"""Split indexes (``semantic_bits``): search, range search and files against a brute-force
(semantic distance, instance distance, id) reference, on every kernel path.

The data have many exact ties: the semantic parts come from a few patterns (large groups at one
semantic distance), the instance parts from a few more, and whole codes repeat.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ahcl.errors import IndexFileError
from ahcl.index import HammingIndex, HammingIndexError, Hit, lexicographic, search_results, simd
from ahcl.index import format as fmt
from ahcl.index.hits import hits_from_rows

SPLITS = [(16, 8), (64, 16), (128, 32), (72, 8), (256, 64), (96, 40)]


# ---------------------------------------------------------------- reference and data


def split_distances(queries: np.ndarray, db: np.ndarray, semantic_bits: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``int64 (nq, n)`` semantic and instance Hamming distances (numpy popcount of bytes)."""
    cut = semantic_bits // 8
    x = queries[:, None, :] ^ db[None, :, :]
    count = np.bitwise_count(x).astype(np.int64)
    return count[:, :, :cut].sum(axis=2), count[:, :, cut:].sum(axis=2)


def ref_knn(queries: np.ndarray, db: np.ndarray, ids: np.ndarray, k: int, n_bits: int,
            semantic_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k by (semantic, instance, id) with the index's padding."""
    ds, di = split_distances(queries, db, semantic_bits)
    nq = len(queries)
    out_s = np.full((nq, k), semantic_bits + 1, dtype=np.int64)
    out_i = np.full((nq, k), n_bits - semantic_bits + 1, dtype=np.int64)
    out_id = np.full((nq, k), -1, dtype=np.int64)
    for r in range(nq):
        order = np.lexsort((ids, di[r], ds[r]))[:k]
        out_s[r, :len(order)], out_i[r, :len(order)] = ds[r, order], di[r, order]
        out_id[r, :len(order)] = ids[order]
    return out_s, out_i, out_id


def ref_range(queries: np.ndarray, db: np.ndarray, ids: np.ndarray, radius: int,
              semantic_bits: int) -> list[list[tuple[int, int, int]]]:
    """Per query, the sorted ``(semantic, instance, id)`` of the rows within ``radius``."""
    ds, di = split_distances(queries, db, semantic_bits)
    return [sorted((int(ds[r, j]), int(di[r, j]), int(ids[j])) for j in range(len(db))
                   if ds[r, j] <= radius) for r in range(len(queries))]


def split_codes(rng: np.random.Generator, n: int, n_bits: int, semantic_bits: int,
                n_sem: int, n_inst: int) -> np.ndarray:
    """Codes whose semantic parts come from ``n_sem`` patterns, instance parts from ``n_inst``."""
    sem = rng.integers(0, 256, size=(n_sem, semantic_bits // 8), dtype=np.uint8)
    inst = rng.integers(0, 256, size=(n_inst, (n_bits - semantic_bits) // 8), dtype=np.uint8)
    return np.ascontiguousarray(np.concatenate(
        [sem[rng.integers(0, n_sem, size=n)], inst[rng.integers(0, n_inst, size=n)]], axis=1))


def build(rng: np.random.Generator, n: int, n_bits: int, semantic_bits: int, n_sem: int,
          n_inst: int, cuts: list[int], n_removed: int, shuffle_ids: bool, threads: int = 1,
          mih: bool = False) -> tuple[HammingIndex, np.ndarray, np.ndarray]:
    """An index in several segments (one ``add`` per piece between ``cuts``), some rows removed;
    returns it with the codes and ids it holds, in any order."""
    db = split_codes(rng, n, n_bits, semantic_bits, n_sem, n_inst)
    ids = (rng.permutation(5 * n + 1)[:n] if shuffle_ids else np.arange(n)).astype(np.int64)
    index = HammingIndex(n_bits, semantic_bits=semantic_bits, threads=threads, mih=mih)
    bounds = [0] + sorted(min(c, n) for c in cuts) + [n]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        index.add(db[lo:hi], ids=ids[lo:hi])
    gone = rng.choice(ids, size=min(n_removed, n), replace=False) if n else ids[:0]
    index.remove(gone)
    keep = ~np.isin(ids, gone)
    return index, db[keep], ids[keep]


def queries_for(rng: np.random.Generator, db: np.ndarray, n_bits: int,
                semantic_bits: int) -> np.ndarray:
    """Database codes (exact ties at 0) and fresh codes near the same semantic patterns."""
    fresh = split_codes(rng, 3, n_bits, semantic_bits, 2, 3)
    if len(db):
        fresh[:, :semantic_bits // 8] = db[rng.integers(0, len(db), size=3), :semantic_bits // 8]
    return np.concatenate([db[:2], fresh])


def check_knn(index: HammingIndex, queries: np.ndarray, db: np.ndarray, ids: np.ndarray,
              k: int) -> None:
    want_s, want_i, want_id = ref_knn(queries, db, ids, k, index.n_bits, index.semantic_bits)
    ds, di, i = index.search_split(queries, k)
    assert ds.dtype == di.dtype == np.int32 and i.dtype == np.int64
    assert ds.shape == di.shape == i.shape == (len(queries), k)
    np.testing.assert_array_equal(i, want_id)
    np.testing.assert_array_equal(ds, want_s)
    np.testing.assert_array_equal(di, want_i)
    d, i2 = index.search(queries, k)
    np.testing.assert_array_equal(d, want_s)
    np.testing.assert_array_equal(i2, want_id)
    assert np.all(np.diff(d, axis=1) >= 0)


def check_range(index: HammingIndex, queries: np.ndarray, db: np.ndarray, ids: np.ndarray,
                radius: int) -> None:
    want = ref_range(queries, db, ids, radius, index.semantic_bits)
    lims, ds, di, i = index.range_search_split(queries, radius)
    lims2, d, i2 = index.range_search(queries, radius)
    assert lims.dtype == np.int64 and ds.dtype == di.dtype == np.int32 and i.dtype == np.int64
    np.testing.assert_array_equal(lims, lims2)
    np.testing.assert_array_equal(ds, d)
    np.testing.assert_array_equal(i, i2)
    for r in range(len(queries)):
        lo, hi = lims[r], lims[r + 1]
        assert list(zip(ds[lo:hi].tolist(), di[lo:hi].tolist(), i[lo:hi].tolist())) == want[r]


# ---------------------------------------------------------------- properties


cases = st.fixed_dictionaries({
    "split": st.sampled_from(SPLITS),
    "n": st.integers(0, 120),
    "n_sem": st.integers(1, 4),
    "n_inst": st.integers(1, 6),
    "cuts": st.lists(st.integers(0, 120), max_size=3),
    "removed": st.integers(0, 10),
    "shuffle_ids": st.booleans(),
    "k": st.integers(1, 140),
    "radius": st.integers(-1, 70),
    "threads": st.sampled_from([1, 2]),
    "seed": st.integers(0, 2**32 - 1),
})


@pytest.mark.parametrize("path", simd.PATHS)
@settings(max_examples=40, deadline=None)
@given(c=cases)
def test_split_search_matches_brute_force(path: str, c: dict) -> None:
    n_bits, semantic_bits = c["split"]
    rng = np.random.default_rng(c["seed"])
    index, db, ids = build(rng, c["n"], n_bits, semantic_bits, c["n_sem"], c["n_inst"],
                           c["cuts"], c["removed"], c["shuffle_ids"], c["threads"])
    queries = queries_for(rng, db, n_bits, semantic_bits)
    with simd.use_path(path):
        check_knn(index, queries, db, ids, c["k"])
        check_range(index, queries, db, ids, c["radius"] % (semantic_bits + 2) - 1)


@pytest.mark.parametrize("path", simd.PATHS)
@pytest.mark.parametrize("n_bits,semantic_bits", SPLITS)
def test_many_tiles_compactions_and_ties(path: str, n_bits: int, semantic_bits: int) -> None:
    """Several tiles per segment, candidate buffers compacted many times, huge tie groups."""
    rng = np.random.default_rng(n_bits + semantic_bits)
    index, db, ids = build(rng, 6000, n_bits, semantic_bits, 3, 40, [2500, 2600], 300, True,
                           threads=2)
    queries = queries_for(rng, db, n_bits, semantic_bits)
    with simd.use_path(path):
        for k in (1, 7, 600, 5800):
            check_knn(index, queries, db, ids, k)
        check_range(index, queries, db, ids, 0)


def test_environment_variable_forces_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    index, db, ids = build(rng, 700, 64, 16, 2, 9, [300], 5, True)
    queries = queries_for(rng, db, 64, 16)
    for name in simd.PATHS:
        monkeypatch.setenv(simd.ENV, name)
        check_knn(index, queries, db, ids, 25)
        check_range(index, queries, db, ids, 3)


def test_large_k_seeded_search_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large k starts from a sampled bound; a bound that turns out too low scans again."""
    rng = np.random.default_rng(9)
    index, db, ids = build(rng, 20000, 64, 16, 3, 5000, [], 0, True)
    queries = queries_for(rng, db, 64, 16)
    calls = []
    real = lexicographic.sample_bounds

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(lexicographic, "sample_bounds", spy)
    check_knn(index, queries, db, ids, 300)
    assert calls  # the seeded path ran
    monkeypatch.setattr(lexicographic, "sample_bounds", lambda q, *_: np.zeros(len(q), np.int64))
    check_knn(index, queries, db, ids, 300)  # every seed too low: all queries scanned again


def test_plain_index_search_split_is_search() -> None:
    rng = np.random.default_rng(3)
    db = split_codes(rng, 500, 64, 16, 3, 7)
    for semantic_bits in (None, 64):
        index = HammingIndex(64, semantic_bits=semantic_bits)
        index.add(db[:200])
        index.add(db[200:])
        assert not index.split and index.semantic_bits == 64 and index.instance_bits == 0
        for path in simd.PATHS:
            with simd.use_path(path):
                d, i = index.search(db[:6], 520)
                ds, di, i2 = index.search_split(db[:6], 520)
                np.testing.assert_array_equal(ds, d)
                np.testing.assert_array_equal(i2, i)
                assert di.dtype == np.int32 and not di.any()
                lims, d, i = index.range_search(db[:6], 20)
                lims2, ds, di, i2 = index.range_search_split(db[:6], 20)
                for x, y in ((lims, lims2), (d, ds), (i, i2)):
                    np.testing.assert_array_equal(x, y)
                assert not di.any()


def test_mih_on_a_split_index_scans_flat() -> None:
    rng = np.random.default_rng(4)
    index, db, ids = build(rng, 900, 64, 16, 3, 20, [400], 10, True, mih=True)
    queries = queries_for(rng, db, 64, 16)
    check_knn(index, queries, db, ids, 30)
    assert index.build_mih() is index and index.mih and index.mih_nbytes == 0
    check_knn(index, queries, db, ids, 30)


def test_empty_split_index_pads() -> None:
    index = HammingIndex(64, semantic_bits=16)
    ds, di, i = index.search_split(np.zeros((2, 8), np.uint8), 3)
    assert (ds == 17).all() and (di == 49).all() and (i == -1).all()
    lims, d, i = index.range_search(np.zeros((2, 8), np.uint8), 16)
    assert lims.tolist() == [0, 0, 0] and d.shape == i.shape == (0,)
    with pytest.raises(HammingIndexError):
        index.search_split(np.zeros((1, 8), np.uint8), 0)


# ---------------------------------------------------------------- construction


@pytest.mark.parametrize("bad", [0, 4, 12, -8, 72, 128, True, 8.0, "16"])
def test_bad_semantic_bits_are_refused(bad: object) -> None:
    with pytest.raises(HammingIndexError, match="semantic_bits") as info:
        HammingIndex(64, semantic_bits=bad)
    assert info.value.n_bits == 64


def test_split_properties() -> None:
    index = HammingIndex(72, semantic_bits=np.int64(8))
    assert (index.semantic_bits, index.instance_bits, index.split) == (8, 64, True)
    assert type(index.semantic_bits) is int
    assert (HammingIndex(16).semantic_bits, HammingIndex(16).split) == (16, False)


def test_keys_order_lexicographically() -> None:
    """key = R * S + I with R = 2**shift + 1 > instance_bits, so (S, I) order is key order."""
    for n_bits, semantic_bits in SPLITS + [(24, 16), (1024, 8), (1024, 1016)]:
        radix = (1 << lexicographic.key_shift(n_bits, semantic_bits)) + 1
        assert n_bits - semantic_bits < radix <= 2 * (n_bits - semantic_bits)
        assert lexicographic.max_key(n_bits, semantic_bits) == \
            semantic_bits * radix + n_bits - semantic_bits
        masks = lexicographic.split_masks(n_bits, semantic_bits)
        bits = np.unpackbits(masks.view(np.uint8), bitorder="little")
        assert bits[:semantic_bits].all() and not bits[semantic_bits:].any()


# ---------------------------------------------------------------- files


@pytest.mark.parametrize("mmap", [True, False])
def test_split_index_round_trip(tmp_path: Path, mmap: bool) -> None:
    rng = np.random.default_rng(6)
    index, db, ids = build(rng, 400, 128, 32, 3, 9, [150], 4, True)
    index.save(tmp_path / "s.ahix")
    header = fmt.read_header(tmp_path / "s.ahix")
    assert header["version"] == 2 and header["semantic_bits"] == 32
    loaded = HammingIndex.load(tmp_path / "s.ahix", mmap=mmap)
    assert (loaded.n_bits, loaded.semantic_bits, loaded.split) == (128, 32, True)
    queries = queries_for(rng, db, 128, 32)
    check_knn(loaded, queries, db, ids, 50)
    check_range(loaded, queries, db, ids, 2)
    plain = HammingIndex(128)
    plain.save(tmp_path / "p.ahix")
    assert fmt.read_header(tmp_path / "p.ahix")["semantic_bits"] == 128
    assert not HammingIndex.load(tmp_path / "p.ahix").split


def test_version_1_file_opens_as_a_plain_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    db = split_codes(rng, 300, 64, 16, 3, 9)
    index = HammingIndex(64)
    index.add(db, labels=rng.integers(0, 3, size=300))
    path = tmp_path / "v1.ahix"
    fmt.write_index(path, 64, index._next_id, index._segments, version=1)
    raw = path.read_bytes()
    assert struct.unpack_from("<I", raw, 8)[0] == 1
    assert b"semantic_bits" not in raw[:4096]
    loaded = HammingIndex.load(path, verify=True)
    assert not loaded.split and loaded.semantic_bits == 64
    for x, y in zip(loaded.search(db[:5], 20), index.search(db[:5], 20)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(loaded.labels, index.labels)
    with pytest.raises(ValueError):  # version 1 cannot hold a split index
        fmt.write_index(tmp_path / "no.ahix", 64, 0, [], semantic_bits=16, version=1)


def _rewrite_header(path: Path, change: dict) -> None:
    """Change header fields and re-sign the header, as a damaged (but consistent) file."""
    raw = bytearray(path.read_bytes())
    magic, version, hlen, _, reserved = struct.unpack_from("<8sIIII", raw, 0)
    header = json.loads(bytes(raw[24:24 + hlen]))
    header.update(change)
    body = json.dumps(header, separators=(",", ":")).encode().ljust(hlen, b" ")
    raw[24:24 + hlen] = body
    struct.pack_into("<8sIIII", raw, 0, magic, version, hlen, zlib.crc32(body), reserved)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("bad", [0, 12, 72, None, "16", 16.0])
def test_bad_semantic_bits_in_a_file_is_an_index_file_error(tmp_path: Path, bad: object) -> None:
    path = tmp_path / "s.ahix"
    index = HammingIndex(64, semantic_bits=16)
    index.add(np.zeros((3, 8), np.uint8))
    index.save(path)
    _rewrite_header(path, {"semantic_bits": bad})
    with pytest.raises(IndexFileError, match="semantic_bits"):
        HammingIndex.load(path)


def test_header_version_must_match_the_preamble(tmp_path: Path) -> None:
    path = tmp_path / "s.ahix"
    HammingIndex(64, semantic_bits=16).save(path)
    _rewrite_header(path, {"version": 1})
    with pytest.raises(IndexFileError, match="version"):
        HammingIndex.load(path)


# ---------------------------------------------------------------- hits


def test_hits_carry_the_instance_distance() -> None:
    rng = np.random.default_rng(8)
    index, db, ids = build(rng, 200, 64, 16, 2, 6, [], 0, False)
    index_meta = HammingIndex(64, semantic_bits=16)
    index_meta.add(db, labels=np.arange(200) % 3, meta=[{"path": f"/x/{j}"} for j in range(200)])
    hits = search_results(index_meta, db[:2], 5, classes=["a", "b", "c"])
    ds, di, i = index_meta.search_split(db[:2], 5)
    for row, (rs, ri, rid) in zip(hits, zip(ds, di, i)):
        assert [(h.id, h.distance, h.instance_distance) for h in row] == \
            list(zip(rid.tolist(), rs.tolist(), ri.tolist()))
    h = hits[0][0]
    assert h.to_dict()["instance_distance"] == h.instance_distance == int(di[0, 0])
    assert h.to_dict(public=True)["instance_distance"] == h.instance_distance
    assert "path" not in h.to_dict(public=True) and h.to_dict()["path"] == h.path
    plain = HammingIndex(64)
    plain.add(db)
    assert all(h.instance_distance is None for h in search_results(plain, db[:2], 5)[0])
    assert Hit(1, 2).to_dict(public=True) == {"id": 1, "distance": 2, "instance_distance": None,
                                              "label": -1, "class": None}
    made = hits_from_rows([4, 5], [0, 1], [-1, 0], classes=["a"], instance_distances=[3, 7])
    assert [(h.id, h.distance, h.instance_distance, h.class_name) for h in made] == \
        [(4, 0, 3, None), (5, 1, 7, "a")]
