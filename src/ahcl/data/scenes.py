"""Cutting large GeoTIFF scenes into tiles with their footprints (the library under
``ahcl index build --scenes``).

A scene is opened with rasterio and **never read whole**: each tile is one windowed read
(``DatasetReader.read(window=...)``), so memory stays at a few tiles whatever the scene's size
(GDAL's own block cache, bounded by ``GDAL_CACHEMAX``, comes on top).

Rules:

* **Grid**: tiles of ``tile`` × ``tile`` pixels start at every multiple of ``stride`` along each
  axis, left to right, then top to bottom. **Edge tiles that do not fit inside the scene are
  skipped** (no padding): the rightmost ``(width - tile) % stride`` columns and the bottom
  ``(height - tile) % stride`` rows are covered only by overlap, if at all.
  :attr:`SceneTiles.edge_skipped` says how many grid positions that drops.
* **RGB**: ``bands`` are rasterio's **1-based** band numbers used as R, G, B; by default
  ``(1, 2, 3)``, or band 1 as grey for a scene with fewer than three bands. The conversion to
  ``uint8`` RGB is the project's one rule, :func:`ahcl.data.images.to_rgb_array`: ``uint8`` is
  kept, anything else is stretched 2nd..98th percentile per band — here **per tile**, exactly as
  if the tile were a chip read by :func:`~ahcl.data.images.load_rgb`.
* **Nodata**: a pixel is valid when GDAL's mask of at least one chosen band says so (the mask
  comes from the dataset's nodata value, an alpha band or an internal mask). Tiles whose valid
  fraction is below ``min_valid`` are skipped and counted (:attr:`SceneTiles.nodata_skipped`);
  in the tiles kept, invalid pixels are excluded from the stretch and become 0 (black).
* **Georeferencing**: ``crs`` is ``"EPSG:<code>"`` when the scene's CRS has one, its WKT
  otherwise. ``geometry`` is the tile's footprint as a GeoJSON Polygon in EPSG:4326: the four
  pixel corners of the window mapped by the scene's affine transform, then by pyproj
  (``always_xy``) to lon/lat; the ring is closed and counter-clockwise (RFC 7946). Edges are not
  densified (a tile is small) and rings crossing the antimeridian are not split. A TIFF without a
  CRS or transform (GCP-only files included) is accepted with a warning: ``crs`` and
  ``geometry`` are None, only pixel windows are known.

* **Query by place**: :func:`place_tile` reads the query tile of a place, a pixel window of a
  scene (:func:`read_window`) or the tile around a lon/lat point (:func:`lonlat_window`: the
  window centred on the point, shifted inside the scene near its edges), the tile size and the
  scenes searched for the point being those of an index's items (:class:`SceneCatalog`).
* **Whole scenes**: :func:`scene_info` reads a scene's size, CRS and corner lon/lat from its
  header; :func:`read_scaled` reads the whole scene downsampled by GDAL as it reads (what
  :mod:`ahcl.data.overview` caches for the web page).

Every bad input raises :class:`SceneError` with one line naming the file, before any tile is
produced: missing file, not a GeoTIFF, corrupt or truncated file (checked from the TIFF block
table when the scene is opened), scene smaller than one tile, bands out of range, a CRS that
cannot be transformed to EPSG:4326. A read error that still happens while tiling (damage inside
a block) is raised as :class:`SceneError` naming the window.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import rasterio
from PIL import Image
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError, ProjError
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from ahcl.data.images import to_rgb_array
from ahcl.errors import AhclError, InvalidValueError

#: ``(col_off, row_off, width, height)`` in pixels.
PixelWindow = tuple[int, int, int, int]


class SceneError(AhclError):
    """A scene file cannot be tiled (unreadable, too small, bad bands, CRS, point outside).

    Fields: ``path`` (the scene).
    """


class WindowOutsideError(SceneError, ValueError):
    """A pixel window that does not lie inside its scene.

    Fields: ``path`` (the scene), ``window`` ``[col_off, row_off, width, height]``, ``size``
    ``(width, height)`` of the scene in pixels.
    """

    def __init__(self, path: str, window: list[int], size: tuple[int, int]) -> None:
        super().__init__(f"window {window} is not inside scene {path} ({size[0]} × {size[1]} "
                         "pixels)", path=path, window=window, size=size)


class PointOutsideError(SceneError, ValueError):
    """A lon/lat point that no scene (of those searched) contains.

    Fields: ``lon``, ``lat``, ``paths`` (the scenes searched), ``unreadable`` (those of them that
    could not be opened, each with its one-line reason), ``path`` (the scene when only one was
    searched, else None).
    """

    def __init__(self, lon: float, lat: float, paths: Sequence[str],
                 unreadable: Sequence[tuple[str, str]] = ()) -> None:
        paths, unreadable = list(paths), list(unreadable)
        where = f"scene {paths[0]}" if len(paths) == 1 else \
            f"every scene searched ({len(paths)})"
        also = f"; {len(unreadable)} could not be read, e.g. {unreadable[0][1]}" \
            if unreadable else ""
        super().__init__(f"point lon={lon}, lat={lat} is outside {where}{also}",
                         path=paths[0] if len(paths) == 1 else None, paths=paths,
                         unreadable=unreadable, lon=lon, lat=lat)


class PlaceError(AhclError, ValueError):
    """A query by place that cannot be answered as asked (window and lon/lat together, neither,
    a window without its scene, an index without tiles of scenes). The message names no file."""


@dataclass(frozen=True)
class Tile:
    """One tile of a scene: its RGB image and where it lies.

    Attributes:
        image: ``RGB`` PIL image of ``tile`` × ``tile`` pixels.
        scene: the scene's path, as given.
        window: ``(col_off, row_off, width, height)`` in pixels of the scene.
        crs: ``"EPSG:<code>"`` or WKT of the scene's CRS; None when ungeoreferenced.
        geometry: footprint as a GeoJSON Polygon in EPSG:4326 (lon, lat); None when
            ungeoreferenced.
        valid: fraction of valid (not nodata) pixels.
        bands: the three 1-based bands read as R, G, B.
    """

    image: Image.Image
    scene: str
    window: PixelWindow
    crs: str | None
    geometry: dict[str, Any] | None
    valid: float = 1.0
    bands: tuple[int, int, int] = (1, 2, 3)

    @property
    def meta(self) -> dict[str, Any]:
        """The JSON-ready metadata (``scene``, ``window`` as a list, ``crs``, ``geometry``,
        ``bands`` as a list: what a later read of the same place, a query by place or a
        thumbnail, reads again)."""
        return {"scene": self.scene, "window": list(self.window), "crs": self.crs,
                "geometry": self.geometry, "bands": list(self.bands)}


class _Geo:
    """A scene's pixel → lon/lat mapping (affine transform, then pyproj)."""

    def __init__(self, transform: Any, crs: Any, name: str) -> None:
        self.affine = transform
        wkt = crs.to_wkt()
        epsg = crs.to_epsg()
        self.crs = f"EPSG:{epsg}" if epsg else wkt
        try:
            source = CRS.from_wkt(wkt)
            self.to_lonlat = Transformer.from_crs(source, "EPSG:4326", always_xy=True)
            self.from_lonlat = Transformer.from_crs("EPSG:4326", source, always_xy=True)
        except (CRSError, ProjError) as exc:
            raise SceneError(f"cannot use scene {name}: its CRS cannot be transformed to "
                             f"EPSG:4326 ({_one_line(exc)})", path=name) from None

    def lonlat(self, pixels: Sequence[tuple[float, float]], name: str) -> list[list[float]]:
        """``[[lon, lat], ...]`` of (col, row) pixel positions of the scene."""
        xs, ys = zip(*(_apply(self.affine, col, row) for col, row in pixels))
        try:
            lons, lats = self.to_lonlat.transform(xs, ys, errcheck=True)
        except ProjError as exc:
            raise SceneError(f"cannot use scene {name}: its CRS cannot be transformed to "
                             f"EPSG:4326 ({_one_line(exc)})", path=name) from None
        points = [[float(x), float(y)] for x, y in zip(lons, lats)]
        if not all(math.isfinite(v) for p in points for v in p):
            raise SceneError(f"cannot use scene {name}: its CRS cannot be transformed to "
                             "EPSG:4326 (corners map to non-finite lon/lat)", path=name)
        return points

    def ring(self, window: PixelWindow, name: str) -> dict[str, Any]:
        c0, r0, w, h = window
        c1, r1 = c0 + w, r0 + h
        points = self.lonlat([(c0, r0), (c0, r1), (c1, r1), (c1, r0)], name)
        if _signed_area(points) < 0:  # a transform that flips an axis: make it CCW again
            points.reverse()
        return {"type": "Polygon", "coordinates": [points + [list(points[0])]]}


