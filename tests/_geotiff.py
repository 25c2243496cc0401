"""GeoTIFF scenes written by the tests: mosaics of chips in UTM with a transform the tests know,
so footprints can be checked against pyproj independently."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from PIL import Image

UTM = "EPSG:32633"  # UTM zone 33N
ORIGIN = (400000.0, 5500000.0)  # upper-left corner of a mosaic, metres
PIXEL = 10.0  # metres


def write_mosaic(chips: Sequence[Path], path: Path, cols: int = 3) -> Path:
    """Write ``chips`` (square RGB images of one size) as a north-up GeoTIFF mosaic in UTM,
    ``cols`` chips a row, left to right then top to bottom, upper-left corner at ORIGIN."""
    import rasterio
    from affine import Affine

    arrays = [np.asarray(Image.open(chip).convert("RGB")) for chip in chips]
    side = arrays[0].shape[0]
    rows = -(-len(arrays) // cols)
    grid = np.zeros((rows * side, cols * side, 3), dtype=np.uint8)
    for k, array in enumerate(arrays):
        r, c = divmod(k, cols)
        grid[side * r:side * (r + 1), side * c:side * (c + 1)] = array
    with rasterio.open(path, "w", driver="GTiff", width=cols * side, height=rows * side, count=3,
                       dtype="uint8", crs=UTM,
                       transform=Affine(PIXEL, 0, ORIGIN[0], 0, -PIXEL, ORIGIN[1])) as dst:
        dst.write(grid.transpose(2, 0, 1))
    return path


def pixel_lonlat(col: float, row: float) -> tuple[float, float]:
    """lon/lat of a pixel position of a mosaic, by its transform and pyproj (independently of
    ahcl)."""
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    return to_lonlat.transform(ORIGIN[0] + col * PIXEL, ORIGIN[1] - row * PIXEL)


def assert_ring_is(geometry: dict, window: Sequence[int]) -> None:
    """``geometry`` is the closed footprint of a mosaic's pixel ``window``, corners mapped by
    :func:`pixel_lonlat` (upper-left, lower-left, lower-right, upper-right: counter-clockwise)."""
    c0, r0, w, h = window
    ring = geometry["coordinates"][0]
    assert geometry["type"] == "Polygon" and len(ring) == 5 and ring[0] == ring[-1]
    for (col, row), point in zip(((c0, r0), (c0, r0 + h), (c0 + w, r0 + h), (c0 + w, r0)), ring):
        assert point == pytest.approx(list(pixel_lonlat(col, row)), abs=1e-9)


def assert_found_first(ranked: Sequence[tuple[list[int], int, int | None, int]],
                       window: list[int]) -> None:
    """Hits ``(window, distance, instance_distance, id)`` in rank order: the tile at ``window``
    is one at distance 0 (semantic and instance), and only ties come before it, which rank by
    id: items whose codes equal the query's."""
    windows = [list(r[0]) for r in ranked]
    assert window in windows, windows
    ahead = ranked[:windows.index(window) + 1]
    assert all((d, di or 0) == (0, 0) for _, d, di, _ in ahead), ahead
    assert [r[3] for r in ahead] == sorted(r[3] for r in ahead)
