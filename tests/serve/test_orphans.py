"""Files of the images folder that no item names (#14): an addition whose process died between
writing its image and its log record leaves one; :meth:`Archive.sweep_orphans` removes them
past a grace (and compaction runs it), and an addition whose reused image was removed meanwhile
writes it again."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ahcl.index.store import IndexStore
from ahcl.serve import Archive
from ahcl.serve.store import ORPHAN_GRACE_S
from tests.serve.conftest import noise_png

MAX_PIXELS = 10**7


def aged(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_old_files_no_item_names_are_swept_and_nothing_else(run_dir: Path) -> None:
    archive = Archive.open(run_dir)
    items = archive.add_files([noise_png(1), noise_png(2)], MAX_PIXELS)
    images = run_dir / "archive.images"
    kept = sorted(images.iterdir())
    assert len(kept) == 2
    for path in kept:
        aged(path, 2 * ORPHAN_GRACE_S)
    orphan = images / f"{hashlib.sha256(b'x').hexdigest()}.png"
    orphan.write_bytes(b"x")
    aged(orphan, 2 * ORPHAN_GRACE_S)
    young = images / f"{hashlib.sha256(b'y').hexdigest()}.jpg"
    young.write_bytes(b"y")
    temp = images / f".{hashlib.sha256(b'z').hexdigest()}.png.0123456789ab.tmp"
    temp.write_bytes(b"z")
    aged(temp, 2 * ORPHAN_GRACE_S)
    other = images / "notes.txt"
    other.write_text("not an upload")
    aged(other, 2 * ORPHAN_GRACE_S)

    assert sorted(archive.sweep_orphans()) == sorted([orphan, temp])
    assert sorted(images.iterdir()) == sorted(kept + [young, other])
    assert [p.name for p in archive.sweep_orphans(older_than_s=0)] == [young.name]
    for it in items:  # the items' images are all still there
        assert archive.thumbnail(it["id"])[:2] == b"\xff\xd8"
    # Another process's addition is an owner too once it is acknowledged.
    elsewhere = Archive.open(run_dir)
    (added,) = elsewhere.add_files([noise_png(3)], MAX_PIXELS)
    assert archive.sweep_orphans(older_than_s=0) == []
    assert archive.thumbnail(added["id"])[:2] == b"\xff\xd8"


def test_an_archive_without_an_index_file_sweeps_nothing(run_dir: Path) -> None:
    images = run_dir / "archive.images"
    images.mkdir()
    orphan = images / f"{hashlib.sha256(b'x').hexdigest()}.png"
    orphan.write_bytes(b"x")
    aged(orphan, 2 * ORPHAN_GRACE_S)
    assert Archive.open(run_dir).sweep_orphans() == [] and orphan.exists()


def test_a_reused_image_removed_before_the_commit_is_written_again(run_dir: Path,
                                                                    monkeypatch) -> None:
    archive = Archive.open(run_dir)
    data = noise_png(4)
    (first,) = archive.add_files([data], MAX_PIXELS)
    (path,) = (run_dir / "archive.images").iterdir()
    commit = archive._commit_batch

    def removed_meanwhile(work):  # another process deletes its last owner, or a sweep runs
        path.unlink()
        return commit(work)

    monkeypatch.setattr(archive, "_commit_batch", removed_meanwhile)
    (second,) = archive.add_files([data], MAX_PIXELS)
    assert path.read_bytes() == data
    assert archive.thumbnail(second["id"])[:2] == b"\xff\xd8"


def test_compaction_sweeps(run_dir: Path, monkeypatch) -> None:
    archive = Archive.open(run_dir)
    archive.add_files([noise_png(5)], MAX_PIXELS)
    orphan = run_dir / "archive.images" / f"{hashlib.sha256(b'x').hexdigest()}.png"
    orphan.write_bytes(b"x")
    aged(orphan, 2 * ORPHAN_GRACE_S)
    monkeypatch.setattr(IndexStore, "needs_compaction", lambda self: True)
    archive.add_files([noise_png(6)], MAX_PIXELS)
    archive._compacting.join(60)
    assert not orphan.exists() and len(list((run_dir / "archive.images").iterdir())) == 2


def test_holding_is_caught_up_with_other_writers(tmp_path: Path) -> None:
    from ahcl.index import HammingIndex

    path = tmp_path / "a.index"
    first = IndexStore.create(path, HammingIndex(32))
    second = IndexStore(path)
    first.add(np.zeros((2, 4), np.uint8))
    with second.holding() as index:
        assert len(index) == 2 and index is second.index


def test_holding_lets_this_thread_write_and_others_wait(tmp_path: Path) -> None:
    from ahcl.index import HammingIndex
    from ahcl.index.lock import IndexLockedError, writing

    path = tmp_path / "a.index"
    store = IndexStore.create(path, HammingIndex(32))
    with store.holding():
        (new,) = store.add(np.zeros((1, 4), np.uint8))
        assert store.remove([new]) == 1
        with pytest.raises(IndexLockedError):  # any other writer waits for the block's end
            with writing(path, timeout=0.1):
                pass
    with writing(path, timeout=0):
        pass
    assert len(IndexStore(path)) == 0


def test_a_deletion_keeps_the_image_another_process_adds_meanwhile(run_dir: Path,
                                                                  monkeypatch) -> None:
    """Deleting the last owner of an image while another process adds the same bytes: the
    image must stay for the new item, whichever commits first. The other process's addition
    is let go right after the deletion's log record: it must wait until the deletion has
    decided about the image (the old code removed it after the new item was acknowledged)."""
    from ahcl.index import lock

    data = noise_png(7)
    archive, elsewhere = Archive.open(run_dir), Archive.open(run_dir)
    (first,) = archive.add_files([data], MAX_PIXELS)
    (other,) = elsewhere.add_files([noise_png(8)], MAX_PIXELS)  # its own store, open
    (path,) = (run_dir / "archive.images").glob(hashlib.sha256(data).hexdigest() + "*")
    waiting, done, added = threading.Event(), threading.Event(), []

    class Clock:  # the lock's clock: tells when a writer waits for another
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(seconds: float) -> None:
            waiting.set()
            time.sleep(seconds)

    monkeypatch.setattr(lock, "time", Clock)

    def add_elsewhere() -> None:
        added.extend(elsewhere.add_files([data], MAX_PIXELS))
        done.set()

    remove = IndexStore.remove

    def remove_then_let_the_other_go(self, ids):
        removed = remove(self, ids)
        threading.Thread(target=add_elsewhere, daemon=True).start()
        deadline = time.monotonic() + 60
        while not (waiting.is_set() or done.is_set()) and time.monotonic() < deadline:
            time.sleep(0.005)
        return removed

    monkeypatch.setattr(IndexStore, "remove", remove_then_let_the_other_go)
    archive.delete(first["id"])
    assert done.wait(60) and waiting.is_set()  # it waited for the deletion to finish
    (second,) = added
    assert path.read_bytes() == data
    assert elsewhere.thumbnail(second["id"])[:2] == b"\xff\xd8"
    ids = [i["id"] for i in archive.items(limit=10**6)[1]]
    assert first["id"] not in ids and ids[-2:] == [other["id"], second["id"]]