class _Scene:
    """An open, checked scene; the facts every public function needs."""

    def __init__(self, path: str | os.PathLike, bands: Sequence[int] | None = None,
                 warn: bool = True) -> None:
        self.name = name = os.fspath(path)
        if not os.path.isfile(name):
            raise SceneError(f"scene {name} not found", path=name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self.dataset = rasterio.open(name)
        except RasterioError as exc:
            raise SceneError(f"cannot read scene {name}: not a TIFF, or corrupt or truncated "
                             f"({_one_line(exc)})", path=name) from None
        try:
            self._check(bands, warn)
        except BaseException:
            self.dataset.close()
            raise

    def _check(self, bands: Sequence[int] | None, warn: bool) -> None:
        ds, name = self.dataset, self.name
        if ds.driver != "GTiff":
            raise SceneError(f"cannot read scene {name}: not a GeoTIFF (GDAL reads it as "
                             f"{ds.driver})", path=name)
        self.width, self.height, count = ds.width, ds.height, ds.count
        if bands is None:
            bands = (1, 2, 3) if count >= 3 else (1, 1, 1)
        bands = tuple(bands)
        if len(bands) != 3 or not all(isinstance(b, (int, np.integer)) for b in bands):
            raise InvalidValueError("bands", bands, "three 1-based band numbers (r, g, b)")
        bad = [b for b in bands if not 1 <= b <= count]
        if bad:
            raise SceneError(f"cannot use scene {name}: bands {bands} out of range, it has "
                             f"{count} band(s) numbered 1..{count}", path=name)
        self.bands = tuple(int(b) for b in bands)
        if any(np.dtype(ds.dtypes[b - 1]).kind == "c" for b in self.bands):
            raise SceneError(f"cannot use scene {name}: complex samples cannot be shown as RGB",
                             path=name)
        self._check_blocks()
        self.all_valid = all(ds.mask_flag_enums[b - 1] == [MaskFlags.all_valid]
                             for b in self.bands)
        if ds.crs is None or ds.transform.is_identity:
            self.geo = None
            if warn:
                warnings.warn(f"scene {name} has no georeferencing (CRS or transform): tiles get "
                              "pixel windows only (crs and geometry None)", stacklevel=4)
        else:
            self.geo = _Geo(ds.transform, ds.crs, name)
            self.geo.ring((0, 0, self.width, self.height), name)  # fails now, not mid-way

    def _check_blocks(self) -> None:
        """A truncated TIFF often opens fine (its header is first): check that the last block
        of every band lies inside the file."""
        ds, name = self.dataset, self.name
        size = os.path.getsize(name)
        for band in range(1, ds.count + 1):
            bh, bw = ds.block_shapes[band - 1]
            x, y = (ds.width - 1) // bw, (ds.height - 1) // bh
            offset = ds.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=band)
            length = ds.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=band)
            if offset is None or length is None:
                continue  # sparse block or not known: the read itself will tell
            if int(offset) + int(length) > size:
                raise SceneError(f"cannot read scene {name}: file truncated (band {band} "
                                 f"needs {int(offset) + int(length)} bytes, the file has {size})",
                                 path=name)

    def check_tile(self, tile: int) -> None:
        if self.width < tile or self.height < tile:
            raise SceneError(f"cannot tile scene {self.name}: {self.width} × {self.height} "
                             f"pixels is smaller than one tile of {tile} × {tile}",
                             path=self.name)

    def check_window(self, window: Sequence[int]) -> PixelWindow:
        try:
            c0, r0, w, h = (int(v) for v in window)
        except (TypeError, ValueError):
            raise InvalidValueError("window", window,
                                    "[col_off, row_off, width, height] in pixels") from None
        if w <= 0 or h <= 0 or c0 < 0 or r0 < 0 or c0 + w > self.width or r0 + h > self.height:
            raise WindowOutsideError(self.name, [c0, r0, w, h], (self.width, self.height))
        return c0, r0, w, h

    def pixel_of(self, lon: float, lat: float) -> tuple[float, float] | None:
        """The (col, row) pixel position of a lon/lat point; None when outside the scene (or
        not mappable into its CRS)."""
        assert self.geo is not None
        x, y = self.geo.from_lonlat.transform(float(lon), float(lat))
        col, row = _apply(~self.geo.affine, x, y)
        # A point the CRS cannot take comes back inf or nan: both compare False here.
        return (col, row) if 0 <= col < self.width and 0 <= row < self.height else None

    def tile(self, window: PixelWindow, min_valid: float = 0.0) -> Tile | None:
        """``window`` read and converted to RGB by the module's rules; None when its valid
        fraction is below ``min_valid``."""
        array, valid = self.read(window)
        fraction = 1.0 if valid is None else float(valid.mean())
        if fraction < min_valid:
            return None
        rgb = _rgb(array, valid, f"{self.name} window {list(window)}")
        geometry = self.geo.ring(window, self.name) if self.geo else None
        return Tile(Image.fromarray(rgb, "RGB"), self.name, window,
                    self.geo.crs if self.geo else None, geometry, fraction, self.bands)

    def read(self, window: PixelWindow, size: tuple[int, int] | None = None
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """The chosen bands of ``window`` as ``(H, W, 3)`` and the valid mask (None: all);
        with ``size`` = (width, height), resampled by GDAL to that size as it reads (the
        average of the valid pixels; the scene's overviews are used when it has them)."""
        ds = self.dataset
        c0, r0, w, h = window
        win = Window(c0, r0, w, h)
        unique = sorted(set(self.bands))
        shape = None if size is None else (len(unique), size[1], size[0])
        how = Resampling.nearest if size is None else Resampling.average
        try:
            data = ds.read(unique, window=win, out_shape=shape, resampling=how)
            valid = None if self.all_valid else \
                ds.read_masks(unique, window=win, out_shape=shape).any(axis=0)
        except RasterioError as exc:
            raise SceneError(f"cannot read scene {self.name} at window {list(window)}: corrupt "
                             f"or truncated ({_one_line(exc)})", path=self.name) from None
        pick = [unique.index(b) for b in self.bands]
        return np.moveaxis(data[pick], 0, -1), valid

    def close(self) -> None:
        self.dataset.close()


class SceneTiles:
    """The tiles of one GeoTIFF scene; iterate it for :class:`Tile` objects.

    The scene is opened and checked when this object is made (every :class:`SceneError` comes
    then, read errors inside damaged blocks excepted) and re-opened by each iteration, which
    reads one window per tile.

    Attributes:
        path, tile, stride, bands, min_valid: as given (``bands`` resolved to 1-based numbers).
        width, height: the scene's size in pixels.
        crs: ``"EPSG:<code>"`` or WKT; None when ungeoreferenced.
        positions: the grid windows that fit, in iteration order (before the nodata check).
        edge_skipped: grid positions dropped because the tile would cross the scene's edge.
        nodata_skipped: tiles skipped as mostly nodata by the last (or current) iteration.
    """

    def __init__(self, path: str | os.PathLike, *, tile: int = 256, stride: int = 256,
                 bands: Sequence[int] | None = None, min_valid: float = 0.9) -> None:
        for key, value in (("tile", tile), ("stride", stride)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise InvalidValueError(key, value, "a positive number of pixels")
        if not 0.0 <= float(min_valid) <= 1.0:
            raise InvalidValueError("min_valid", min_valid, "a fraction between 0 and 1")
        scene = _Scene(path, bands)
        try:
            scene.check_tile(tile)
        finally:
            scene.close()
        self.path, self.tile, self.stride = scene.name, int(tile), int(stride)
        self.bands, self.min_valid = scene.bands, float(min_valid)
        self.width, self.height = scene.width, scene.height
        self.crs = scene.geo.crs if scene.geo else None
        cols = range(0, self.width - self.tile + 1, self.stride)
        rows = range(0, self.height - self.tile + 1, self.stride)
        self.positions: list[PixelWindow] = [(c, r, self.tile, self.tile)
                                             for r in rows for c in cols]
        started = len(range(0, self.width, self.stride)) * len(range(0, self.height, self.stride))
        self.edge_skipped = started - len(self.positions)
        self.nodata_skipped = 0

    def __iter__(self) -> Iterator[Tile]:
        self.nodata_skipped = 0
        scene = _Scene(self.path, self.bands, warn=False)
        try:
            scene.check_tile(self.tile)
            for window in self.positions:
                tile = scene.tile(window, self.min_valid)
                if tile is None:
                    self.nodata_skipped += 1
                    continue
                yield tile
        finally:
            scene.close()

    def __repr__(self) -> str:
        return (f"SceneTiles({self.path!r}, tile={self.tile}, stride={self.stride}, "
                f"bands={self.bands}, min_valid={self.min_valid}, "
                f"positions={len(self.positions)})")


class TileReader:
    """Windows of several tiled scenes read by number: item ``i`` of ``units`` = (scene number
    in ``scenes``, window number in its :attr:`SceneTiles.positions`) is ``(tile, error)``:
    the :class:`Tile`, or None when mostly nodata; ``error`` a :class:`SceneError` (damage
    inside a block) instead of raised, so a reader in a worker process hands it over whole.

    Picklable, for data-loading workers: each process opens the scene it reads on first use
    and keeps the last one open (consecutive items mostly share a scene); :meth:`close` (or
    the end of the process) closes it.
    """

    def __init__(self, scenes: Sequence[SceneTiles], units: Sequence[tuple[int, int]]) -> None:
        self.scenes, self.units = list(scenes), list(units)
        self._open: tuple[int, _Scene] | None = None

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, i: int) -> tuple[Tile | None, SceneError | None]:
        s, w = self.units[i]
        tiles = self.scenes[s]
        try:
            if self._open is None or self._open[0] != s:
                self.close()
                scene = _Scene(tiles.path, tiles.bands, warn=False)
                self._open = (s, scene)
            return self._open[1].tile(tiles.positions[w], tiles.min_valid), None
        except SceneError as exc:
            return None, exc

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": None}  # an open dataset stays in its process


def scene_tiles(path: str | os.PathLike, *, tile: int = 256, stride: int = 256,
                bands: Sequence[int] | None = None, min_valid: float = 0.9) -> SceneTiles:
    """Tile a GeoTIFF scene by the rules in the module doc.

    Args:
        path: the GeoTIFF.
        tile: tile side in pixels.
        stride: step between tile origins in pixels (``< tile`` overlaps, ``> tile`` leaves gaps).
        bands: three 1-based band numbers as R, G, B; None for ``(1, 2, 3)`` (grey from band 1
            when the scene has fewer than three).
        min_valid: tiles with a smaller fraction of valid (not nodata) pixels are skipped.

    Returns:
        A :class:`SceneTiles`; iterating it yields :class:`Tile` objects.

    Raises:
        SceneError: the scene is missing, not a GeoTIFF, corrupt or truncated, smaller than one
            tile, has no such bands, or a CRS that cannot be transformed to EPSG:4326.
        InvalidValueError: ``tile``, ``stride``, ``bands`` or ``min_valid`` malformed.
    """
    return SceneTiles(path, tile=tile, stride=stride, bands=bands, min_valid=min_valid)


def footprint(path: str | os.PathLike, window: Sequence[int]) -> dict[str, Any]:
    """The footprint of a pixel ``window`` ``[col_off, row_off, width, height]`` of a scene, as
    a closed, counter-clockwise GeoJSON Polygon in EPSG:4326 (lon, lat).

    Raises:
        SceneError: the scene is unreadable or has no georeferencing, or the window is not
            inside it.
    """
    scene = _open_georeferenced(path)
    try:
        return scene.geo.ring(scene.check_window(window), scene.name)
    finally:
        scene.close()


def lonlat_window(path: str | os.PathLike, lon: float, lat: float,
                  tile: int = 256) -> PixelWindow:
    """The ``tile`` × ``tile`` window ``(col_off, row_off, width, height)`` centred on the point
    (``lon``, ``lat``, EPSG:4326), shifted to lie inside the scene near its edges.

    Raises:
        SceneError: the scene is unreadable, has no georeferencing or is smaller than one tile,
            or the point is outside it.
    """
    if not isinstance(tile, (int, np.integer)) or isinstance(tile, bool) or tile < 1:
        raise InvalidValueError("tile", tile, "a positive number of pixels")
    _check_lonlat(lon, lat)
    scene = _open_georeferenced(path)
    try:
        scene.check_tile(tile)
        pixel = scene.pixel_of(lon, lat)
        if pixel is None:
            raise PointOutsideError(lon, lat, [scene.name])
        return _centred(scene, pixel, int(tile))
    finally:
        scene.close()


def read_window(path: str | os.PathLike, window: Sequence[int], *,
                bands: Sequence[int] | None = None) -> Tile:
    """One pixel ``window`` ``[col_off, row_off, width, height]`` of a scene as a :class:`Tile`
    (RGB image and meta), read and converted exactly as :func:`scene_tiles` converts its tiles;
    no nodata threshold (the fraction is in :attr:`Tile.valid`). A scene without
    georeferencing is read too (``crs`` and ``geometry`` None).

    Raises:
        SceneError: the scene is unreadable or has no such bands.
        WindowOutsideError: the window is not inside the scene.
    """
    scene = _Scene(path, bands, warn=False)
    try:
        tile = scene.tile(scene.check_window(window))
        assert tile is not None  # min_valid 0 keeps every window
        return tile
    finally:
        scene.close()


@dataclass(frozen=True)
class SceneInfo:
    """What a scene is, from its header (no pixels read).

    Attributes:
        path: the scene's path, as given.
        width, height: its size in pixels.
        crs: ``"EPSG:<code>"`` or WKT; None when ungeoreferenced.
        corners: ``[lon, lat]`` (EPSG:4326) of the pixel corners (0, 0), (width, 0),
            (width, height), (0, height): upper-left, upper-right, lower-right, lower-left of a
            north-up scene; None when ungeoreferenced.
    """

    path: str
    width: int
    height: int
    crs: str | None
    corners: tuple[tuple[float, float], ...] | None

    @property
    def bounds(self) -> tuple[float, float, float, float] | None:
        """``(west, south, east, north)`` of the four corners (a projected scene's edges may
        bulge a little past them; a scene across the antimeridian is not handled)."""
        if self.corners is None:
            return None
        lons, lats = zip(*self.corners)
        return min(lons), min(lats), max(lons), max(lats)


def scene_info(path: str | os.PathLike) -> SceneInfo:
    """The :class:`SceneInfo` of a scene (its header only).

    Raises:
        SceneError: the scene is missing, not a GeoTIFF, corrupt or truncated, or has a CRS
            that cannot be transformed to EPSG:4326.
    """
    scene = _Scene(path, bands=(1, 1, 1), warn=False)
    try:
        w, h = scene.width, scene.height
        corners = None if scene.geo is None else tuple(
            (lon, lat) for lon, lat in scene.geo.lonlat([(0, 0), (w, 0), (w, h), (0, h)],
                                                        scene.name))
        return SceneInfo(scene.name, w, h, scene.geo.crs if scene.geo else None, corners)
    finally:
        scene.close()


def read_scaled(path: str | os.PathLike, size: tuple[int, int], *,
                bands: Sequence[int] | None = None) -> Image.Image:
    """The whole scene as an RGB image of ``size`` = (width, height) pixels, resampled by GDAL
    as it reads (:meth:`DatasetReader.read` with ``out_shape``: the average of the valid
    pixels, from the scene's own overviews when it has them), so the scene is never held whole
    at full resolution. The RGB rule is the tiles' (module doc), the stretch of non-``uint8``
    data being over the scaled image.

    Raises:
        SceneError: the scene is unreadable or has no such bands.
        InvalidValueError: ``size`` not two positive numbers of pixels.
    """
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in size):
        raise InvalidValueError("size", size, "(width, height), positive numbers of pixels")
    scene = _Scene(path, bands, warn=False)
    try:
        array, valid = scene.read((0, 0, scene.width, scene.height), (int(size[0]), int(size[1])))
        return Image.fromarray(_rgb(array, valid, f"{scene.name} overview"), "RGB")
    finally:
        scene.close()


