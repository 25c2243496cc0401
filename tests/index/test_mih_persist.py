"""Multi-index hashing tables kept beside the index file (``X.index.mih``): a start maps them
instead of building them, the log's additions and removals never rebuild them, results stay those
of the flat scan and of brute force (ties by id), stale tables are replaced, damaged ones are
reported once and rebuilt, torn temporary files are ignored, compaction writes the new file's."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import ahcl
from ahcl.cli import main
from ahcl.index import HammingIndex
from ahcl.index import format as fmt
from ahcl.index import mih
from ahcl.index.index import MIH_FLAT_SHARE
from ahcl.index.store import IndexStore
from ahcl.run import load_run
from tests.index._reference import fast_knn, tied_codes

N_BITS = 64
N = 4000
K = (1, 10, 300)


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows of every MIH table build from now on."""
    seen: list[int] = []
    real = mih._build

    def counted(db: np.ndarray, w: int, subs: np.ndarray) -> tuple:
        seen.append(db.shape[0] // w)
        return real(db, w, subs)

    monkeypatch.setattr(mih, "_build", counted)
    return seen


def clustered(rng: np.random.Generator, n: int, n_bits: int = N_BITS) -> np.ndarray:
    """``uint8 (n, n_bits/8)`` codes around 40 centres (bits flipped with p = 0.05), a tenth of
    them exact copies of others: near neighbours MIH finds without falling back, and ties."""
    centres = rng.integers(0, 2, size=(40, n_bits))
    bits = centres[rng.integers(0, 40, size=n)]
    bits ^= rng.random(bits.shape) < 0.05
    codes = np.packbits(bits.astype(np.uint8), axis=1, bitorder="little")
    copies = rng.integers(0, n, size=n // 10)
    codes[rng.integers(0, n, size=n // 10)] = codes[copies]
    return codes


class Mirror:
    """What the index should hold, for brute force: codes and ids in any order."""

    def __init__(self, codes: np.ndarray, ids: np.ndarray) -> None:
        self.codes, self.ids = codes, ids

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        self.codes, self.ids = np.concatenate([self.codes, codes]), np.concatenate([self.ids, ids])

    def remove(self, gone: np.ndarray) -> None:
        keep = ~np.isin(self.ids, gone)
        self.codes, self.ids = self.codes[keep], self.ids[keep]


def _base(tmp_path: Path, n_bits: int = N_BITS, seed: int = 0) -> tuple[Path, Mirror]:
    rng = np.random.default_rng(seed)
    codes = clustered(rng, N, n_bits)
    ids = rng.permutation(10 * N)[:N].astype(np.int64)  # not in storage order: ties need the ids
    index = HammingIndex(n_bits, mih=True)
    index.add(codes, ids=ids)
    path = tmp_path / "a.index"
    index.save(path)
    return path, Mirror(codes, ids)


def _queries(mirror: Mirror, seed: int = 1) -> np.ndarray:
    """Stored codes, and stored codes with a few bits flipped."""
    rng = np.random.default_rng(seed)
    q = mirror.codes[rng.integers(0, len(mirror.ids), 16)].copy()
    q[8:] ^= (1 << rng.integers(0, 8, size=(8, q.shape[1]))).astype(np.uint8) \
        * (rng.random((8, q.shape[1])) < 0.3)
    return q


def _assert_exact(index: HammingIndex, mirror: Mirror, queries: np.ndarray) -> None:
    """MIH results equal brute force and the flat scan, for small and large ``k``, and the MIH
    path itself answered (no query fell back to the flat scan)."""
    flat = index.copy()
    flat.mih = False
    n_bits = index.n_bits
    for k in K:
        d, i = index.search(queries, k)
        ref_d, ref_i = fast_knn(queries, mirror.codes, mirror.ids, k, n_bits)
        np.testing.assert_array_equal(d, ref_d)
        np.testing.assert_array_equal(i, ref_i)
        for got, want in zip((d, i), flat.search(queries, k)):
            np.testing.assert_array_equal(got, want)
    d, p, i = index._search(queries, 10)
    np.testing.assert_array_equal(index.ids[p], i)  # positions name the same rows
    tabled, _ = index._mih_plan()
    _, _, tables, ids = tabled[0]  # the file's tables, or the first in-memory ones
    out = [np.empty((len(queries), 10), dtype=t) for t in (np.int32, np.int64, np.int64)]
    assert tables.search(index._queries(queries), ids, 10, *out).all()  # no flat fallback


def test_save_writes_the_tables_and_a_start_maps_them(tmp_path: Path, builds: list[int]
                                                      ) -> None:
    path, mirror = _base(tmp_path)
    assert builds == [N] and fmt.tables_path(path).is_file()
    token = fmt.read_header(path)["token"]
    assert fmt.read_tables(path, token) is not None
    index = HammingIndex.load(path, mih=True)
    _assert_exact(index, mirror, _queries(mirror))
    assert builds == [N]  # opened, not built
    tables = index._segments[0].cache["mih"][0]
    assert isinstance(tables.codes, np.memmap) and index.mih_nbytes == tables.nbytes > 0


def test_additions_and_removals_through_the_log_never_rebuild_the_files_tables(
        tmp_path: Path, builds: list[int]) -> None:
    path, mirror = _base(tmp_path)
    store = IndexStore(path, mih=True)
    rng = np.random.default_rng(2)
    small = int(MIH_FLAT_SHARE * N) // 4
    for _ in range(3):  # a few small additions: scanned flat beside the file's tables
        codes = clustered(rng, small)
        mirror.add(codes, store.add(codes))
    gone = np.concatenate([rng.choice(mirror.ids[:N], 25, replace=False), mirror.ids[-3:]])
    assert store.remove(gone) == 28
    mirror.remove(gone)
    queries = _queries(mirror)
    before = list(builds)
    _assert_exact(store.index, mirror, queries)
    assert builds == before  # the file's tables, 25 of their rows marked removed
    reopened = HammingIndex.load(path, mih=True)  # the file, its tables and the log replayed
    _assert_exact(reopened, mirror, queries)
    assert builds == before
    # past MIH_FLAT_SHARE of the rows with tables, the added rows get tables of their own
    codes = clustered(rng, int(MIH_FLAT_SHARE * N) + 1)
    mirror.add(codes, store.add(codes))
    _assert_exact(store.index, mirror, queries)
    assert builds == before + [3 * small - 3 + len(codes)]
    assert len(store.index._segments) == 2


def test_tables_mostly_of_removed_rows_are_rebuilt(tmp_path: Path, builds: list[int]) -> None:
    path, mirror = _base(tmp_path)
    index = HammingIndex.load(path, mih=True)
    gone = mirror.ids[: N // 2 + 1]
    index.remove(gone)
    mirror.remove(gone)
    _assert_exact(index, mirror, _queries(mirror))
    assert builds == [N, N // 2 - 1]


def test_stale_tables_are_ignored_and_replaced(tmp_path: Path, builds: list[int]) -> None:
    path, _ = _base(tmp_path)
    old = tmp_path / "old.mih"
    shutil.copy(fmt.tables_path(path), old)
    _, mirror = _base(tmp_path, seed=5)  # another file at the same path
    shutil.copy(old, fmt.tables_path(path))  # beside it, the tables of the first
    token = fmt.read_header(path)["token"]
    assert fmt.read_tables(path, token) is None
    index = HammingIndex.load(path, mih=True)
    _assert_exact(index, mirror, _queries(mirror))
    assert builds == [N, N, N]  # rebuilt once, at the first search
    assert fmt.read_tables(path, token) is not None  # and saved for the next start
    _assert_exact(HammingIndex.load(path, mih=True), mirror, _queries(mirror))
    assert builds == [N, N, N]


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("where", ["codes", "offsets", "header", "truncated"])
def test_damaged_tables_are_reported_once_and_rebuilt(tmp_path: Path, builds: list[int],
                                                      caplog: pytest.LogCaptureFixture,
                                                      where: str) -> None:
    path, mirror = _base(tmp_path)
    tables = fmt.tables_path(path)
    header, _ = fmt.read_tables(path, fmt.read_header(path)["token"])
    if where == "truncated":
        tables.write_bytes(tables.read_bytes()[:-100])
    else:
        at = 100 if where == "header" else header["sections"][where]["offset"] + 17
        _flip(tables, at)
    with caplog.at_level(logging.WARNING, logger="ahcl.index"):
        index = HammingIndex.load(path, mih=True)
        _assert_exact(index, mirror, _queries(mirror))
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and str(tables) in lines[0] and "rebuilt" in lines[0], lines
    assert builds == [N, N]
    assert fmt.read_tables(path, fmt.read_header(path)["token"], verify=True) is not None


def test_large_tables_are_checked_lazily_and_damage_is_never_kept(
        tmp_path: Path, builds: list[int], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path, mirror = _base(tmp_path)
    tables = fmt.tables_path(path)
    header, _ = fmt.read_tables(path, fmt.read_header(path)["token"])
    perms = header["sections"]["perms"]["offset"]
    raw = bytearray(tables.read_bytes())  # row numbers far out of range: never read through
    raw[perms:perms + 64] = b"\xff\x7f\x00\x00" * 16
    tables.write_bytes(bytes(raw))
    monkeypatch.setattr(fmt, "VERIFY_LIMIT", 0)  # as a multi-GB file: mapped without CRCs
    store = IndexStore(path, mih=True)
    store.index.search(_queries(mirror), 10)  # unverified tables: maybe wrong, never a crash
    assert builds == [N]
    assert store.verify()["mih_tables"] == "damaged"
    with caplog.at_level(logging.WARNING, logger="ahcl.index"):
        store.check_file()  # what the first write (or the service's background check) runs
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "perms checksum mismatch" in caplog.records[0].getMessage()
    _assert_exact(store.index, mirror, _queries(mirror))
    assert builds == [N, N]
    assert store.verify()["mih_tables"] == "ok"


def test_a_torn_temporary_file_is_ignored_and_cleaned(tmp_path: Path, builds: list[int]) -> None:
    path, mirror = _base(tmp_path)
    good = fmt.tables_path(path).read_bytes()
    torn = tmp_path / f".{fmt.tables_path(path).name}.k9x3.tmp"  # what kill -9 mid-save leaves
    torn.write_bytes(good[: len(good) // 3])
    index = HammingIndex.load(path, mih=True)
    _assert_exact(index, mirror, _queries(mirror))
    assert builds == [N]
    store = IndexStore(path, mih=True)
    store.add(clustered(np.random.default_rng(3), 1))
    assert not torn.exists() and fmt.tables_path(path).read_bytes() == good


def test_an_interrupted_save_keeps_the_old_tables(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = _base(tmp_path)
    good = fmt.tables_path(path).read_bytes()
    token = fmt.read_header(path)["token"]
    tables = mih.TablesFile(path, token, N).open(N_BITS)
    real, sections = fmt._write_array, []

    def fail_at_the_last_section(f, pieces, section: dict) -> None:
        sections.append(section)
        if len(sections) == len(fmt.TABLES_SECTIONS):
            raise OSError("disk pulled out")
        real(f, pieces, section)

    monkeypatch.setattr(fmt, "_write_array", fail_at_the_last_section)
    with pytest.raises(OSError, match="disk pulled out"):
        mih.write_tables(path, token, tables)
    assert fmt.tables_path(path).read_bytes() == good
    assert not list(tmp_path.glob(".*.tmp"))


def test_compaction_writes_the_new_files_tables(tmp_path: Path, builds: list[int]) -> None:
    path, mirror = _base(tmp_path)
    store = IndexStore(path, mih=True)
    rng = np.random.default_rng(4)
    codes = clustered(rng, 50)
    mirror.add(codes, store.add(codes))
    gone = mirror.ids[:10]
    store.remove(gone)
    mirror.remove(gone)
    store.compact()
    token = fmt.read_header(path)["token"]
    assert fmt.read_tables(path, token, verify=True)[0]["n"] == len(mirror.ids)
    assert builds == [N, len(mirror.ids)]
    _assert_exact(HammingIndex.load(path, mih=True), mirror, _queries(mirror))
    assert builds == [N, len(mirror.ids)]


def test_the_cli_keeps_and_reports_the_tables(tmp_path: Path, builds: list[int],
                                              capsys: pytest.CaptureFixture) -> None:
    path, mirror = _base(tmp_path)
    store = IndexStore(path)  # no MIH in this process: the log still goes in
    store.add(clustered(np.random.default_rng(6), 5))
    assert main(["index", "compact", str(path)]) == 0  # tables were there: kept for the new file
    assert fmt.read_tables(path, fmt.read_header(path)["token"]) is not None
    capsys.readouterr()
    _flip(fmt.tables_path(path), 100)
    assert main(["index", "verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "MIH tables" in out and "damaged" in out
    HammingIndex(N_BITS).save(path)  # an index saved without tables: the old ones go
    assert not fmt.tables_path(path).exists()


def test_a_width_asked_of_build_mih_replaces_the_files_tables(tmp_path: Path,
                                                              builds: list[int]) -> None:
    path, mirror = _base(tmp_path)
    index = HammingIndex.load(path).build_mih(width=10)
    assert builds == [N, N] and index._segments[0].cache["mih"][0].subs[:, 2].max() == 10
    _assert_exact(index, mirror, _queries(mirror))
    header = fmt.read_tables(path, fmt.read_header(path)["token"])[0]
    assert max(w for _, _, w in header["subs"]) == 10


def test_wider_codes(tmp_path: Path, builds: list[int]) -> None:
    path, mirror = _base(tmp_path, n_bits=128)
    store = IndexStore(path, mih=True)
    gone = mirror.ids[5:30]
    store.remove(gone)
    mirror.remove(gone)
    _assert_exact(HammingIndex.load(path, mih=True), mirror, _queries(mirror))
    assert builds == [N]


@pytest.mark.parametrize("seed", range(4))
def test_random_changes_stay_exact_with_heavy_ties(tmp_path: Path, seed: int) -> None:
    """Additions, removals (of the file's rows and of later ones), reopenings and compactions in
    random order, on codes with many exact ties: every search equals brute force."""
    rng = np.random.default_rng(100 + seed)
    n_bits = (64, 128, 24, 256)[seed]
    n = 400
    codes = tied_codes(rng, n, n_bits, 30)
    ids = rng.permutation(10**6)[:n].astype(np.int64)
    base = HammingIndex(n_bits, mih=True)
    base.add(codes, ids=ids)
    path = tmp_path / "r.index"
    store = IndexStore.create(path, base, mih=True)
    mirror = Mirror(codes, ids)
    for step in range(40):
        roll = rng.random()
        if roll < 0.5:
            new = tied_codes(rng, int(rng.integers(1, 12)), n_bits, 30)
            mirror.add(new, store.add(new))
        elif roll < 0.85 and len(mirror.ids) > 20:
            gone = rng.choice(mirror.ids, int(rng.integers(1, 40)), replace=False)
            assert store.remove(gone) == len(gone)
            mirror.remove(gone)
        elif roll < 0.92:
            store.compact()
        else:
            store = IndexStore(path, mih=True)
        index = store.index if step % 3 else HammingIndex.load(path, mih=True)
        queries = np.concatenate([mirror.codes[:3], tied_codes(rng, 3, n_bits, 30)])
        for k in (1, 7, 60, len(mirror.ids) + 5):
            d, i = index.search(queries, k)
            ref_d, ref_i = fast_knn(queries, mirror.codes, mirror.ids, k, n_bits)
            np.testing.assert_array_equal(d, ref_d)
            np.testing.assert_array_equal(i, ref_i)


def test_index_build_with_mih(synthetic_scenes: Path, tiny_run: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture) -> None:
    """``ahcl index build --mih`` writes the tables of a plain index; a run whose index is split
    (instance bits, ordered lexicographically) is refused before any encoding, in one line."""
    out = tmp_path / "run.index"
    assert load_run(tiny_run).new_index().split
    assert main(["index", "build", str(tiny_run), "--out", str(out), "--mih"]) == 1
    err = capsys.readouterr().err
    assert "--mih" in err and "split index" in err and not out.exists()
    plain = tmp_path / "plain"
    ahcl.train(plain, data=str(synthetic_scenes), backbone="tiny_cnn", n_bits=16, outer_iters=1,
               hidden=16, num_workers=0, instance_bits=0)
    assert main(["index", "build", str(plain), "--out", str(out), "--mih"]) == 0
    assert fmt.read_tables(out, fmt.read_header(out)["token"]) is not None
