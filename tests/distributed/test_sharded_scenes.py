"""Sharded encoding of GeoTIFF scenes (``index build --scenes`` under torchrun): one process
against :meth:`Run.encode_scenes` (parts, reuse, a changed scene), two ranks against one
process, a damaged block met by one rank only, and an unreadable image met by one rank only
(``--images``: every rank must drop it, none may wait for the others)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import ahcl
from ahcl.data.folder import list_image_files
from ahcl.data.scenes import SceneError
from ahcl.index import HammingIndex
from ahcl.run import Run
from ahcl.sharded import encode_scenes_sharded

from tests._geotiff import write_mosaic

from .test_torchrun import _ok, torchrun

rasterio = pytest.importorskip("rasterio")

TILE = ["--tile", "32", "--stride", "32"]


@pytest.fixture(scope="module")
def scenes(synthetic_scenes: Path, tmp_path_factory) -> Path:
    """Two UTM mosaics of 32-px chips (4 × 3 and 3 × 2 chips) in one folder; the first has a
    blank chip (all zeros, nodata) so a tile is skipped."""
    chips = sorted(synthetic_scenes.rglob("*.png"))
    folder = tmp_path_factory.mktemp("scenes")
    first = write_mosaic(chips[0:12:1], folder / "a.tif", cols=4)
    with rasterio.open(first, "r+") as ds:
        ds.nodata = 0
        block = ds.read(window=((32, 64), (32, 64)))
        ds.write(np.zeros_like(block), window=((32, 64), (32, 64)))
    write_mosaic(chips[20:26], folder / "b.tif", cols=3)
    return folder


def _files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.tif"))


def _index_of(path: Path) -> tuple[np.ndarray, list[dict]]:
    index = HammingIndex.load(path)
    ids = np.sort(index.ids)
    np.testing.assert_array_equal(ids, np.arange(len(index)))
    return index.codes_of(ids), index.meta_of(ids)


def test_one_process_equals_encode_scenes_and_reuses_parts(tiny_run, scenes, tmp_path,
                                                           monkeypatch):
    run = ahcl.load_run(tiny_run)
    files = _files(scenes)
    codes, metas, counts = run.encode_scenes(files, tile=32, stride=32)
    assert counts == {"scenes": 2, "tiles": 17, "nodata_skipped": 1, "edge_skipped": 0}
    original = Run.encode_images
    calls: list[int] = []
    monkeypatch.setattr(Run, "encode_images",
                        lambda self, images: calls.append(len(images)) or original(self, images))
    shards = tmp_path / "shards"
    got = encode_scenes_sharded(run, files, shards, tile=32, stride=32, part_size=5)
    np.testing.assert_array_equal(got[0], codes)
    assert got[1] == metas and got[2] == counts
    # 18 windows in parts of 5: [0, 5) [5, 10) [10, 15) [15, 18); the blank window is #5;
    # part 3 spans both scenes (windows 10, 11 of a.tif, 0-2 of b.tif) in one forward pass.
    assert calls == [5, 4, 5, 3] and len(list(shards.rglob("part-*.npz"))) == 4
    calls.clear()
    assert encode_scenes_sharded(run, files, shards, tile=32, stride=32, part_size=5)[1] == metas
    assert calls == []  # every part reused
    later = os.stat(files[1]).st_mtime_ns + 10**9
    os.utime(files[1], ns=(later, later))  # b.tif "changed": the parts that read it, again
    got = encode_scenes_sharded(run, files, shards, tile=32, stride=32, part_size=5)
    assert calls == [5, 3] and got[1] == metas
    np.testing.assert_array_equal(got[0], codes)


def test_one_process_damaged_block_is_one_line(tiny_run, scenes, tmp_path):
    damaged = _damaged_copy(scenes, tmp_path)
    with pytest.raises(SceneError, match="corrupt or truncated"):
        encode_scenes_sharded(ahcl.load_run(tiny_run), _files(damaged), tmp_path / "shards",
                              tile=32, stride=32, part_size=5)


def test_windows_read_in_worker_processes_give_the_same_tiles(tiny_run, scenes, tmp_path,
                                                               monkeypatch):
    import ahcl.models.features as features_module
    from ahcl.data.scenes import scene_tiles

    made: list[int] = []
    real = features_module.DataLoader
    monkeypatch.setattr(features_module, "DataLoader",
                        lambda *a, **kw: made.append(kw["num_workers"]) or real(*a, **kw))
    opened = [scene_tiles(f, tile=32, stride=32) for f in _files(scenes)]
    units = [(s, w) for s, t in enumerate(opened) for w in range(len(t.positions))]
    here = ahcl.load_run(tiny_run, num_workers=0).encode_windows(opened, units, batch_size=4)
    apart = ahcl.load_run(tiny_run, num_workers=2).encode_windows(opened, units, batch_size=4)
    assert made == [0, 2]
    assert ahcl.load_run(tiny_run).reading_workers == 0  # on the CPU, by default: read here
    assert here[0] == apart[0] == [u for u in range(18) if u != 5]  # window 5 is blank
    np.testing.assert_array_equal(apart[1], here[1])
    assert apart[2] == here[2]
    damaged = [scene_tiles(f, tile=32, stride=32) for f in _files(_damaged_copy(scenes, tmp_path))]
    with pytest.raises(SceneError, match="corrupt or truncated") as exc:
        ahcl.load_run(tiny_run, num_workers=2).encode_windows(damaged, units, batch_size=4)
    assert "\n" not in str(exc.value) and "b.tif" in str(exc.value)


def _damaged_copy(scenes: Path, tmp_path: Path) -> Path:
    """The scenes with b.tif rewritten tiled (32-px blocks), deflate-compressed, and its last
    block overwritten with garbage: its header and block table stay valid, so only reading
    that block fails."""
    out = tmp_path / "damaged"
    shutil.copytree(scenes, out)
    with rasterio.open(scenes / "b.tif") as src:
        profile = {**src.profile, "tiled": True, "blockxsize": 32, "blockysize": 32,
                   "compress": "deflate"}
        data = src.read()
    with rasterio.open(out / "b.tif", "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(out / "b.tif") as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_2_1", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_2_1", "TIFF", bidx=1))
    with open(out / "b.tif", "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)
    return out


@pytest.mark.slow
def test_two_ranks_equal_one_process(tiny_run, scenes, tmp_path):
    one, two = tmp_path / "one.index", tmp_path / "two.index"
    build = ["index", "build", str(tiny_run), "--scenes", str(scenes), *TILE, "--part-size", "5",
             "--json"]
    from ahcl.cli import main

    assert main([*build[:3], "--out", str(one), *build[3:]]) == 0
    proc = _ok(torchrun("-m", "ahcl", *build[:3], "--out", str(two), *build[3:]))
    assert json.loads(proc.stdout) == {"index": str(two), "added": 17, "n": 17, "scenes": 2,
                                       "tiles": 17, "nodata_skipped": 1, "edge_skipped": 0,
                                       "processes": 2}
    codes_one, metas_one = _index_of(one)
    codes_two, metas_two = _index_of(two)
    np.testing.assert_array_equal(codes_two, codes_one)
    assert metas_two == metas_one
    assert not (tmp_path / "two.index.shards").exists()


@pytest.mark.slow
def test_damaged_block_on_one_rank_stops_both_with_one_line(tiny_run, scenes, tmp_path):
    damaged = _damaged_copy(scenes, tmp_path)
    out = tmp_path / "x.index"
    # Parts of 5 windows: rank 1 owns [5, 10) and [15, 18), the latter holding b.tif's block
    # (2, 1); rank 0 reads only sound blocks and must not wait for rank 1 (timeout 120 s).
    proc = torchrun("-m", "ahcl", "index", "build", str(tiny_run), "--out", str(out),
                    "--scenes", str(damaged), *TILE, "--part-size", "5")
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ahcl: error:")]
    assert lines and all("b.tif" in ln and "corrupt or truncated" in ln for ln in lines), \
        proc.stderr[-2000:]
    # Each rank says that line, unless torchrun stops the other first (the first to exit
    # fails the whole group).
    assert 1 <= len(lines) <= 2
    assert not out.exists()


@pytest.mark.slow
def test_unreadable_image_on_one_rank_is_skipped_by_both(trained_run, new_images, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(new_images, folder)
    # Parts of 64 files: part 1 ([64, 128)) belongs to rank 1.
    bad = Path(list_image_files(folder)[100])
    bad.write_bytes(b"not an image")
    out = tmp_path / "x.index"
    proc = _ok(torchrun("-m", "ahcl", "index", "build", str(trained_run), "--out", str(out),
                        "--images", str(folder), "--part-size", "64", "--json"))
    report = json.loads(proc.stdout)
    assert (report["added"], report["skipped"], report["processes"]) == (499, 1, 2)
    paths = [m["path"] for m in HammingIndex.load(out).meta_of(np.arange(499))]
    assert str(bad) not in paths and len(set(paths)) == 499