def locate_lonlat(paths: Sequence[str | os.PathLike], lon: float, lat: float,
                  tile: int = 256) -> tuple[str, PixelWindow]:
    """The first scene of ``paths`` that contains the point (``lon``, ``lat``, EPSG:4326), and
    the window of :func:`lonlat_window` in it.

    Scenes without georeferencing are passed over; scenes that cannot be opened are passed over
    too, and named in the error if no other scene contains the point.

    Raises:
        PointOutsideError: no scene contains the point.
        SceneError: the scene that contains it is smaller than one tile.
    """
    _check_lonlat(lon, lat)
    unreadable: list[tuple[str, str]] = []
    for path in paths:
        try:
            scene = _Scene(path, bands=(1, 1, 1), warn=False)
        except SceneError as exc:
            unreadable.append((os.fspath(path), str(exc)))
            continue
        try:
            pixel = scene.pixel_of(lon, lat) if scene.geo is not None else None
            if pixel is not None:
                scene.check_tile(tile)
                return scene.name, _centred(scene, pixel, int(tile))
        finally:
            scene.close()
    raise PointOutsideError(lon, lat, [os.fspath(p) for p in paths], unreadable)


@dataclass(frozen=True)
class SceneCatalog:
    """The scenes an index's items were cut from (read from their meta).

    Attributes:
        scenes: every scene path the items name, in order of the first item (by id) of each.
        georeferenced: those of them with footprints, same order.
        tile: the side in pixels of the items' windows (the most common, the smaller on a
            tie); None when no item has a square window.
        counts: the number of items of each of ``scenes``, same order.
        bands: the bands the first item of each of ``scenes`` was read with (None for items
            of indexes built before items kept them: the scene's default bands), same order.
    """

    scenes: tuple[str, ...] = ()
    georeferenced: tuple[str, ...] = ()
    tile: int | None = None
    counts: tuple[int, ...] = ()
    bands: tuple[tuple[int, ...] | None, ...] = ()

    def bands_of(self, scene: str | os.PathLike) -> tuple[int, ...] | None:
        """The bands the items of ``scene`` were read with (None: not known, or not a scene
        of the catalog)."""
        name = os.fspath(scene)
        return self.bands[self.scenes.index(name)] if name in self.scenes else None


