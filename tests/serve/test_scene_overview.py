"""Scene overviews (issue #15 item 4): ``GET /api/scenes`` and ``GET /api/scenes/{n}/overview``
over an archive of GeoTIFF tiles (TestClient), the overview made once and cached beside the
index, remade when its scene changes; and the library under them (:mod:`ahcl.data.overview`)."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from ahcl.cli import main
from ahcl.serve import Archive, ServeSettings, create_app
from tests.misuse.snapshot import snapshot
from tests.serve.conftest import TOKEN

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("pyproj")

from affine import Affine  # noqa: E402

import ahcl.data.overview as overview_module  # noqa: E402
from ahcl.data.images import to_rgb_array  # noqa: E402
from ahcl.data.overview import OverviewCache, overview_size  # noqa: E402
from ahcl.data.scenes import read_scaled  # noqa: E402
from ahcl.serve.routes import scenes as scene_routes  # noqa: E402
from tests._geotiff import UTM, pixel_lonlat, write_mosaic  # noqa: E402

SIDE = 48  # the serve run's chips, and the tiles
WIDTH, HEIGHT = 3 * SIDE, 2 * SIDE  # the mosaic


def chips_of(run_dir: Path) -> list[Path]:
    """Six of the serve run's 48-px chips, one per class."""
    return sorted((run_dir.parent / "data").rglob("*.png"))[::15][:6]


def scene_archive(run_dir: Path, root: Path, chips: list[Path]) -> tuple[Path, Path]:
    """A 3 × 2 UTM mosaic of ``chips`` in ``root`` and the index of its six tiles."""
    mosaic = write_mosaic(chips, root / "mosaic.tif")
    index = root / "scenes.index"
    assert main(["index", "build", str(run_dir), "--out", str(index), "--scenes", str(mosaic),
                 "--tile", str(SIDE), "--stride", str(SIDE)]) == 0
    return mosaic, index


def client_of(index: Path, run_dir: Path) -> TestClient:
    archive = Archive.open(index, run=run_dir, thumb_size=32)
    return TestClient(create_app(archive, ServeSettings(token=TOKEN)),
                      base_url="http://127.0.0.1:8000", raise_server_exceptions=False)


@pytest.fixture()
def geo(tiny_run_dir: Path, tmp_path: Path) -> tuple[TestClient, Path, Path]:
    """A client over a fresh archive of a private mosaic (its cache folder starts empty)."""
    mosaic, index = scene_archive(tiny_run_dir, tmp_path, chips_of(tiny_run_dir))
    return client_of(index, tiny_run_dir), mosaic, index


