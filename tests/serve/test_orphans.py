"""Files of the images folder that no item names (#14): an addition whose process died between
writing its image and its log record leaves one; :meth:`Archive.sweep_orphans` removes them
past a grace (and compaction runs it), and an addition whose reused image was removed meanwhile
writes it again."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

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
