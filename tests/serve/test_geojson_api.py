"""The HTTP API over an archive of GeoTIFF tiles (TestClient): footprints as GeoJSON for items
and searches, and search by place (a window of a scene, or a lon/lat point), with every bad
place a one-line 4xx that changes nothing."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from ahcl.cli import main
from ahcl.data.scenes import read_window
from ahcl.serve import Archive, ServeSettings, create_app
from tests.misuse.snapshot import snapshot
from tests.serve.conftest import TOKEN, noise_png

pytest.importorskip("rasterio")
pytest.importorskip("pyproj")

from tests._geotiff import (UTM, assert_found_first, assert_ring_is,  # noqa: E402
                            pixel_lonlat, write_mosaic)

SIDE = 48  # the serve run's chips, and the tiles
GEOJSON = "application/geo+json"


@pytest.fixture(scope="module")
def scenes(tiny_run_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    """A 3 × 2 UTM mosaic of the serve run's 48-px chips, and the index of its six tiles."""
    root = tmp_path_factory.mktemp("geo_api")
    chips = sorted((tiny_run_dir.parent / "data").rglob("*.png"))[::15][:6]
    mosaic = write_mosaic(chips, root / "mosaic.tif")
    index = root / "scenes.index"
    assert main(["index", "build", str(tiny_run_dir), "--out", str(index), "--scenes",
                 str(mosaic), "--tile", str(SIDE), "--stride", str(SIDE)]) == 0
    return mosaic, index


@pytest.fixture()
def geo(scenes, tiny_run_dir: Path, tmp_path: Path) -> tuple[TestClient, Path, Path]:
    """A client over a private copy of the scene index (the mosaic stays where it was)."""
    mosaic, index = scenes
    copy = Path(shutil.copy(index, tmp_path / "scenes.index"))
    archive = Archive.open(copy, run=tiny_run_dir, thumb_size=32)
    client = TestClient(create_app(archive, ServeSettings(token=TOKEN)),
                        base_url="http://127.0.0.1:8000")
    return client, mosaic, copy


def window_of(col: int, row: int) -> list[int]:
    return [SIDE * col, SIDE * row, SIDE, SIDE]


def ranked(hits: list[dict]) -> list[tuple[list[int], int, int | None, int]]:
    return [(h["place"]["window"], h["distance"], h["instance_distance"], h["id"]) for h in hits]


def test_items_as_geojson(geo) -> None:
    client, mosaic, _ = geo
    r = client.get("/api/items", params={"format": "geojson", "limit": 500})
    assert r.status_code == 200 and r.headers["content-type"] == GEOJSON
    collection = r.json()
    assert collection["type"] == "FeatureCollection" and collection["total"] == 6
    features = collection["features"]
    assert [f["id"] for f in features] == list(range(6))
    for k, f in enumerate(features):
        props = f["properties"]
        assert (props["id"], props["label"], props["class"]) == (k, -1, None)
        assert (props["scene"], props["scene_name"], props["crs"]) == (0, "mosaic.tif", UTM)
        assert props["window"] == window_of(*reversed(divmod(k, 3)))
        assert_ring_is(f["geometry"], props["window"])
    assert str(mosaic.parent) not in r.text  # no server path
    page = client.get("/api/items", params={"format": "geojson", "offset": 4}).json()
    assert [f["id"] for f in page["features"]] == [4, 5] and page["offset"] == 4
    assert "items" in client.get("/api/items").json()  # plain JSON as before


def test_items_of_an_archive_of_chips_have_no_features(run_dir: Path) -> None:
    client = TestClient(create_app(Archive.open(run_dir), ServeSettings(token=TOKEN)))
    r = client.get("/api/items", params={"format": "geojson"})
    assert r.headers["content-type"] == GEOJSON
    assert r.json()["features"] == [] and r.json()["total"] == 72
    assert client.get("/api/items", params={"format": "kml"}).status_code == 422


