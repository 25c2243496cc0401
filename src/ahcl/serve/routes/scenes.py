"""Scene routes: the scenes an archive of GeoTIFF tiles was cut from, and an overview image of
each (downsampled once, cached beside the index: :mod:`ahcl.data.overview`), for the page to
draw footprints over.

Scenes are named by number, as everywhere in the service (:func:`~ahcl.serve.routes.items.
archive_scenes`): a request chooses among the scenes the archive's items name and nothing else,
and the cache files are named by hashes, so no request text reaches a path.
"""

from __future__ import annotations

import os
import re
import weakref
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response

from ahcl.data.overview import MAX_SIDE, OverviewCache, overview_size
from ahcl.data.scenes import SceneCatalog, SceneError
from ahcl.serve.deps import ArchiveDep
from ahcl.serve.routes.items import archive_scenes
from ahcl.serve.routing import ServeRoute
from ahcl.serve.store import Archive

router = APIRouter(prefix="/api/scenes", tags=["scenes"], route_class=ServeRoute)
#: Cache folder of an archive's overviews: beside its index, as its images folder is
#: (``RUN/archive.overviews``, or ``X.overviews`` beside ``X.index``).
OVERVIEWS_SUFFIX = ".overviews"
_NUMBER = re.compile(r"[0-9]{1,9}")
_CACHES: "weakref.WeakKeyDictionary[Archive, OverviewCache]" = weakref.WeakKeyDictionary()
NOT_FOUND = {404: {"description": "no scene has this number"}}


def overview_cache(archive: Archive) -> OverviewCache:
    """The archive's :class:`~ahcl.data.overview.OverviewCache` (longest side
    :data:`~ahcl.data.overview.MAX_SIDE`)."""
    cache = _CACHES.get(archive)
    if cache is None:
        cache = _CACHES[archive] = OverviewCache(
            archive.index_path.with_suffix(OVERVIEWS_SUFFIX), MAX_SIDE)
    return cache


def overview_url(number: int) -> str:
    return f"/api/scenes/{number}/overview"


async def scene_number(number: Annotated[str, Path(description="the scene's number")]) -> int:
    """The scene number from the URL: decimal digits only, anything else is 'not found'."""
    if not _NUMBER.fullmatch(number):
        raise HTTPException(404, f"no scene has number {number[:40]}")
    return int(number)


SceneNumber = Annotated[int, Depends(scene_number)]


def scene_record(archive: Archive, catalog: SceneCatalog, number: int) -> dict[str, Any]:
    """What the page needs of one scene of ``catalog`` (the archive's, read once per request,
    so that every record comes from one snapshot; no server path); ``width`` and the fields
    after it are None for a scene that cannot be read on the server."""
    path = catalog.scenes[number]
    record: dict[str, Any] = {"scene": number, "name": os.path.basename(path),
                              "items": catalog.counts[number]}
    cache = overview_cache(archive)
    try:
        info = cache.info(path)
    except SceneError:
        return record | dict.fromkeys(("width", "height", "crs", "corners", "bounds",
                                       "overview"))
    size = overview_size(info.width, info.height, cache.max_side)
    return record | {
        "width": info.width, "height": info.height, "crs": info.crs,
        "corners": None if info.corners is None else [list(c) for c in info.corners],
        "bounds": None if info.bounds is None else list(info.bounds),
        "overview": {"url": overview_url(number), "width": size[0], "height": size[1],
                     "scale": [size[0] / info.width, size[1] / info.height]}}


@router.get("", summary="The archive's scenes (archives of GeoTIFF tiles)")
def list_scenes(archive: ArchiveDep) -> dict[str, Any]:
    """Returns `{"tile": side in pixels of the items' windows, "scenes": [{"scene": number,
    "name": file base name, "items": count, "width", "height": pixels, "crs", "corners":
    [[lon, lat]] of the pixel corners (0, 0), (width, 0), (width, height), (0, height),
    "bounds": [west, south, east, north] of those corners (EPSG:4326; null without
    georeferencing), "overview": {"url", "width", "height", "scale": [x, y] overview pixels per
    scene pixel}}]}`, in scene number order; empty for an archive without tiles of scenes. A
    scene that cannot be read on the server has `width` and the fields after it null."""
    catalog = archive_scenes(archive)
    return {"tile": catalog.tile,
            "scenes": [scene_record(archive, catalog, n) for n in range(len(catalog.scenes))]}


@router.get("/{number}/overview", summary="A scene's overview (JPEG)", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}, **NOT_FOUND})
def scene_overview(archive: ArchiveDep, number: SceneNumber, request: Request) -> Response:
    """The whole scene downsampled to at most 1024 pixels a side (made at the first request,
    then read from the cache beside the index; remade when the scene's file changes). Scene
    pixel (col, row) is overview pixel (col × scale[0], row × scale[1]) of `GET /api/scenes`."""
    catalog = archive_scenes(archive)
    if number >= len(catalog.scenes):
        raise HTTPException(404, f"no scene has number {number}: the archive has "
                                 f"{len(catalog.scenes)}")
    try:
        overview = overview_cache(archive).get(catalog.scenes[number])
    except SceneError:
        raise HTTPException(500, f"scene {number} of the archive cannot be read on the "
                                 "server") from None
    # A number names another scene once the archive's items change: revalidate every time.
    headers = {"ETag": f'"{overview.key}"', "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return Response(overview.jpeg, media_type="image/jpeg", headers=headers)