@pytest.fixture()
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every whole-scene read the overview cache makes, by scene path."""
    seen: list[str] = []

    def counted(path, size, **kwargs):
        seen.append(os.fspath(path))
        return read_scaled(path, size, **kwargs)

    monkeypatch.setattr(overview_module, "read_scaled", counted)
    return seen


def cache_files(index: Path) -> list[Path]:
    return sorted(index.with_suffix(".overviews").glob("*"))


def test_list_scenes(geo) -> None:
    client, mosaic, _ = geo
    r = client.get("/api/scenes")
    assert r.status_code == 200
    body = r.json()
    assert body["tile"] == SIDE and len(body["scenes"]) == 1
    scene = body["scenes"][0]
    assert (scene["scene"], scene["name"], scene["items"]) == (0, "mosaic.tif", 6)
    assert (scene["width"], scene["height"], scene["crs"]) == (WIDTH, HEIGHT, UTM)
    expected = [pixel_lonlat(c, r) for c, r in ((0, 0), (WIDTH, 0), (WIDTH, HEIGHT),
                                                (0, HEIGHT))]
    assert np.allclose(scene["corners"], expected, rtol=0, atol=1e-9)
    lons, lats = zip(*expected)
    assert scene["bounds"] == pytest.approx([min(lons), min(lats), max(lons), max(lats)])
    assert scene["overview"] == {"url": "/api/scenes/0/overview", "width": WIDTH,
                                 "height": HEIGHT, "scale": [1.0, 1.0]}
    assert str(mosaic.parent) not in r.text  # no server path
    schema = client.get("/openapi.json").json()["paths"]
    assert "/api/scenes" in schema and "/api/scenes/{number}/overview" in schema


def test_overview_image_size_scale_and_pixels(geo, tiny_run_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    client, mosaic, index = geo
    full = client.get("/api/scenes/0/overview")
    assert full.status_code == 200 and full.headers["content-type"] == "image/jpeg"
    image = np.asarray(Image.open(io.BytesIO(full.content)).convert("RGB"), dtype=np.float64)
    with rasterio.open(mosaic) as src:
        scene = np.moveaxis(src.read(), 0, -1).astype(np.float64)
    assert image.shape == scene.shape
    # the scene itself, through JPEG (the synthetic chips are noise-like: the worst case)
    assert np.abs(image - scene).mean() < 10
    assert np.corrcoef(image.ravel(), scene.ravel())[0, 1] > 0.95
    # A smaller longest side (for a fresh archive: the cache is per archive and size)
    monkeypatch.setattr(scene_routes, "MAX_SIDE", 100)
    shutil.rmtree(index.with_suffix(".overviews"))
    small = client_of(index, tiny_run_dir)
    listed = small.get("/api/scenes").json()["scenes"][0]["overview"]
    assert (listed["width"], listed["height"]) == (100, 67)  # 96 × 100 / 144 = 66.7
    assert listed["scale"] == [100 / WIDTH, 67 / HEIGHT]
    got = Image.open(io.BytesIO(small.get(listed["url"]).content))
    assert got.size == (100, 67)
    # a chip's footprint, scaled, covers that chip's colours: chip (col 2, row 1) by its mean
    ov = np.asarray(got.convert("RGB"), dtype=np.float64)
    x0, y0 = round(2 * SIDE * listed["scale"][0]), round(SIDE * listed["scale"][1])
    inner = ov[y0 + 3:-3, x0 + 3:-3].mean(axis=(0, 1))
    assert inner == pytest.approx(scene[SIDE + 4:, 2 * SIDE + 4:].mean(axis=(0, 1)), abs=12)


def test_the_overview_is_made_once_and_cached_beside_the_index(geo, reads, tiny_run_dir) -> None:
    client, mosaic, index = geo
    assert cache_files(index) == []
    first = client.get("/api/scenes/0/overview")
    assert first.status_code == 200 and reads == [str(mosaic)]
    [file] = cache_files(index)
    assert file.suffix == ".jpg" and file.read_bytes() == first.content
    assert "mosaic" not in file.name  # named by hashes only
    made = file.stat().st_mtime_ns
    second = client.get("/api/scenes/0/overview")
    assert second.content == first.content and reads == [str(mosaic)]  # not read again
    assert file.stat().st_mtime_ns == made
    etag = second.headers["etag"]
    assert second.headers["cache-control"] == "no-cache"
    again = client.get("/api/scenes/0/overview", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    restarted = client_of(index, tiny_run_dir)  # a new server over the same index
    assert restarted.get("/api/scenes/0/overview").content == first.content
    assert reads == [str(mosaic)] and file.stat().st_mtime_ns == made


def test_a_changed_scene_is_made_again(geo, reads, tiny_run_dir: Path) -> None:
    client, mosaic, index = geo
    first = client.get("/api/scenes/0/overview")
    [old] = cache_files(index)
    write_mosaic(chips_of(tiny_run_dir)[::-1], mosaic)  # same size, other pixels
    st = mosaic.stat()
    os.utime(mosaic, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    second = client.get("/api/scenes/0/overview")
    assert second.status_code == 200 and reads == [str(mosaic)] * 2
    assert second.content != first.content
    assert second.headers["etag"] != first.headers["etag"]
    [new] = cache_files(index)  # the stale one is gone
    assert new != old and new.read_bytes() == second.content


def test_unknown_numbers_are_404_and_write_nothing(geo) -> None:
    client, mosaic, _ = geo
    before = snapshot(mosaic.parent)
    for number in ("1", "7", "-1", "abc", "0x0", "1e0", " 0", "99999999999999999999",
                   "..%2F..%2Fetc", "%2e%2e", "0%00"):
        r = client.get(f"/api/scenes/{number}/overview")
        assert r.status_code == 404, (number, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and str(mosaic.parent) not in detail
    assert client.get("/api/scenes/0/overview/../../x").status_code == 404
    assert snapshot(mosaic.parent) == before  # no cache folder, no file


def test_an_archive_without_scenes(run_dir: Path) -> None:
    client = TestClient(create_app(Archive.open(run_dir), ServeSettings(token=TOKEN)))
    assert client.get("/api/scenes").json() == {"tile": None, "scenes": []}
    r = client.get("/api/scenes/0/overview")
    assert r.status_code == 404 and r.json()["detail"] == ("no scene has number 0: the archive "
                                                           "has 0")


def test_a_scene_gone_from_the_server_is_path_free(geo) -> None:
    client, mosaic, _ = geo
    mosaic.unlink()
    r = client.get("/api/scenes")
    scene = r.json()["scenes"][0]
    assert (scene["scene"], scene["name"], scene["items"]) == (0, "mosaic.tif", 6)
    assert scene["width"] is None and scene["overview"] is None
    r = client.get("/api/scenes/0/overview")
    assert r.status_code == 500 and r.json()["detail"] == ("scene 0 of the archive cannot be "
                                                           "read on the server")
    assert str(mosaic.parent) not in r.text


def test_an_unwritable_cache_is_not_an_error(geo, reads) -> None:
    client, mosaic, index = geo
    index.with_suffix(".overviews").write_bytes(b"")  # a file where the folder would go
    for _ in range(2):
        r = client.get("/api/scenes/0/overview")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert reads == [str(mosaic)] * 2  # made each time, served all the same


@pytest.mark.parametrize("size, max_side, expected", [
    ((144, 96), 1024, (144, 96)), ((144, 96), 100, (100, 67)), ((10_000, 10_000), 1024,
                                                                  (1024, 1024)),
    ((3, 5000), 1024, (1, 1024)), ((5000, 3000), 1024, (1024, 614))])
def test_overview_size(size: tuple[int, int], max_side: int, expected: tuple[int, int]) -> None:
    assert overview_size(*size, max_side) == expected


def test_sixteen_bit_scenes_follow_the_tiles_rule(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 4096, (4, 64, 96), dtype=np.uint16)
    path = tmp_path / "ms.tif"
    with rasterio.open(path, "w", driver="GTiff", width=96, height=64, count=4, dtype="uint16",
                       crs=UTM, transform=Affine(10, 0, 4e5, 0, -10, 5.5e6)) as dst:
        dst.write(array)
    full = read_scaled(path, (96, 64))  # full size: no resampling, only the RGB rule
    np.testing.assert_array_equal(np.asarray(full), to_rgb_array(np.moveaxis(array[:3], 0, -1)))
    overview = OverviewCache(tmp_path / "cache", max_side=48).get(path)
    assert overview.size == (48, 32) and overview.scale == (0.5, 0.5)
    assert Image.open(io.BytesIO(overview.jpeg)).size == (48, 32)


def test_overview_of_the_real_scene(shared_dir: Path, tmp_path: Path) -> None:
    rmnp = shared_dir / "data" / "geotiff" / "rmnp-rgb.tif"
    if not rmnp.is_file():
        pytest.skip(f"{rmnp} not found: the real GeoTIFF is needed for this test "
                    "(see ../shared/data/geotiff/README.md)")
    overview = OverviewCache(tmp_path / "cache", max_side=128).get(rmnp)
    assert overview.size == (128, 98) and overview.scale == (128 / 485, 98 / 373)
    image = np.asarray(Image.open(io.BytesIO(overview.jpeg)).convert("RGB"))
    assert image.shape == (98, 128, 3) and image.std() > 5
    info = overview.info
    assert (info.width, info.height, info.crs) == (485, 373, "EPSG:4326")
    with rasterio.open(rmnp) as src:
        b = src.bounds
    assert np.allclose(info.corners, [(b.left, b.top), (b.right, b.top), (b.right, b.bottom),
                                      (b.left, b.bottom)], rtol=0, atol=1e-9)
    assert info.bounds == pytest.approx((b.left, b.bottom, b.right, b.top))


def test_a_tile_thumbnail_reads_the_bands_it_was_indexed_with(tiny_run_dir: Path,
                                                              tmp_path: Path) -> None:
    from ahcl.data.scenes import read_window
    from ahcl.index import HammingIndex
    from ahcl.serve.store import _item_image

    mosaic = write_mosaic(chips_of(tiny_run_dir), tmp_path / "mosaic.tif")
    index = tmp_path / "bgr.index"
    assert main(["index", "build", str(tiny_run_dir), "--out", str(index), "--scenes",
                 str(mosaic), "--tile", str(SIDE), "--stride", str(SIDE), "--bands", "3,2,1"]) == 0
    meta = HammingIndex.load(index).meta_of([0])[0]
    assert meta["bands"] == [3, 2, 1]
    got = np.asarray(_item_image(meta))
    bgr = read_window(mosaic, meta["window"], bands=(3, 2, 1)).image
    np.testing.assert_array_equal(got, np.asarray(bgr))
    assert not np.array_equal(got, np.asarray(read_window(mosaic, meta["window"]).image))