@pytest.mark.parametrize("k", range(6))
def test_place_by_window_finds_its_tile_first(geo, k: int) -> None:
    client, _, _ = geo
    window = window_of(*reversed(divmod(k, 3)))
    r = client.post("/api/search", json={"scene": 0, "window": window, "k": 6})
    assert r.status_code == 200, r.text
    body = r.json()
    place = body["query"]["place"]
    assert (place["scene"], place["window"], place["crs"]) == (0, window, UTM)
    assert_ring_is(place["geometry"], window)
    assert len(body["query"]["code"]["bits"]) == 32
    assert_found_first(ranked(body["hits"]), window)  # same pixels, same code
    assert all(h["image_url"] == f"/api/items/{h['id']}/image" for h in body["hits"])


def test_scene_by_its_stored_path(geo) -> None:
    client, mosaic, _ = geo
    by_path = client.post("/api/search", json={"scene": str(mosaic), "window": window_of(1, 0)})
    by_number = client.post("/api/search", json={"scene": 0, "window": window_of(1, 0)})
    assert by_path.status_code == 200 and by_path.json() == by_number.json()


def test_place_by_lonlat_as_geojson(geo) -> None:
    client, _, _ = geo
    lon, lat = pixel_lonlat(SIDE * 1.5 + 0.3, SIDE * 1.5 + 0.3)  # inside tile (col 1, row 1)
    r = client.post("/api/search?format=geojson", json={"lon": lon, "lat": lat, "k": 6})
    assert r.status_code == 200 and r.headers["content-type"] == GEOJSON
    query, *hits = r.json()["features"]
    assert query["properties"]["role"] == "query" and query["properties"]["query"] == "place"
    assert query["properties"]["window"] == window_of(1, 1)
    assert_ring_is(query["geometry"], window_of(1, 1))
    assert [f["properties"]["rank"] for f in hits] == [1, 2, 3, 4, 5, 6]
    for f in hits:
        props = f["properties"]
        assert props["role"] == "hit" and props["scene"] == 0 and "class" in props
        assert_ring_is(f["geometry"], props["window"])
    assert_found_first([(f["properties"]["window"], f["properties"]["distance"],
                         f["properties"]["instance_distance"], f["properties"]["id"])
                        for f in hits], window_of(1, 1))
    plain = client.post("/api/search", json={"lon": lon, "lat": lat, "k": 6}).json()
    assert [h["id"] for h in plain["hits"]] == [f["properties"]["id"] for f in hits]
    in_scene = client.post("/api/search", json={"scene": 0, "lon": lon, "lat": lat, "k": 6})
    assert in_scene.json() == plain


def test_search_by_item_and_by_upload_as_geojson(geo) -> None:
    client, _, _ = geo
    r = client.post("/api/search?format=geojson", json={"id": 4, "k": 3})
    assert r.headers["content-type"] == GEOJSON
    query, *hits = r.json()["features"]
    assert query["properties"]["role"] == "query" and query["properties"]["query"] == 4
    assert query["properties"]["window"] == window_of(1, 1)
    assert len(hits) == 3 and 4 not in [f["properties"]["id"] for f in hits]
    assert client.post("/api/search", json={"id": 4}).json()["query"]["place"]["window"] == \
        window_of(1, 1)
    upload = client.post("/api/search/image?format=geojson", data={"k": "2"},
                         files={"image": ("q.png", noise_png(3))})
    assert upload.headers["content-type"] == GEOJSON
    assert [f["properties"]["role"] for f in upload.json()["features"]] == ["hit", "hit"]


def detail_line(r) -> str:
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and detail, detail
    return detail


