"""The index file plus its write-ahead log (:mod:`ahcl.index.wal`, :mod:`ahcl.index.store`):
replayed state equals the in-memory one, torn and damaged records, stale logs, compaction,
snapshots, integrity of large memory-mapped files, a full disk, and kill -9 of real writers."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from ahcl.errors import DiskFullError, IndexFileError
from ahcl.index import HammingIndex, HammingIndexError, wal
from ahcl.index import format as fmt
from ahcl.index.columns import Column
from ahcl.index.store import IndexStore


def _codes(rng: np.random.Generator, n: int, nbytes: int = 8) -> np.ndarray:
    return rng.integers(0, 256, (n, nbytes), dtype=np.uint8)


def _state(index: HammingIndex) -> tuple:
    order = np.argsort(index.ids)
    ids = index.ids[order]
    return (ids.tolist(), index.labels[order].tolist(), index.codes_of(ids).tobytes(),
            index.meta_of(ids), index._next_id)


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    rng = np.random.default_rng(0)
    base = HammingIndex(64, semantic_bits=16)
    base.add(_codes(rng, 300), labels=rng.integers(-1, 5, 300),
             meta=[{"path": f"img{i}.png"} for i in range(300)])
    return IndexStore.create(tmp_path / "a.index", base)


def test_random_changes_replay_to_the_same_state(store: IndexStore) -> None:
    rng = np.random.default_rng(1)
    mirror = HammingIndex.load(store.path, mmap=False)
    for step in range(60):
        if rng.random() < 0.7:
            n = int(rng.integers(1, 5))
            codes, labels = _codes(rng, n), rng.integers(-1, 5, n)
            meta = [None if rng.random() < 0.3 else {"step": step, "j": j} for j in range(n)]
            ids = None if rng.random() < 0.8 else rng.choice(10**6, n, replace=False) + 10**6
            got = store.add(codes, ids=ids, labels=labels, meta=meta)
            np.testing.assert_array_equal(got, mirror.add(codes, ids=ids, labels=labels,
                                                          meta=meta))
        else:
            gone = rng.choice(mirror.ids, 2, replace=False).tolist() + [10**9]
            assert store.remove(gone) == mirror.remove(gone) == 2
        if step % 15 == 14:
            reopened = HammingIndex.load(store.path)
            assert _state(reopened) == _state(mirror) == _state(store.index)
            q = _codes(rng, 7)
            for a, b in zip(reopened.search_split(q, 25), mirror.search_split(q, 25)):
                np.testing.assert_array_equal(a, b)
    assert store.info()["log_records"] == 60
    folded = store.compact()
    assert folded["records"] == 60 and not wal.log_path(store.path).exists()
    assert _state(HammingIndex.load(store.path, verify=True)) == _state(mirror)


def test_an_addition_costs_the_batch_not_the_archive(store: IndexStore) -> None:
    before = store.path.read_bytes()
    for _ in range(20):
        store.add(_codes(np.random.default_rng(2), 1))
    assert store.path.read_bytes() == before  # the file is never rewritten by additions
    size = wal.log_path(store.path).stat().st_size
    assert size < wal.HEADER_SIZE + 20 * 64
    assert len(store.index._segments) == 2  # small additions merge into one tail segment


def test_torn_last_record_is_dropped_then_cut_off(store: IndexStore) -> None:
    store.add(_codes(np.random.default_rng(3), 2), meta=[{"a": 1}, {"b": 2}])
    acked = store.add(_codes(np.random.default_rng(4), 1))
    log = wal.log_path(store.path)
    full = log.read_bytes()
    log.write_bytes(full[:-5])  # the last append was interrupted before its fsync returned
    reopened = IndexStore(store.path)
    assert len(reopened) == 302 and int(acked[0]) not in reopened.index.ids
    assert reopened.verify()["torn_bytes"] > 0
    new = reopened.add(_codes(np.random.default_rng(5), 1))
    assert int(new[0]) == int(acked[0])  # it was never acknowledged: its id is free again
    assert IndexStore(store.path).verify()["torn_bytes"] == 0
    assert len(HammingIndex.load(store.path)) == 303


def test_a_damaged_record_before_others_is_an_error(store: IndexStore, tmp_path: Path) -> None:
    store.add(_codes(np.random.default_rng(6), 3))
    store.add(_codes(np.random.default_rng(7), 3))
    log = wal.log_path(store.path)
    data = bytearray(log.read_bytes())
    data[wal.HEADER_SIZE + 20] ^= 0x01  # inside the first record's codes
    log.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="record at byte 40 is damaged"):
        HammingIndex.load(store.path)
    for opening in (lambda: IndexStore(store.path), store.verify):
        with pytest.raises(IndexFileError, match="damaged"):
            opening()
    assert log.read_bytes() == bytes(data)


def test_a_log_of_another_file_is_ignored_and_replaced(store: IndexStore) -> None:
    store.add(_codes(np.random.default_rng(9), 4))
    old_log = wal.log_path(store.path).read_bytes()
    store.compact()
    # A compaction that crashed after its rename but before removing the log leaves this:
    wal.log_path(store.path).write_bytes(old_log)
    assert len(HammingIndex.load(store.path)) == 304  # not 308: the log extends the old file
    assert IndexStore(store.path).verify()["stale_log"]
    fresh = IndexStore(store.path)
    fresh.add(_codes(np.random.default_rng(10), 1))
    assert len(HammingIndex.load(store.path)) == 305
    assert not IndexStore(store.path).verify()["stale_log"]


def test_save_drops_the_log_of_the_file_it_replaces(store: IndexStore) -> None:
    store.add(_codes(np.random.default_rng(11), 4))
    other = HammingIndex(64, semantic_bits=16)
    other.add(_codes(np.random.default_rng(12), 10))
    other.save(store.path)
    assert not wal.log_path(store.path).exists() and len(HammingIndex.load(store.path)) == 10
    assert store.refresh() and len(store) == 10  # a running store follows the new file


def test_another_store_catches_up_in_place(store: IndexStore) -> None:
    reader = IndexStore(store.path)
    snapshot = reader.index
    ids = store.add(_codes(np.random.default_rng(13), 3))
    assert len(reader) == 300 and reader.refresh() and len(reader) == 303
    assert len(snapshot) == 300  # the snapshot taken before is unchanged
    assert reader.external_changes == 1
    np.testing.assert_array_equal(reader.index.codes_of(ids), store.index.codes_of(ids))


def test_a_catch_up_tells_what_it_brought_in(store: IndexStore) -> None:
    reader = IndexStore(store.path)
    told: list[tuple] = []
    reader.on_external = lambda before, after, records: told.append((before, after, records))
    first = reader.index
    added = store.add(_codes(np.random.default_rng(20), 2), meta=[{"a": 1}, None])
    store.remove([int(added[0])])
    assert reader.refresh() and len(told) == 1
    before, after, records = told[0]
    assert before is first and after is reader.index
    assert [(r.kind, r.ids.tolist()) for r in records] == [("add", added.tolist()),
                                                           ("remove", [int(added[0])])]
    assert records[0].meta == [{"a": 1}, None]
    assert not reader.refresh() and len(told) == 1  # nothing new: not called
    store.add(_codes(np.random.default_rng(21), 1))  # a write of its own catches up first
    reader.add(_codes(np.random.default_rng(22), 1))
    assert len(told) == 2 and [r.kind for r in told[1][2]] == ["add"]
    store.compact()  # the file is rewritten: reopened, with no records to tell
    assert reader.refresh() and told[-1][2] is None and told[-1][1] is reader.index
    assert _state(reader.index) == _state(HammingIndex.load(store.path))


def test_is_current_sees_every_change_of_another_writer(store: IndexStore) -> None:
    reader = IndexStore(store.path)
    assert reader.is_current() and store.is_current()
    store.add(_codes(np.random.default_rng(14), 1))
    assert store.is_current()  # its own write: nothing to read back
    assert not reader.is_current()  # the other's acknowledged record: read it before answering
    assert reader.refresh() and reader.is_current() and len(reader) == 301
    store.remove([int(store.index.ids[0])])
    assert not reader.is_current() and reader.refresh() and reader.is_current()
    store.compact()  # a rewritten file (and no log)
    assert not reader.is_current() and reader.refresh() and reader.is_current()
    assert _state(reader.index) == _state(store.index)
    store.add(_codes(np.random.default_rng(18), 1))  # a new log
    assert not reader.is_current() and reader.refresh() and reader.is_current()
    log = wal.log_path(store.path)
    log.write_bytes(log.read_bytes() + b"torn")  # an interrupted append: nothing to apply
    assert not reader.is_current() and not reader.refresh() and reader.is_current()


def test_an_append_truncates_only_a_torn_tail(store: IndexStore, monkeypatch) -> None:
    cuts: list[int] = []
    real = os.ftruncate
    monkeypatch.setattr(os, "ftruncate", lambda fd, n: (cuts.append(n), real(fd, n)))
    store.add(_codes(np.random.default_rng(15), 1))
    store.add(_codes(np.random.default_rng(16), 1))
    assert cuts == []  # a truncation to the same size would commit the journal at the fsync
    log = wal.log_path(store.path)
    end = log.stat().st_size
    log.write_bytes(log.read_bytes() + b"torn")
    store.add(_codes(np.random.default_rng(17), 1))
    assert cuts == [end] and IndexStore(store.path).verify()["torn_bytes"] == 0


def test_searches_on_snapshots_while_a_writer_adds(store: IndexStore) -> None:
    rng = np.random.default_rng(14)
    q = _codes(rng, 4)
    errors: list[str] = []
    stop = threading.Event()

    def search() -> None:
        while not stop.is_set():
            snap = store.index
            ds, di, ids = snap.search_split(q, 10)
            mirror = HammingIndex(64, semantic_bits=16)
            mirror.add(snap.codes_of(snap.ids), ids=snap.ids)
            for a, b in zip((ds, di, ids), mirror.search_split(q, 10)):
                if not np.array_equal(a, b):
                    errors.append("a search disagreed with its own snapshot")

    thread = threading.Thread(target=search)
    thread.start()
    for _ in range(80):
        store.add(_codes(rng, 1))
    stop.set()
    thread.join()
    assert not errors and len(store) == 380


def test_column_extends_in_place_only_for_its_last_filler() -> None:
    col = Column(np.arange(3, dtype=np.int64))
    a = col.extended(3, np.array([7]))  # read-only capacity 3: a new column with room
    b = a.extended(4, np.array([8]))
    assert b is a and a.view(5).tolist() == [0, 1, 2, 7, 8]
    branch = a.extended(4, np.array([9]))  # from an older length: a copy, a unchanged
    assert branch is not a and branch.view(5).tolist() == [0, 1, 2, 7, 9]
    assert a.view(5).tolist() == [0, 1, 2, 7, 8]


def test_a_copy_is_independent_of_later_changes() -> None:
    rng = np.random.default_rng(15)
    index = HammingIndex(32)
    index.add(_codes(rng, 50, 4))
    snap = index.copy()
    index.add(_codes(rng, 5, 4))
    index.remove([0, 1])
    assert len(snap) == 50 and snap.ids.tolist() == list(range(50))
    assert len(index) == 53 and 0 not in index.ids
    snap.add(_codes(rng, 1, 4))  # the copy grows on its own (no shared growth)
    assert snap.ids.tolist() == list(range(51)) and index.ids[-1] == 54


def test_id_clash_is_refused_without_writing(store: IndexStore) -> None:
    size = store.path.stat().st_size
    store.add(_codes(np.random.default_rng(16), 1))
    log_size = wal.log_path(store.path).stat().st_size
    with pytest.raises(HammingIndexError, match="already in the index"):
        store.add(_codes(np.random.default_rng(17), 1), ids=[5])
    assert wal.log_path(store.path).stat().st_size == log_size
    assert store.path.stat().st_size == size


def test_damaged_large_file_is_found_and_never_rewritten(store: IndexStore, monkeypatch
                                                         ) -> None:
    monkeypatch.setattr(fmt, "VERIFY_LIMIT", 1024)  # the test file counts as "large"
    header = fmt.read_header(store.path)
    data = bytearray(store.path.read_bytes())
    data[header["sections"]["codes"]["offset"] + 9] ^= 0x40
    store.path.write_bytes(bytes(data))
    opened = IndexStore(store.path)  # memory-mapped, CRCs not read yet
    assert len(opened) == 300
    for change in (lambda: opened.add(_codes(np.random.default_rng(18), 1)), opened.compact):
        with pytest.raises(IndexFileError, match="codes"):
            change()
    assert store.path.read_bytes() == bytes(data) and not wal.log_path(store.path).exists()
    with pytest.raises(IndexFileError, match="codes"):
        opened.verify()


def test_full_disk_keeps_nothing_of_the_change(store: IndexStore, monkeypatch) -> None:
    store.add(_codes(np.random.default_rng(19), 1))
    log = wal.log_path(store.path)
    before = log.read_bytes()
    real_write = os.write

    def full(fd: int, data) -> int:
        real_write(fd, bytes(data)[:7])  # part of the record reaches the disk, then ENOSPC
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(DiskFullError, match="no space left"):
        store.add(_codes(np.random.default_rng(20), 1))
    monkeypatch.undo()
    assert log.read_bytes() == before and len(store) == 301
    assert len(HammingIndex.load(store.path)) == 301


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from ahcl.index.store import IndexStore
    store = IndexStore(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]))
    if sys.argv[3] == "add":
        while True:
            ids = store.add(rng.integers(0, 256, (3, 8), dtype=np.uint8),
                            meta=[{"k": int(x)} for x in range(3)])
            print(*ids.tolist(), flush=True)  # acknowledged: the record is fsynced
    else:
        while True:
            store.add(rng.integers(0, 256, (1, 8), dtype=np.uint8))
            store.compact()
            print("compacted", flush=True)
""")


@pytest.mark.parametrize("mode", ["add", "compact"])
def test_kill9_of_a_writer_loses_nothing_acknowledged(store: IndexStore, tmp_path: Path,
                                                      mode: str) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(store.path), "0", mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acked: list[int] = []
    lines = 0
    for line in proc.stdout:
        lines += 1
        if mode == "add":
            acked += [int(x) for x in line.split()]
        if lines >= 25:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    reopened = IndexStore(store.path)
    report = reopened.verify()
    present = set(reopened.index.ids.tolist())
    assert set(acked) <= present and set(range(300)) <= present
    if mode == "add":  # at most the one record in flight is beyond what was acknowledged
        assert len(present) - 300 - len(acked) in (0, 3)
        assert all(reopened.index.meta_of([i])[0] == {"k": (i - 300) % 3} for i in acked)
    else:
        assert len(present) >= 300 + 25 and report["torn_bytes"] == 0
    more = reopened.add(_codes(np.random.default_rng(21), 1))
    assert int(more[0]) > max(present)  # ids are never reused
