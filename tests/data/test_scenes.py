"""Tiling GeoTIFF scenes: windows, pixels, footprints (checked against the affine transform and
pyproj independently), nodata, bad input and memory."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

rasterio = pytest.importorskip("rasterio")
pyproj = pytest.importorskip("pyproj")

from rasterio.errors import NotGeoreferencedWarning  # noqa: E402
from affine import Affine  # noqa: E402

from ahcl.data.images import to_rgb_array  # noqa: E402
from ahcl.data.scenes import (SceneError, SceneTiles, footprint, lonlat_window,  # noqa: E402
                              place_tile, scene_catalog, scene_tiles)
from ahcl.errors import AhclError  # noqa: E402

UTM = "EPSG:32633"
ORIGIN = (400000.0, 5500000.0)  # upper-left corner, metres
PIXEL = 10.0


def from_origin(west: float, north: float, xsize: float, ysize: float) -> Affine:
    """North-up transform (rasterio's own ``from_origin`` warns under affine 3.1)."""
    return Affine(xsize, 0.0, west, 0.0, -ysize, north)


def write_scene(path: Path, array: np.ndarray, crs: str | None = UTM, transform=None,
                **profile) -> Path:
    """Write ``array`` (bands, H, W) as a GeoTIFF (north-up UTM at ORIGIN unless told)."""
    count, height, width = array.shape
    if crs is not None and transform is None:
        transform = from_origin(*ORIGIN, PIXEL, PIXEL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count,
                           dtype=array.dtype, crs=crs, transform=transform, **profile) as dst:
            dst.write(array)
    return path


def signed_area(ring: list[list[float]]) -> float:
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:]))


def check_ring(geometry: dict) -> list[list[float]]:
    assert geometry["type"] == "Polygon" and len(geometry["coordinates"]) == 1
    ring = geometry["coordinates"][0]
    assert len(ring) == 5 and ring[0] == ring[-1]
    assert signed_area(ring) > 0  # RFC 7946: exterior ring counter-clockwise
    return ring


def assert_one_line(exc: pytest.ExceptionInfo, *words: str) -> None:
    message = str(exc.value)
    assert isinstance(exc.value, AhclError) and "\n" not in message and message
    for word in words:
        assert word in message, message


# --- the real scene --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rmnp(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "geotiff" / "rmnp-rgb.tif"
    if not path.is_file():
        pytest.skip(f"{path} not found: the real GeoTIFF scene is needed for this test "
                    "(see ../shared/data/geotiff/README.md)")
    return path


