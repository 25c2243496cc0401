"""Archive routes: browse, read, add and remove items, thumbnails, classes; and where items
lie, for archives of GeoTIFF tiles.

The service never shows server paths, so a scene is shown by its **number**: its position in
the archive's list of scenes (every scene its items name, ordered by each one's first item id;
:func:`archive_scenes`), with the file's base name beside it (``scene_name``).
"""

from __future__ import annotations

import os
import weakref
from typing import Annotated, Any, Literal, Sequence

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Response, UploadFile
from fastapi.responses import JSONResponse

from ahcl.data.scenes import SceneCatalog
from ahcl.index.hits import items_feature_collection
from ahcl.run import index_scenes
from ahcl.serve.deps import ArchiveDep, ItemId, SettingsDep, require_write, upload_form
from ahcl.serve.offload import run_blocking
from ahcl.serve.routing import ServeRoute
from ahcl.serve.settings import MAX_FORM_FILES
from ahcl.serve.store import Archive

router = APIRouter(prefix="/api", tags=["archive"], route_class=ServeRoute)
MAX_PAGE = 500
GEOJSON = "application/geo+json"
#: The ``format`` query parameter of the listing and search endpoints.
FormatQuery = Annotated[Literal["json", "geojson"], Query(
    description="json (default), or geojson: a GeoJSON FeatureCollection (RFC 7946, EPSG:4326) "
                "of the footprints, one Feature per item that has one, as application/geo+json")]
GEOJSON_RESPONSE = {200: {"content": {"application/json": {}, GEOJSON: {}}}}
# Scene catalogs by archive, remade when the archive's index changes (one pass over all metas).
_CATALOGS: "weakref.WeakKeyDictionary[Archive, tuple[tuple[int, int, int], SceneCatalog]]" = \
    weakref.WeakKeyDictionary()


def image_url(item_id: int) -> str:
    """Where the thumbnail of an item is served."""
    return f"/api/items/{item_id}/image"


def with_image_url(record: dict[str, Any]) -> dict[str, Any]:
    return record | {"image_url": image_url(record["id"])}


def archive_scenes(archive: Archive) -> SceneCatalog:
    """The scenes of the archive's items and their tile size (cached until the index changes)."""
    index = archive.index
    stamp = (id(index), archive.revision, len(index))
    cached = _CATALOGS.get(archive)
    if cached is None or cached[0] != stamp:
        cached = stamp, index_scenes(index)
        _CATALOGS[archive] = cached
    return cached[1]


def item_metas(archive: Archive, ids: Sequence[int]) -> list[dict[str, Any] | None]:
    """The stored meta of items (None for one removed since it was found)."""
    index = archive.index
    try:
        return index.meta_of(list(ids))
    except ValueError:  # removed by a concurrent delete: look the others up one by one
        out: list[dict[str, Any] | None] = []
        for i in ids:
            try:
                out.append(index.meta_of([i])[0])
            except ValueError:
                out.append(None)
        return out


def public_place(meta: dict[str, Any] | None, archive: Archive) -> dict[str, Any] | None:
    """Where an item lies without its server path: ``{"scene": number, "scene_name": base
    name, "window", "crs", "geometry"}``; None for an item that is not a tile of a scene. The
    scene list (a pass over every item's meta after each change) is only read for tiles, so an
    archive of plain images never pays for it."""
    scene = (meta or {}).get("scene")
    if not isinstance(scene, str):
        return None
    catalog = archive_scenes(archive)
    if scene not in catalog.scenes:
        return None
    return {"scene": catalog.scenes.index(scene), "scene_name": os.path.basename(scene),
            "window": meta.get("window"), "crs": meta.get("crs"),
            "geometry": meta.get("geometry")}


def geojson_response(collection: dict[str, Any]) -> JSONResponse:
    return JSONResponse(collection, media_type=GEOJSON)


@router.get("/items", summary="Browse archive items (by class)", response_model=None,
            responses=GEOJSON_RESPONSE)
def list_items(archive: ArchiveDep,
               label: Annotated[int | None, Query(description="class index (-1: unlabelled)")]
               = None,
               offset: Annotated[int, Query(ge=0)] = 0,
               limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 60,
               format: FormatQuery = "json") -> dict[str, Any] | JSONResponse:
    """Items in id order, in pages of at most 500. With ``format=geojson``, the same page as a
    FeatureCollection of the items that have footprints (properties ``id``, ``label``,
    ``class``, ``image_url``, ``scene`` (number), ``scene_name``, ``window``, ``crs``), with
    ``total`` and ``offset`` as foreign members."""
    total, items = archive.items(label, offset, limit)
    records = [with_image_url(it) for it in items]
    if format == "json":
        return {"total": total, "offset": offset, "items": records}
    places = [public_place(m, archive) for m in item_metas(archive, [r["id"] for r in records])]
    return geojson_response({**items_feature_collection(records, places), "total": total,
                             "offset": offset})


@router.post("/items", status_code=201, summary="Add images to the archive (needs write access)",
             dependencies=[Depends(require_write), Depends(upload_form(MAX_FORM_FILES))])
async def add_items(archive: ArchiveDep, settings: SettingsDep,
                    image: Annotated[list[UploadFile], File(description="one or more images")],
                    label: Annotated[str | None, Form(description="class name (optional)")] = None,
                    ) -> dict[str, Any]:
    """Stores the images, indexes their codes and saves the index atomically. With a
    ``label`` the codes come from the run's database-code step, else from the network."""
    if label is not None and label not in archive.classes:
        raise HTTPException(422, f"unknown class {label[:60]!r}; classes: "
                                 + ", ".join(archive.classes))
    index = None if label is None else archive.classes.index(label)
    datas = [await f.read() for f in image]
    items, count = await run_blocking(_add, archive, datas, settings.max_pixels, index)
    return {"items": [with_image_url(it) for it in items], "count": count}


def _add(archive: Archive, datas: list[bytes], max_pixels: int, label: int | None
         ) -> tuple[list[dict[str, Any]], int]:
    """The blocking part of an addition: decode, encode, store; the new records and the size."""
    items = archive.add_files(datas, max_pixels, label)
    return items, len(archive)


@router.get("/items/{item_id}", summary="One archive item")
def get_item(archive: ArchiveDep, item_id: ItemId) -> dict[str, Any]:
    return with_image_url(archive.item(item_id))


@router.delete("/items/{item_id}", summary="Remove an archive item (needs write access)",
               dependencies=[Depends(require_write)])
def delete_item(archive: ArchiveDep, item_id: ItemId) -> dict[str, Any]:
    archive.delete(item_id)
    return {"deleted": item_id, "count": len(archive)}


@router.get("/items/{item_id}/image", summary="Thumbnail (JPEG)", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
def item_image(archive: ArchiveDep, item_id: ItemId) -> Response:
    # Ids are never reused, so an id's thumbnail never changes.
    return Response(archive.thumbnail(item_id), media_type="image/jpeg",
                    headers={"Cache-Control": "public, max-age=86400, immutable"})


@router.get("/classes", summary="Classes with item counts")
def classes(archive: ArchiveDep) -> dict[str, Any]:
    counts, unlabelled = archive.class_counts()
    return {"classes": [{"label": i, "name": n, "count": c}
                        for i, (n, c) in enumerate(zip(archive.classes, counts))],
            "unlabelled": unlabelled}
