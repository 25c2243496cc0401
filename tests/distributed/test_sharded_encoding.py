"""Sharded encoding of a folder of new images: one process (parts, skipping, merging) and two
ranks under torchrun, including a rank killed mid-way."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ahcl
from ahcl.data.folder import list_image_files
from ahcl.errors import AhclError
from ahcl.index import HammingIndex
from ahcl.run import Run
from ahcl.sharded import encode_files_sharded

from .test_torchrun import WORKER, _ok, torchrun

PART = 64  # 500 images → 8 parts, 4 per rank


def _assert_index_is(path, paths, codes):
    """The index holds exactly ``paths`` with ``codes`` (ids 0..n−1, in order, once each)."""
    index = HammingIndex.load(path)
    n = len(paths)
    assert len(index) == n
    np.testing.assert_array_equal(np.sort(index.ids), np.arange(n))
    assert [m["path"] for m in index.meta_of(np.arange(n))] == paths
    np.testing.assert_array_equal(index.labels_of(np.arange(n)), -1)
    lims, _, ids = index.range_search(codes, 0)  # code i of the index is codes[i] iff i is found
    assert all(i in ids[lims[i]:lims[i + 1]] for i in range(n))


def test_list_image_files(new_images, tmp_path):
    paths = list_image_files(new_images)
    assert len(paths) == 500 and paths == sorted(paths) and paths[0].startswith("/")
    with pytest.raises(AhclError, match="no image files"):
        list_image_files(tmp_path)


def test_one_process_parts_are_skipped_on_rerun(trained_run, new_images, tmp_path, monkeypatch):
    run = ahcl.load_run(trained_run)
    paths = list_image_files(new_images)[:200]
    expected = run.encode(paths)
    original = Run.encode
    calls: list[int] = []

    def crash_on_third(self, batch):
        calls.append(len(batch))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Run, "encode", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        encode_files_sharded(run, paths, tmp_path / "shards", part_size=PART)
    parts = sorted((tmp_path / "shards").rglob("part-*.npz"))
    assert len(parts) == 2
    parts[1].write_bytes(b"truncated")  # a damaged part is encoded again
    calls.clear()
    monkeypatch.setattr(Run, "encode", lambda self, b: calls.append(len(b)) or original(self, b))
    codes = encode_files_sharded(run, paths, tmp_path / "shards", part_size=PART)
    assert calls == [PART, PART, 200 - 3 * PART]  # parts 2, 3 and 4 of 4
    np.testing.assert_array_equal(codes, expected)


def test_index_build_images_one_process(trained_run, new_images, tmp_path):
    from ahcl.cli import main

    run = ahcl.load_run(trained_run)
    paths = list_image_files(new_images)
    assert main(["index", "build", str(trained_run), "--out", str(tmp_path / "idx"),
                 "--images", str(new_images), "--part-size", "100"]) == 0
    _assert_index_is(tmp_path / "idx", paths, run.encode(paths))
    assert not (tmp_path / "idx.shards").exists()


@pytest.mark.slow
def test_index_build_two_ranks_equals_one_process(trained_run, new_images, tmp_path):
    run = ahcl.load_run(trained_run)
    paths = list_image_files(new_images)
    proc = _ok(torchrun("-m", "ahcl", "index", "build", str(trained_run), "--out",
                        str(tmp_path / "idx"), "--images", str(new_images), "--part-size",
                        str(PART), "--json"))
    assert json.loads(proc.stdout) == {"index": str(tmp_path / "idx"), "added": 500, "n": 500,
                                       "skipped": 0, "processes": 2}
    _assert_index_is(tmp_path / "idx", paths, run.encode(paths))
    assert not (tmp_path / "idx.shards").exists()


@pytest.mark.slow
def test_encode_two_ranks_equals_one_process(trained_run, new_images, tmp_path):
    run = ahcl.load_run(trained_run)
    paths = list_image_files(new_images)
    out = tmp_path / "codes.npy"
    _ok(torchrun("-m", "ahcl", "encode", str(trained_run), "--images", str(new_images),
                 "--out", str(out), "--part-size", str(PART), "--json"))
    np.testing.assert_array_equal(np.load(out), run.encode(paths))
    assert (tmp_path / "codes.npy.paths.txt").read_text().splitlines() == paths


@pytest.mark.slow
def test_killed_rank_then_rerun_completes_the_index(trained_run, new_images, tmp_path):
    run = ahcl.load_run(trained_run)
    paths = list_image_files(new_images)
    index = tmp_path / "idx"
    args = ["index", "build", str(trained_run), "--out", str(index), "--images",
            str(new_images), "--part-size", str(PART)]
    # Rank 1 is killed (SIGKILL) as it starts its 3rd of 4 parts.
    crashed = torchrun(str(WORKER), "kill-encode", "1", "2", *args)
    assert crashed.returncode != 0
    assert not index.exists()
    done = {p.name for p in (tmp_path / "idx.shards").rglob("part-*.npz")}
    assert 2 <= len(done) < 8  # rank 1 finished two parts, and the index is not complete
    _ok(torchrun("-m", "ahcl", *args))
    _assert_index_is(index, paths, run.encode(paths))


def test_a_changed_image_is_encoded_again_on_rerun(trained_run, new_images, tmp_path):
    """Parts are reused only for the same file contents: an image rewritten between a crash
    and the rerun gets its new code."""
    import shutil

    from PIL import Image

    run = ahcl.load_run(trained_run)
    folder = tmp_path / "imgs"
    shutil.copytree(new_images, folder)
    paths = list_image_files(folder)[:2 * PART]
    first = encode_files_sharded(run, paths, tmp_path / "shards", part_size=PART)
    stale = first[3].copy()
    for noise in range(10):  # a replacement whose code differs from the stale one
        rng = np.random.default_rng(noise)
        size = Image.open(paths[3]).size
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(paths[3])
        if not np.array_equal(run.encode([paths[3]])[0], stale):
            break
    again = encode_files_sharded(run, paths, tmp_path / "shards", part_size=PART)
    assert not np.array_equal(again[3], stale)
    np.testing.assert_array_equal(again, run.encode(paths))
    np.testing.assert_array_equal(again[PART:], first[PART:])