def test_bad_places_are_one_line_and_change_nothing(geo, run_dir: Path) -> None:
    client, mosaic, index = geo
    lon, lat = pixel_lonlat(10, 10)
    other = mosaic.parent / ".." / mosaic.parent.name / "mosaic.tif"  # the same file, another name
    cases = [
        ({"lon": 0.0, "lat": 0.0}, "outside every"),
        ({"scene": 0, "lon": 0.0, "lat": 0.0}, "outside scene 0"),
        ({"scene": 0, "window": [100, 0, 48, 48]}, "not inside scene 0"),
        ({"scene": 0, "window": [0, 0, 0, 48]}, "not inside"),
        ({"scene": 3, "window": [0, 0, 48, 48]}, "not one of the archive's 1 scenes"),
        ({"scene": "/etc/passwd", "window": [0, 0, 48, 48]}, "not a scene of this archive"),
        ({"scene": str(other), "window": [0, 0, 48, 48]}, "not a scene of this archive"),
        ({"scene": 0, "window": [0, 0, 48, 48], "lon": lon, "lat": lat}, "not both"),
        ({"id": 1, "scene": 0, "window": [0, 0, 48, 48]}, "not both"),
        ({"window": [0, 0, 48, 48]}, "needs the scene"),
        ({"lon": lon}, "lon and lat go together"),
        ({"lon": 200.0, "lat": lat}, "lon must be"),
        ({"k": 3}, "give the id of an archive item, or a place"),
    ]
    before = snapshot(index.parent), snapshot(mosaic.parent)
    for payload, words in cases:
        r = client.post("/api/search", json=payload)
        assert r.status_code == 422, (payload, r.text)
        detail = detail_line(r)
        assert words in detail and str(mosaic.parent) not in detail, (payload, detail)
    both = client.post("/api/search", files={"image": ("q.png", noise_png(1))},
                       data={"scene": "0", "window": "0"})
    assert both.status_code == 422 and "takes no image" in detail_line(both)
    chips = TestClient(create_app(Archive.open(run_dir), ServeSettings(token=TOKEN)))
    for payload in ({"lon": lon, "lat": lat}, {"scene": 0, "window": [0, 0, 48, 48]}):
        r = chips.post("/api/search", json=payload)
        assert r.status_code == 422 and "no tiles of GeoTIFF scenes" in detail_line(r)
    assert (snapshot(index.parent), snapshot(mosaic.parent)) == before


def test_a_scene_gone_from_the_server_is_a_path_free_500(scenes, tiny_run_dir: Path,
                                                        tmp_path: Path) -> None:
    mosaic, _ = scenes
    moved = Path(shutil.copy(mosaic, tmp_path / "moved.tif"))
    index = tmp_path / "moved.index"
    assert main(["index", "build", str(tiny_run_dir), "--out", str(index), "--scenes",
                 str(moved), "--tile", str(SIDE), "--stride", str(SIDE)]) == 0
    moved.unlink()
    client = TestClient(create_app(Archive.open(index, run=tiny_run_dir),
                                   ServeSettings(token=TOKEN)), raise_server_exceptions=False)
    r = client.post("/api/search", json={"scene": 0, "window": [0, 0, 48, 48]})
    assert r.status_code == 500 and detail_line(r) == ("scene 0 of the archive cannot be read "
                                                       "on the server")
    lon, lat = pixel_lonlat(10, 10)
    r = client.post("/api/search", json={"lon": lon, "lat": lat})
    assert r.status_code == 422 and str(tmp_path) not in detail_line(r)


def test_a_tile_has_a_thumbnail_of_its_window(geo) -> None:
    """Tiles have no file of their own: the thumbnail is the scene's window, read as indexed."""
    client, mosaic, _ = geo
    for k in (0, 4):
        r = client.get(f"/api/items/{k}/image")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        got = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.float64)
        want = read_window(mosaic, window_of(*reversed(divmod(k, 3)))).image
        want.thumbnail((32, 32), Image.Resampling.BILINEAR)
        assert got.shape == np.asarray(want).shape
        assert np.abs(got - np.asarray(want, dtype=np.float64)).mean() < 4  # JPEG's loss only
    other = np.asarray(Image.open(io.BytesIO(client.get("/api/items/1/image").content)))
    assert np.abs(other.astype(float) - got).mean() > 4  # a different chip looks different
