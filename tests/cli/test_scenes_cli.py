"""GeoTIFF scenes through the CLI: ``ahcl index build --scenes`` and ``ahcl search --geojson``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ahcl.cli import main
from ahcl.index import HammingIndex

rasterio = pytest.importorskip("rasterio")
from pyproj import Transformer  # noqa: E402

from tests._geotiff import UTM, write_mosaic  # noqa: E402


@pytest.fixture(scope="module")
def scene(synthetic_scenes: Path, tmp_path_factory) -> tuple[Path, list[Path]]:
    """A 3 × 2 mosaic of 32-px synthetic chips, 10 m pixels, in UTM zone 33N."""
    chips = sorted(synthetic_scenes.rglob("*.png"))[::12][:6]
    return write_mosaic(chips, tmp_path_factory.mktemp("scene") / "mosaic.tif"), chips


def test_build_from_scenes_and_search_with_geojson(tiny_run, scene, tmp_path, capsys):
    path, chips = scene
    index_path = tmp_path / "scenes.index"
    assert main(["index", "build", str(tiny_run), "--out", str(index_path), "--scenes",
                 str(path.parent), "--tile", "32", "--stride", "32", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["added"], report["scenes"], report["tiles"]) == (6, 1, 6)
    index = HammingIndex.load(index_path)
    metas = index.meta_of(index.ids)
    assert [m["window"] for m in metas] == [[32 * c, 32 * r, 32, 32]
                                            for r in range(2) for c in range(3)]
    to_lonlat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    x0, y0 = 400000.0 + 320, 5500000.0  # tile (col 1, row 0): upper-left corner
    lon, lat = to_lonlat.transform(x0, y0)
    ring = metas[1]["geometry"]["coordinates"][0]
    assert min(abs(p[0] - lon) + abs(p[1] - lat) for p in ring) < 1e-9
    out = tmp_path / "hits.geojson"
    assert main(["search", str(index_path), str(chips[1]), "--run", str(tiny_run), "-k", "3",
                 "--geojson", str(out), "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["queries"][0]["hits"]
    collection = json.loads(out.read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 3
    for rank, (feature, hit) in enumerate(zip(collection["features"], hits), 1):
        assert feature["geometry"]["type"] == "Polygon"
        props = feature["properties"]
        assert (props["rank"], props["id"], props["distance"]) == (rank, hit["id"],
                                                                  hit["distance"])
        assert props["scene"] == str(path) and props["query"] == str(chips[1])
        assert hit["meta"]["geometry"] == feature["geometry"]


def test_bad_scene_is_one_line_and_writes_no_index(tiny_run, tmp_path, capsys):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    out = tmp_path / "x.index"
    assert main(["index", "build", str(tiny_run), "--out", str(out), "--scenes", str(bad)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "bad.tif" in err[0]
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["index", "build", str(tiny_run), "--out", str(out), "--scenes", str(empty)]) == 1
    assert "no .tif/.tiff" in capsys.readouterr().err