def scene_catalog(metas: Iterable[dict[str, Any] | None]) -> SceneCatalog:
    """The :class:`SceneCatalog` of items' meta (in id order; None: an item without meta)."""
    scenes: dict[str, bool] = {}
    counts: Counter[str] = Counter()
    sides: Counter[int] = Counter()
    bands: dict[str, tuple[int, ...] | None] = {}
    for meta in metas:
        if not meta or not isinstance(meta.get("scene"), str):
            continue
        name, window = meta["scene"], meta.get("window")
        scenes[name] = scenes.get(name, False) or bool(meta.get("geometry"))
        counts[name] += 1
        if name not in bands:
            bands[name] = meta_bands(meta)
        if isinstance(window, list) and len(window) == 4 and window[2] == window[3]:
            sides[int(window[2])] += 1
    tile = min(sides, key=lambda side: (-sides[side], side)) if sides else None
    return SceneCatalog(tuple(scenes), tuple(n for n, geo in scenes.items() if geo), tile,
                        tuple(counts[n] for n in scenes), tuple(bands[n] for n in scenes))


def meta_bands(meta: dict[str, Any]) -> tuple[int, ...] | None:
    """The bands a tile's meta says it was read with; None when it does not say (items of
    indexes built before items kept them) or says something malformed."""
    read = meta.get("bands")
    ok = isinstance(read, list) and len(read) == 3 and all(
        isinstance(b, int) and not isinstance(b, bool) for b in read)
    return tuple(read) if ok else None