def test_real_scene_grid_windows_and_footprints(rmnp: Path) -> None:
    tiles = scene_tiles(rmnp, tile=128, stride=128, min_valid=0.0)
    got = list(tiles)
    assert len(got) == (485 // 128) * (373 // 128) == 6
    assert [t.window for t in got] == [(c, r, 128, 128) for r in (0, 128) for c in (0, 128, 256)]
    assert tiles.crs == "EPSG:4326" and tiles.nodata_skipped == 0
    with rasterio.open(rmnp) as src:
        a, _, c, _, e, f = tuple(src.transform)[:6]
        full = src.read()
        nodata = src.nodata
        left, bottom, right, top = src.bounds
    for t in got:
        col, row, w, h = t.window
        ring = check_ring(t.geometry)
        expected = {(c + a * cc, f + e * rr) for cc in (col, col + w) for rr in (row, row + h)}
        assert len({tuple(p) for p in ring}) == 4
        for lon, lat in ring:
            assert min(abs(lon - x) + abs(lat - y) for x, y in expected) < 1e-9
            assert left - 1e-9 <= lon <= right + 1e-9 and bottom - 1e-9 <= lat <= top + 1e-9
        assert t.meta == {"scene": str(rmnp), "window": [col, row, w, h], "crs": "EPSG:4326",
                          "geometry": t.geometry, "bands": [1, 2, 3]}
        pixels = np.moveaxis(full[:, row:row + h, col:col + w], 0, -1)
        invalid = (pixels == nodata).all(axis=2, keepdims=True)  # nodata shown black
        np.testing.assert_array_equal(np.asarray(t.image), np.where(invalid, 0, pixels))
    assert footprint(rmnp, [128, 0, 128, 128]) == got[1].geometry


def test_real_scene_skips_its_nodata_corner(rmnp: Path) -> None:
    # The top-left 128-px tile of rmnp-rgb.tif is 10.1 % nodata (255): below min_valid=0.9.
    tiles = scene_tiles(rmnp, tile=128, stride=128)
    assert [t.window[:2] for t in tiles] == [(128, 0), (256, 0), (0, 128), (128, 128),
                                             (256, 128)]
    assert tiles.nodata_skipped == 1 and tiles.edge_skipped == 4 * 3 - 6


def test_real_scene_lonlat_window(rmnp: Path) -> None:
    # pixel (300.5, 100.5) -> lon/lat by the transform; the window centres on it
    with rasterio.open(rmnp) as src:
        a, b, c, d, e, f = tuple(src.transform)[:6]
    lon, lat = a * 300.5 + b * 100.5 + c, d * 300.5 + e * 100.5 + f
    assert lonlat_window(rmnp, lon, lat, tile=128) == (236, 36, 128, 128)
    assert lonlat_window(rmnp, -106.05, 40.07, tile=128) == (0, 373 - 128, 128, 128)  # clamped
    with pytest.raises(SceneError) as exc:
        lonlat_window(rmnp, -100.0, 40.3, tile=128)
    assert_one_line(exc, "outside", str(rmnp))


# --- scenes written by the tests -------------------------------------------------------------


@pytest.fixture(scope="module")
def chips(rsscn7_dir: Path) -> list[np.ndarray]:
    files = sorted(rsscn7_dir.glob("*/*.jpg"))[::50][:6]
    if len(files) < 6:
        pytest.skip(f"fewer than 6 RSSCN7 chips under {rsscn7_dir}")
    arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    side = min(min(a.shape[:2]) for a in arrays)
    return [a[:side, :side] for a in arrays]


@pytest.fixture(scope="module")
def mosaic(chips: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 rows × 3 columns of chips, north-up UTM 33N, 10 m pixels, origin ORIGIN."""
    rows = [np.concatenate(chips[i:i + 3], axis=1) for i in (0, 3)]
    array = np.moveaxis(np.concatenate(rows, axis=0), -1, 0)
    return write_scene(tmp_path_factory.mktemp("mosaic") / "mosaic.tif", array)


def test_mosaic_tiles_are_the_chips_with_pyproj_footprints(chips, mosaic: Path) -> None:
    side = chips[0].shape[0]
    tiles = scene_tiles(mosaic, tile=side, stride=side)
    got = list(tiles)
    assert tiles.crs == UTM and len(got) == 6
    to_lonlat = pyproj.Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    for i, t in enumerate(got):
        r, c = divmod(i, 3)
        assert t.window == (c * side, r * side, side, side) and t.crs == UTM
        np.testing.assert_array_equal(np.asarray(t.image), chips[i])
        x0, y0 = ORIGIN[0] + c * side * PIXEL, ORIGIN[1] - r * side * PIXEL
        x1, y1 = x0 + side * PIXEL, y0 - side * PIXEL
        corners = [to_lonlat.transform(x, y) for x, y in ((x0, y0), (x0, y1), (x1, y1), (x1, y0))]
        ring = check_ring(t.geometry)
        np.testing.assert_allclose(ring[:4], corners, rtol=0, atol=1e-9)
        assert 13 < ring[0][0] < 15 and 49 < ring[0][1] < 50  # UTM 33N, x=400 km, y=5500 km


def test_mosaic_overlapping_tiles_and_lonlat(chips, mosaic: Path) -> None:
    side = chips[0].shape[0]
    half = side // 2
    tiles = list(scene_tiles(mosaic, tile=side, stride=half))
    assert len(tiles) == 5 * 3
    t = tiles[1]  # (half, 0): right half of chip 0 + left half of chip 1
    assert t.window == (half, 0, side, side)
    np.testing.assert_array_equal(np.asarray(t.image)[:, :side - half], chips[0][:, half:])
    np.testing.assert_array_equal(np.asarray(t.image)[:, side - half:], chips[1][:, :half])
    to_lonlat = pyproj.Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    x = ORIGIN[0] + (2 * side + half + 0.25) * PIXEL  # centre of chip 5, nudged a quarter pixel
    y = ORIGIN[1] - (side + half + 0.25) * PIXEL
    lon, lat = to_lonlat.transform(x, y)
    assert lonlat_window(mosaic, lon, lat, tile=side) == (2 * side, side, side, side)
    assert footprint(mosaic, [2 * side, side, side, side]) == tiles[-1].geometry


def test_sixteen_bit_four_bands_follow_the_shared_rule(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 4096, (4, 64, 96), dtype=np.uint16)
    path = write_scene(tmp_path / "ms.tif", array)
    got = list(scene_tiles(path, tile=32, stride=32))
    assert len(got) == 6
    for t in got:
        col, row, w, h = t.window
        window = np.moveaxis(array[:, row:row + h, col:col + w], 0, -1)
        np.testing.assert_array_equal(np.asarray(t.image), to_rgb_array(window[:, :, :3]))
    t = next(iter(scene_tiles(path, tile=32, stride=32, bands=(4, 2, 1))))
    np.testing.assert_array_equal(np.asarray(t.image),
                                  to_rgb_array(np.moveaxis(array[[3, 1, 0], :32, :32], 0, -1)))
    assert t.meta["bands"] == [4, 2, 1] and got[0].meta["bands"] == [1, 2, 3]


def test_a_place_is_read_again_with_the_bands_its_items_were_read_with(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    array = rng.integers(0, 4096, (4, 64, 96), dtype=np.uint16)
    path = write_scene(tmp_path / "ms.tif", array)
    tiles = list(scene_tiles(path, tile=32, stride=32, bands=(4, 2, 1)))
    catalog = scene_catalog([t.meta for t in tiles])
    assert catalog.bands == ((4, 2, 1),) and catalog.bands_of(str(path)) == (4, 2, 1)
    for place in ({"window": list(tiles[4].window)}, {"lonlat": None}):
        if "lonlat" in place:
            (x0, y0), _, (x1, y1) = tiles[4].geometry["coordinates"][0][:3]
            f = 16.3 / 32  # a little past the tile's centre pixel corner, so it rounds to it
            place = {"lonlat": (x0 + f * (x1 - x0), y0 + f * (y1 - y0))}
        query = place_tile(catalog, scene=str(path), **place)
        assert query.bands == (4, 2, 1) and list(query.window) == list(tiles[4].window)
        np.testing.assert_array_equal(np.asarray(query.image), np.asarray(tiles[4].image))
    # Given bands win; items of older indexes (no "bands") read the scene's defaults.
    assert place_tile(catalog, scene=str(path), window=[0, 0, 32, 32], bands=(1, 2, 3)).bands \
        == (1, 2, 3)
    old = scene_catalog([{k: v for k, v in t.meta.items() if k != "bands"} for t in tiles])
    assert old.bands == (None,)
    assert place_tile(old, scene=str(path), window=[0, 0, 32, 32]).bands == (1, 2, 3)


def test_nodata_tiles_are_skipped_and_counted(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    array = rng.integers(1, 4096, (3, 64, 96), dtype=np.uint16)
    array[:, :32, :32] = 0  # tile (0, 0): all nodata
    array[:, 32:64, 64:80] = 0  # tile (64, 32): half nodata
    array[:, 32:34, 0:32] = 0  # tile (0, 32): 1/16 nodata, kept
    path = write_scene(tmp_path / "nd.tif", array, nodata=0)
    tiles = scene_tiles(path, tile=32, stride=32)
    got = {t.window[:2]: t for t in tiles}
    assert sorted(got) == sorted([(32, 0), (64, 0), (0, 32), (32, 32)])
    assert tiles.nodata_skipped == 2
    kept = got[(0, 32)]
    assert kept.valid == pytest.approx(1 - 1 / 16)
    window = np.moveaxis(array[:, 32:64, 0:32], 0, -1).astype(np.float64)
    window[window == 0] = np.nan  # nodata: left out of the stretch, shown black
    np.testing.assert_array_equal(np.asarray(kept.image), to_rgb_array(window))
    assert (np.asarray(kept.image)[:2] == 0).all()
    assert len(list(scene_tiles(path, tile=32, stride=32, min_valid=0.0))) == 6


def test_alpha_band_masks_tiles(tmp_path: Path) -> None:
    array = np.full((4, 32, 64), 120, np.uint8)
    array[3] = 255
    array[3, :, :32] = 0  # left tile transparent
    path = write_scene(tmp_path / "rgba.tif", array, photometric="RGB", alpha="YES")
    tiles = scene_tiles(path, tile=32, stride=32)
    assert [t.window for t in tiles] == [(32, 0, 32, 32)] and tiles.nodata_skipped == 1


def test_ungeoreferenced_tiff_gives_pixel_windows_only(tmp_path: Path) -> None:
    path = write_scene(tmp_path / "plain.tif", np.full((3, 40, 40), 7, np.uint8), crs=None)
    with pytest.warns(UserWarning, match="pixel windows only"):
        tiles = scene_tiles(path, tile=20, stride=20)
    got = list(tiles)
    assert len(got) == 4 and tiles.crs is None
    assert all(t.geometry is None and t.crs is None for t in got)
    for call in (lambda: footprint(path, [0, 0, 20, 20]), lambda: lonlat_window(path, 0, 0, 20)):
        with pytest.raises(SceneError) as exc:
            call()
        assert_one_line(exc, "no georeferencing", str(path))


def test_single_band_scene_is_grey(tmp_path: Path) -> None:
    array = np.arange(32 * 32, dtype=np.uint8).reshape(1, 32, 32)
    t = next(iter(scene_tiles(write_scene(tmp_path / "grey.tif", array), tile=32)))
    np.testing.assert_array_equal(np.asarray(t.image), np.repeat(array[0][:, :, None], 3, 2))


# --- bad input -------------------------------------------------------------------------------


def test_bad_files_raise_one_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.tif"
    text.write_text("not an image\n")
    with pytest.raises(SceneError) as exc:
        scene_tiles(text, tile=8)
    assert_one_line(exc, str(text), "not a TIFF")

    jpeg = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 64)).save(jpeg)
    with pytest.raises(SceneError) as exc:
        scene_tiles(jpeg, tile=8)
    assert_one_line(exc, str(jpeg), "not a GeoTIFF", "JPEG")

    with pytest.raises(SceneError) as exc:
        scene_tiles(tmp_path / "missing.tif")
    assert_one_line(exc, "not found")


def test_truncated_and_corrupt_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    whole = write_scene(tmp_path / "whole.tif", rng.integers(0, 255, (3, 128, 128), np.uint8),
                        tiled=True, blockxsize=32, blockysize=32)
    data = whole.read_bytes()
    for cut in (len(data) // 2, len(data) - 100, 200):
        bad = tmp_path / f"cut{cut}.tif"
        bad.write_bytes(data[:cut])
        with pytest.raises(SceneError) as exc:
            list(scene_tiles(bad, tile=32))
        assert_one_line(exc, str(bad))
    header = tmp_path / "header.tif"
    header.write_bytes(data[:8])
    with pytest.raises(SceneError) as exc:
        scene_tiles(header, tile=32)
    assert_one_line(exc, str(header), "corrupt or truncated")


def test_too_small_and_bad_bands(tmp_path: Path) -> None:
    path = write_scene(tmp_path / "small.tif", np.zeros((3, 100, 300), np.uint8))
    with pytest.raises(SceneError) as exc:
        scene_tiles(path, tile=128)
    assert_one_line(exc, "smaller than one tile", "300 × 100", str(path))
    with pytest.raises(SceneError) as exc:
        lonlat_window(path, 14.0, 49.0, tile=128)
    assert_one_line(exc, "smaller than one tile")
    for bands in ((1, 2, 4), (0, 1, 2)):
        with pytest.raises(SceneError) as exc:
            scene_tiles(path, tile=64, bands=bands)
        assert_one_line(exc, "out of range", "3 band(s)", str(path))
    with pytest.raises(AhclError) as exc:
        scene_tiles(path, tile=64, bands=(1, 2))
    assert_one_line(exc, "bands")
    with pytest.raises(SceneError) as exc:
        footprint(path, [0, 0, 400, 10])
    assert_one_line(exc, "not inside")


def test_crs_that_cannot_reach_wgs84(tmp_path: Path) -> None:
    local = 'LOCAL_CS["site grid",LOCAL_DATUM["site",0],UNIT["metre",1],AXIS["X",EAST],' \
            'AXIS["Y",NORTH]]'
    path = write_scene(tmp_path / "local.tif", np.zeros((3, 64, 64), np.uint8),
                       crs=rasterio.crs.CRS.from_wkt(local),
                       transform=from_origin(0, 640, 10, 10))
    with pytest.raises(SceneError) as exc:
        scene_tiles(path, tile=32)
    assert_one_line(exc, "cannot be transformed to EPSG:4326", str(path))


def test_scene_error_pickles(tmp_path: Path) -> None:
    import pickle

    err = SceneError("scene x not found", path="x")
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, SceneError) and str(again) == str(err) and again.path == "x"


# --- memory ----------------------------------------------------------------------------------


def test_windowed_reads_keep_memory_far_below_the_scene(tmp_path: Path) -> None:
    side, bands = 4096, 3
    path = tmp_path / "big.tif"
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=bands,
                       dtype="uint8", crs=UTM, transform=from_origin(*ORIGIN, PIXEL, PIXEL),
                       tiled=True, blockxsize=256, blockysize=256, compress="deflate") as dst:
        stripe = np.tile(np.arange(side, dtype=np.uint8), (bands, 256, 1))
        for row in range(0, side, 256):
            dst.write(stripe, window=rasterio.windows.Window(0, row, side, 256))
    full_bytes = side * side * bands
    tiles = scene_tiles(path, tile=256, stride=256)
    tracemalloc.start()
    try:
        count = sum(1 for _ in tiles)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 256 and isinstance(tiles, SceneTiles)
    assert peak < full_bytes / 4, f"peak {peak} bytes for a {full_bytes}-byte scene"
