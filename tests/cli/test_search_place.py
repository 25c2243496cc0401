"""Query by place through the CLI: ``ahcl search INDEX --run RUN --scene FILE --window ...`` and
``--lonlat LON LAT``; footprints checked against the transform and pyproj independently."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ahcl.cli import main

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("pyproj")

from tests._geotiff import (UTM, assert_found_first, assert_ring_is,  # noqa: E402
                            pixel_lonlat, write_mosaic)

SIDE = 32  # chip and tile side, pixels
WINDOWS = [[SIDE * c, SIDE * r, SIDE, SIDE] for r in range(2) for c in range(3)]


@pytest.fixture(scope="module")
def scene_index(tiny_run: Path, synthetic_scenes: Path, tmp_path_factory) -> tuple[Path, Path]:
    """A 3 × 2 UTM mosaic of synthetic chips and the index of its six 32-px tiles."""
    root = tmp_path_factory.mktemp("place")
    chips = sorted(synthetic_scenes.rglob("*.png"))[::12][:6]
    mosaic = write_mosaic(chips, root / "mosaic.tif")
    index = root / "scenes.index"
    assert main(["index", "build", str(tiny_run), "--out", str(index), "--scenes", str(mosaic),
                 "--tile", str(SIDE), "--stride", str(SIDE)]) == 0
    return mosaic, index


def search(capsys, index: Path, run: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["search", str(index), "--run", str(run), *args])
    out, err = capsys.readouterr()
    return code, out, err


def ranked(hits: list[dict]) -> list[tuple[list[int], int, int | None, int]]:
    return [(h["meta"]["window"], h["distance"], h["instance_distance"], h["id"]) for h in hits]


@pytest.mark.parametrize("window", WINDOWS)
def test_window_of_an_indexed_tile_finds_it_first_at_distance_0(tiny_run, scene_index, capsys,
                                                                window) -> None:
    mosaic, index = scene_index
    code, out, _ = search(capsys, index, tiny_run, "--scene", str(mosaic), "--window",
                          *map(str, window), "--json", "-k", "6")
    assert code == 0
    (query,) = json.loads(out)["queries"]
    assert (query["scene"], query["window"], query["crs"]) == (str(mosaic), window, UTM)
    assert_ring_is(query["geometry"], window)
    assert_found_first(ranked(query["hits"]), window)  # same pixels, same code


def test_lonlat_without_scene_searches_the_index_scenes(tiny_run, scene_index, capsys,
                                                        tmp_path) -> None:
    mosaic, index = scene_index
    lon, lat = pixel_lonlat(48.3, 48.3)  # inside the tile at column 1, row 1
    out_file = tmp_path / "place.geojson"
    code, out, _ = search(capsys, index, tiny_run, "--lonlat", str(lon), str(lat), "-k", "6",
                          "--geojson", str(out_file))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"# {mosaic} window [32, 32, 32, 32]" and len(lines) == 7
    assert lines[1].split()[:2] == ["1", "d=0"] and f"{mosaic} window [" in lines[1]
    collection = json.loads(out_file.read_text())
    query, *hits = collection["features"]
    assert query["properties"]["role"] == "query" and query["properties"]["window"] == [32, 32,
                                                                                        32, 32]
    assert_ring_is(query["geometry"], [32, 32, 32, 32])
    assert [f["properties"]["role"] for f in hits] == ["hit"] * 6
    assert [f["properties"]["rank"] for f in hits] == [1, 2, 3, 4, 5, 6]
    assert_found_first([(f["properties"]["window"], f["properties"]["distance"],
                         f["properties"]["instance_distance"], f["properties"]["id"])
                        for f in hits], [32, 32, 32, 32])
    for f in hits:
        assert_ring_is(f["geometry"], f["properties"]["window"])


def test_lonlat_in_a_given_scene_near_its_edge(tiny_run, scene_index, capsys) -> None:
    mosaic, index = scene_index
    lon, lat = pixel_lonlat(95.5, 0.5)  # the top-right pixel: the tile is shifted inside
    code, out, _ = search(capsys, index, tiny_run, "--scene", str(mosaic), "--lonlat", str(lon),
                          str(lat), "--json", "-k", "6")
    assert code == 0
    query = json.loads(out)["queries"][0]
    assert query["window"] == [64, 0, 32, 32]
    assert_found_first(ranked(query["hits"]), [64, 0, 32, 32])


def test_run_folder_as_source_takes_a_window(tiny_run, scene_index, capsys) -> None:
    mosaic, _ = scene_index
    capsys.readouterr()
    assert main(["search", str(tiny_run), "--scene", str(mosaic), "--window", "0", "0", "32",
                 "32", "-k", "2", "--json"]) == 0
    query = json.loads(capsys.readouterr().out)["queries"][0]
    assert query["window"] == [0, 0, 32, 32] and len(query["hits"]) == 2
    assert all(h["path"] for h in query["hits"])  # the run's own database images


def test_images_still_follow_the_options(tiny_run, scene_index, synthetic_scenes,
                                         capsys) -> None:
    _, index = scene_index
    chip = sorted(synthetic_scenes.rglob("*.png"))[0]
    code, out, _ = search(capsys, index, tiny_run, str(chip), "-k", "1", "--json")
    assert code == 0 and json.loads(out)["queries"][0]["image"] == str(chip)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file()}


def test_bad_place_queries_are_one_line_and_change_nothing(tiny_run, scene_index,
                                                           synthetic_scenes, capsys,
                                                           tmp_path) -> None:
    mosaic, index = scene_index
    chips_index = tmp_path / "chips.index"
    assert main(["index", "build", str(tiny_run), "--out", str(chips_index)]) == 0
    chip = str(sorted(synthetic_scenes.rglob("*.png"))[0])
    lon, lat = pixel_lonlat(10, 10)
    geojson = tmp_path / "never.geojson"
    cases = [
        (index, ["--lonlat", "0", "0"], "outside"),
        (index, ["--scene", str(mosaic), "--lonlat", "0", "0"], "outside scene"),
        (index, ["--scene", str(mosaic), "--window", "80", "0", "32", "32"], "not inside"),
        (index, ["--scene", str(mosaic), "--window", "0", "0", "32", "32", "--lonlat", str(lon),
                 str(lat)], "--window and --lonlat"),
        (index, [chip, "--scene", str(mosaic), "--window", "0", "0", "32", "32"],
         "takes no query images"),
        (index, [chip, "--lonlat", str(lon), str(lat)], "takes no query images"),
        (index, ["--window", "0", "0", "32", "32"], "--window needs --scene"),
        (index, ["--scene", str(mosaic)], "need a place"),
        (index, [], "give query images, or a place"),
        (index, ["--lonlat", "200", "0"], "lon must be"),
        (index, ["--scene", str(tmp_path / "nope.tif"), "--window", "0", "0", "32", "32"],
         "not found"),
        (chips_index, ["--lonlat", str(lon), str(lat)], "no georeferenced items"),
    ]
    before = digest(index.parent), digest(tmp_path)
    for source, args, words in cases:
        code, out, err = search(capsys, source, tiny_run, *args, "--geojson", str(geojson))
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 1 and out == "", (args, out, err)
        assert len(lines) == 1 and words in lines[0], (args, err)
    assert (digest(index.parent), digest(tmp_path)) == before and not geojson.exists()


# --- the real scene (EPSG:4326) --------------------------------------------------------------


def test_real_scene_lonlat_finds_its_tile(tiny_run, shared_dir, capsys, tmp_path) -> None:
    rmnp = shared_dir / "data" / "geotiff" / "rmnp-rgb.tif"
    if not rmnp.is_file():
        pytest.skip(f"{rmnp} not found: the real GeoTIFF scene is needed for this test "
                    "(see ../shared/data/geotiff/README.md)")
    index = tmp_path / "rmnp.index"
    assert main(["index", "build", str(tiny_run), "--out", str(index), "--scenes", str(rmnp),
                 "--tile", "128", "--stride", "128"]) == 0
    with rasterio.open(rmnp) as src:
        a, b, c, d, e, f = tuple(src.transform)[:6]

    def lonlat(col: float, row: float) -> list[float]:  # EPSG:4326: the transform alone
        return [a * col + b * row + c, d * col + e * row + f]

    lon, lat = lonlat(128 + 64.3, 128 + 64.3)  # inside the grid tile at (128, 128)
    code, out, _ = search(capsys, index, tiny_run, "--lonlat", str(lon), str(lat), "--json",
                          "-k", "5")
    assert code == 0
    query = json.loads(out)["queries"][0]
    assert (query["scene"], query["window"], query["crs"]) == (str(rmnp), [128, 128, 128, 128],
                                                               "EPSG:4326")
    ring = query["geometry"]["coordinates"][0]
    for point, want in zip(ring, [lonlat(128, 128), lonlat(128, 256), lonlat(256, 256),
                                  lonlat(256, 128)]):
        assert point == pytest.approx(want, abs=1e-9)
    assert_found_first(ranked(query["hits"]), [128, 128, 128, 128])