def place_tile(catalog: SceneCatalog, *, scene: str | os.PathLike | None = None,
               window: Sequence[int] | None = None, lonlat: Sequence[float] | None = None,
               bands: Sequence[int] | None = None) -> Tile:
    """The query tile of a place: a ``window`` of ``scene``, or the tile of the catalog's size
    around ``lonlat`` = (lon, lat) in ``scene`` — without ``scene``, in the first of the
    catalog's georeferenced scenes that contains it (:func:`locate_lonlat`).

    ``scene`` is read as given: whether a caller may name it (a server never lets a client name
    a path the catalog does not hold) is the caller's rule. Without ``bands``, a scene of the
    catalog is read with the bands its items were read with (:meth:`SceneCatalog.bands_of`),
    another with its default bands.

    Raises:
        PlaceError: window and lonlat together or neither, a window without its scene, a lonlat
            with a catalog that has no tiles (no georeferenced scenes, without ``scene``).
        WindowOutsideError, PointOutsideError, SceneError: see :func:`read_window`,
            :func:`locate_lonlat` and :func:`lonlat_window`.
    """
    if (window is None) == (lonlat is None):
        raise PlaceError("a place is a window of a scene or a lon/lat point: give one of them"
                         + (", not both" if window is not None else ""))
    if window is not None:
        if scene is None:
            raise PlaceError("a window needs the scene it is a window of")
        return read_window(scene, window, bands=bands or catalog.bands_of(scene))
    lon, lat = lonlat  # type: ignore[misc]
    if catalog.tile is None or (scene is None and not catalog.georeferenced):
        raise PlaceError("the index has no georeferenced items (tiles of GeoTIFF scenes, from "
                         "ahcl index build --scenes): a query by lon/lat needs them")
    if scene is None:
        scene, found = locate_lonlat(catalog.georeferenced, lon, lat, catalog.tile)
    else:
        found = lonlat_window(scene, lon, lat, catalog.tile)
    return read_window(scene, found, bands=bands or catalog.bands_of(scene))


