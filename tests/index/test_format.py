"""Index files: round trips, append-and-resave, truncation, corruption, interrupted saves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ahcl.errors import IndexFileError
from ahcl.index import HammingIndex
from ahcl.index import format as fmt
from tests.index._reference import brute_knn, tied_codes


def _index(n_bits: int = 64, n: int = 300, seed: int = 0, meta: bool = True) -> HammingIndex:
    rng = np.random.default_rng(seed)
    index = HammingIndex(n_bits)
    index.add(tied_codes(rng, n, n_bits, 30), labels=rng.integers(-1, 5, size=n),
              meta=[{"path": f"/img/{j}.tif"} if j % 3 else None for j in range(n)] if meta
              else None)
    index.remove([4, 5])
    index.add(tied_codes(rng, 20, n_bits, 30), ids=np.arange(1000, 1020))
    return index


def _same(a: HammingIndex, b: HammingIndex, queries: np.ndarray) -> None:
    assert len(a) == len(b) and a.n_bits == b.n_bits
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.meta_of(a.ids) == b.meta_of(b.ids)
    for k in (1, 17):
        for x, y in zip(a.search(queries, k), b.search(queries, k)):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("n_bits,meta", [(8, True), (64, False), (256, True), (1024, True)])
def test_round_trip(tmp_path: Path, mmap: bool, n_bits: int, meta: bool) -> None:
    index = _index(n_bits, meta=meta)
    index.save(tmp_path / "a.ahix")
    loaded = HammingIndex.load(tmp_path / "a.ahix", mmap=mmap)
    queries = tied_codes(np.random.default_rng(1), 5, n_bits, 30)
    _same(index, loaded, queries)
    # ids continue after the largest ever added, also after a reload
    assert loaded.add(queries[:1]).tolist() == [1020]


def test_empty_round_trip(tmp_path: Path) -> None:
    HammingIndex(32).save(tmp_path / "e.ahix")
    loaded = HammingIndex.load(tmp_path / "e.ahix")
    assert len(loaded) == 0 and loaded.n_bits == 32


def test_append_to_mapped_index_and_resave_over_it(tmp_path: Path) -> None:
    path = tmp_path / "a.ahix"
    index = _index()
    index.save(path)
    loaded = HammingIndex.load(path, mmap=True)
    extra = tied_codes(np.random.default_rng(2), 50, 64, 30)
    loaded.add(extra, labels=np.full(50, 3), meta=[{"path": "new"}] * 50)
    index.add(extra, labels=np.full(50, 3), meta=[{"path": "new"}] * 50)
    loaded.save(path)  # replaces the file it is reading from
    again = HammingIndex.load(path, verify=True)
    queries = tied_codes(np.random.default_rng(3), 4, 64, 30)
    _same(index, again, queries)
    db = np.concatenate([s.codes for s in index._segments])
    ref_d, ref_i = brute_knn(queries, db, index.ids, 9, 64)
    d, i = again.search(queries, 9)
    np.testing.assert_array_equal(d, ref_d)
    np.testing.assert_array_equal(i, ref_i)


def test_truncated_file_is_always_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.ahix"
    _index(n=100).save(path)
    raw = path.read_bytes()
    cut_path = tmp_path / "cut.ahix"
    for cut in list(range(0, 64, 7)) + list(range(64, len(raw), max(1, len(raw) // 40))) \
            + [len(raw) - 1]:
        cut_path.write_bytes(raw[:cut])
        for mmap, verify in ((True, False), (False, None)):
            with pytest.raises(IndexFileError, match="truncated|runs past|bad magic"):
                HammingIndex.load(cut_path, mmap=mmap, verify=verify)
    cut_path.write_bytes(raw + b"\0")
    with pytest.raises(IndexFileError, match="trailing bytes"):
        HammingIndex.load(cut_path)


def test_corrupted_byte_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.ahix"
    _index(n=100).save(path)
    raw = bytearray(path.read_bytes())
    header = fmt.read_header(path)
    bad = tmp_path / "bad.ahix"
    places = [30]  # inside the header JSON
    places += [header["sections"][name]["offset"] + 3 for name in fmt.SECTIONS
               if header["sections"][name]["nbytes"] > 3]
    for at in places:
        flipped = bytearray(raw)
        flipped[at] ^= 0x10
        bad.write_bytes(bytes(flipped))
        with pytest.raises(IndexFileError, match="checksum mismatch"):
            HammingIndex.load(bad)  # small file: verified even when memory-mapped
    flipped = bytearray(raw)
    flipped[8] = 99  # the version field
    bad.write_bytes(bytes(flipped))
    with pytest.raises(IndexFileError, match="version 99"):
        HammingIndex.load(bad)


def test_missing_file_and_wrong_magic(tmp_path: Path) -> None:
    with pytest.raises(IndexFileError, match="no such index file"):
        HammingIndex.load(tmp_path / "nope.ahix")
    (tmp_path / "x.ahix").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(IndexFileError, match="bad magic"):
        HammingIndex.load(tmp_path / "x.ahix")


def test_file_errors_carry_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ahix"
    with pytest.raises(IndexFileError) as info:
        HammingIndex.load(missing)
    assert info.value.path == str(missing) and str(info.value).startswith(f"{missing}: ")


def test_interrupted_save_leaves_previous_file_intact(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.ahix"
    index = _index()
    index.save(path)
    before = path.read_bytes()
    index.add(tied_codes(np.random.default_rng(9), 10, 64, 3))
    real = fmt._write_array
    calls = []

    def crash_midway(f, pieces, section):  # noqa: ANN001
        calls.append(section)
        if len(calls) == 3:
            raise OSError("disk pulled out")
        return real(f, pieces, section)

    monkeypatch.setattr(fmt, "_write_array", crash_midway)
    with pytest.raises(OSError, match="disk pulled out"):
        index.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.ahix"]  # no temporary file left behind
    assert len(HammingIndex.load(path, verify=True)) == len(index) - 10