def _rgb(array: np.ndarray, valid: np.ndarray | None, what: str) -> np.ndarray:
    """``uint8 (H, W, 3)`` of ``(H, W, 3)`` samples by the module's RGB rule: invalid pixels
    are left out of the stretch and become 0."""
    if valid is not None and not valid.all():
        if array.dtype == np.uint8:
            array = np.where(valid[:, :, None], array, 0).astype(np.uint8)
        else:
            array = np.where(valid[:, :, None], array.astype(np.float64), np.nan)
    return to_rgb_array(array, None, what)


def _check_lonlat(lon: float, lat: float) -> None:
    for key, value, bound in (("lon", lon, 180.0), ("lat", lat, 90.0)):
        try:
            ok = math.isfinite(float(value)) and abs(float(value)) <= bound
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InvalidValueError(key, value, f"degrees in [-{bound:g}, {bound:g}] (EPSG:4326)")


def _centred(scene: _Scene, pixel: tuple[float, float], tile: int) -> PixelWindow:
    """The ``tile`` window centred on ``pixel``, shifted to lie inside the scene."""
    col, row = pixel
    c0 = min(max(int(math.floor(col - tile / 2)), 0), scene.width - tile)
    r0 = min(max(int(math.floor(row - tile / 2)), 0), scene.height - tile)
    return c0, r0, tile, tile


def _open_georeferenced(path: str | os.PathLike) -> _Scene:
    scene = _Scene(path, bands=(1, 1, 1), warn=False)
    if scene.geo is None:
        scene.close()
        raise SceneError(f"scene {scene.name} has no georeferencing (CRS or transform): it has "
                         "pixel windows only", path=scene.name)
    return scene


def _apply(affine: Any, x: float, y: float) -> tuple[float, float]:
    """``affine`` applied to the point (written out: affine's ``*`` is deprecated, ``@`` new)."""
    a, b, c, d, e, f = tuple(affine)[:6]
    return a * x + b * y + c, d * x + e * y + f


def _signed_area(points: list[list[float]]) -> float:
    """Twice the signed area of an open ring (shoelace); positive when counter-clockwise."""
    return sum(x0 * y1 - x1 * y0
               for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
