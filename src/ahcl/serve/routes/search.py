"""Search routes: from an archive item or a place in one of its scenes (JSON), or from an
uploaded image (multipart); each answers JSON or, with ``?format=geojson``, GeoJSON."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from ahcl.data.scenes import (PlaceError, PointOutsideError, SceneCatalog, SceneError, Tile,
                              WindowOutsideError, place_tile)
from ahcl.errors import InvalidValueError
from ahcl.index import Hit
from ahcl.index.hits import hits_feature_collection
from ahcl.index.packing import unpack_codes
from ahcl.serve.deps import ArchiveDep, SettingsDep, upload_form
from ahcl.serve.offload import run_blocking
from ahcl.serve.routes.items import (GEOJSON_RESPONSE, FormatQuery, archive_scenes,
                                     geojson_response, image_url, item_metas, public_place)
from ahcl.serve.routing import ServeRoute
from ahcl.serve.settings import MAX_K
from ahcl.serve.store import Archive
from ahcl.serve.uploads import decode_upload

router = APIRouter(prefix="/api/search", tags=["search"], route_class=ServeRoute)
RESULT = ('Returns `{"query": {"code": {"hex", "bits"}, ...}, "hits": [{"id", "distance", '
          '"label", "class", "image_url"}]}`, hits in (distance, id) order; a hit that is a '
          'tile of a scene also has `"place": {"scene", "scene_name", "window", "crs", '
          '"geometry"}` (`scene`: the scene\'s number, see `GET /api/items?format=geojson`). '
          'With `?format=geojson`: a FeatureCollection (application/geo+json) of the hits\' '
          'footprints (properties `role` "hit", `rank`, `id`, `distance`, `class`, ...) and '
          'the query\'s own, with `role` "query".')
PLACE_FIELDS = ("scene", "window", "lon", "lat")
NEITHER = "give the id of an archive item, or a place: scene and window, or lon and lat"


class SearchBody(BaseModel):
    """JSON body of POST /api/search: search from an archive item, or from a place."""

    model_config = ConfigDict(extra="forbid")
    # Strict: JSON true is not id 1, and 1.7 is not k = 1.
    id: StrictInt | None = Field(None, description="archive item to search from (left out of "
                                                   "its own hits); or give a place instead")
    scene: StrictInt | StrictStr | None = Field(
        None, description="a scene of the archive: its number (property `scene` of "
                          "`GET /api/items?format=geojson`), or its path exactly as stored; "
                          "never any other file")
    window: list[StrictInt] | None = Field(
        None, min_length=4, max_length=4,
        description="place: [col_off, row_off, width, height] pixels of `scene`")
    lon: float | None = Field(None, strict=True, allow_inf_nan=False,
                              description="place: longitude (EPSG:4326) of the tile's centre")
    lat: float | None = Field(None, strict=True, allow_inf_nan=False,
                              description="place: latitude (EPSG:4326); the tile is the "
                                          "archive's tile size, in `scene` or else in whichever "
                                          "scene of the archive contains the point")
    k: StrictInt = Field(10, ge=1, le=MAX_K, description="number of hits")
    radius: StrictInt | None = Field(None, ge=0,
                                     description="only hits within this Hamming distance")


@router.post("", summary="Search from an archive item or a place", response_model=None,
             responses=GEOJSON_RESPONSE,
             description=RESULT + " A multipart upload sent here is served as by "
                                  "`POST /api/search/image`.")
async def search_by_id(body: SearchBody, archive: ArchiveDep,
                       format: FormatQuery = "json") -> dict[str, Any] | JSONResponse:
    return await run_blocking(answer_search, body, archive, format)


def answer_search(body: SearchBody, archive: Archive, format: str
                  ) -> dict[str, Any] | JSONResponse:
    """The blocking part of a JSON search: from a place or from an archive item."""
    if any(getattr(body, f) is not None for f in PLACE_FIELDS):
        if body.id is not None:
            raise HTTPException(422, "give an item id or a place (scene and window, or lon and "
                                     "lat), not both")
        check_radius(archive, body.radius)
        catalog = archive_scenes(archive)
        tile = query_tile(catalog, body)
        code = archive.encode([tile.image])
        place = public_place(tile.meta, archive)
        return respond(archive, code, archive.search(code, body.k, body.radius),
                       {"place": place}, format, "place", place)
    if body.id is None:
        raise HTTPException(422, NEITHER)
    code = archive.code_of(body.id)
    item = archive.item(body.id)
    hits = archive.search(code, body.k, body.radius, exclude=body.id)
    place = public_place(item_metas(archive, [body.id])[0], archive)
    query = {"id": body.id, "label": item["label"], "class": item["class"]}
    return respond(archive, code, hits, query | ({"place": place} if place else {}), format,
                   body.id, place)


async def no_place_fields(request: Request) -> None:
    """Refuse a place sent with an image: a query is one or the other."""
    given = [f for f in PLACE_FIELDS if f in (await request.form())]  # parsed once, cached
    if given:
        raise HTTPException(422, f"a place query takes no image (got the image and "
                                 f"{', '.join(given)}): send the place alone as JSON to "
                                 "POST /api/search")


@router.post("/image", summary="Search by an uploaded image", description=RESULT,
             response_model=None, responses=GEOJSON_RESPONSE,
             dependencies=[Depends(upload_form(max_images=1)), Depends(no_place_fields)])
async def search_by_image(
        archive: ArchiveDep, settings: SettingsDep,
        image: Annotated[UploadFile, File(description="query image (JPEG, PNG, TIFF, ...)")],
        k: Annotated[int, Form(ge=1, le=MAX_K, description="number of hits")] = 10,
        radius: Annotated[int | None, Form(ge=0, description="only hits within this "
                                                             "Hamming distance")] = None,
        format: FormatQuery = "json",
) -> dict[str, Any] | JSONResponse:
    check_radius(archive, radius)
    return await run_blocking(_search_upload, archive, await image.read(), settings.max_pixels,
                              k, radius, format)


def _search_upload(archive: Archive, data: bytes, max_pixels: int, k: int, radius: int | None,
                   format: str) -> dict[str, Any] | JSONResponse:
    """The blocking part of a search by image: decode, encode, search."""
    code = archive.encode([decode_upload(data, max_pixels).image])
    return respond(archive, code, archive.search(code, k, radius), None, format, "upload")


def check_radius(archive: Archive, radius: int | None) -> None:
    n_bits = archive.run.semantic_bits  # the radius applies to the semantic distance
    if radius is not None and radius > n_bits:
        raise HTTPException(422, f"radius must be in [0, {n_bits}], got {radius}")


def query_tile(catalog: SceneCatalog, body: SearchBody) -> Tile:
    """The tile a place query names, read from a scene the archive's items name (only those:
    a client never makes the server open another file); one-line 4xx for every bad place."""
    if not catalog.scenes:
        raise HTTPException(422, "this archive holds no tiles of GeoTIFF scenes (an index built "
                                 "with ahcl index build --scenes): a place query needs them")
    if (body.lon is None) != (body.lat is None):
        raise HTTPException(422, "lon and lat go together: give both, or a scene and window")
    path = None if body.scene is None else scene_path(catalog, body.scene)
    number = None if path is None else catalog.scenes.index(path)
    lonlat = None if body.lon is None else (body.lon, body.lat)
    if lonlat is not None and path is not None and path not in catalog.georeferenced:
        raise HTTPException(422, f"scene {number} has no georeferencing: query it by window")
    try:
        return place_tile(catalog, scene=path, window=body.window, lonlat=lonlat)
    except WindowOutsideError as exc:
        raise HTTPException(422, f"window {exc.window} is not inside scene {number} "
                                 f"({exc.size[0]} × {exc.size[1]} pixels)") from None
    except PointOutsideError as exc:
        where = f"scene {number}" if path is not None else \
            f"every georeferenced scene of the archive ({len(catalog.georeferenced)})"
        raise HTTPException(422, f"point lon={exc.lon}, lat={exc.lat} is outside "
                                 f"{where}") from None
    except (PlaceError, InvalidValueError) as exc:  # their messages name no file
        raise HTTPException(422, str(exc)) from None
    except SceneError as exc:  # the server's own file is gone or damaged: not the client's
        where = getattr(exc, "path", None)
        shown = catalog.scenes.index(where) if where in catalog.scenes else number
        raise HTTPException(500, f"scene {shown} of the archive cannot be read on the "
                                 "server") from None


def scene_path(catalog: SceneCatalog, ref: int | str) -> str:
    """The stored path of the scene a client names by number or by exact stored path."""
    if isinstance(ref, int):
        if 0 <= ref < len(catalog.scenes):
            return catalog.scenes[ref]
        raise HTTPException(422, f"scene {ref} is not one of the archive's "
                                 f"{len(catalog.scenes)} scenes (numbers 0 to "
                                 f"{len(catalog.scenes) - 1})")
    if ref in catalog.scenes:
        return ref
    # The path is not echoed back (nor is any other request text).
    raise HTTPException(422, "the scene path given is not a scene of this archive: give the "
                             "scene's number, or its path exactly as stored")


def respond(archive: Archive, code: np.ndarray, hits: list[Hit], query: dict[str, Any] | None,
            format: str, name: str | int, place: dict[str, Any] | None = None
            ) -> dict[str, Any] | JSONResponse:
    """The answer to a search in the asked ``format``; ``place``: the query's own (public)
    place, drawn as the query in GeoJSON."""
    places = [public_place(m, archive) for m in item_metas(archive, [h.id for h in hits])]
    if format == "geojson":
        public = [replace(h, path=None, meta=p or {}) for h, p in zip(hits, places)]
        return geojson_response(hits_feature_collection([public], [name], [place]))
    body = result(archive, code, hits, query)
    for record, p in zip(body["hits"], places):
        if p is not None:
            record["place"] = p
    return body


def result(archive: Archive, code: np.ndarray, hits: list[Hit],
           query: dict[str, Any] | None = None) -> dict[str, Any]:
    """The response body: the query's code (and item, if any) and the public hits."""
    return {"query": {"code": code_record(code, archive.run.n_bits), **(query or {})},
            "hits": [h.to_dict(public=True) | {"image_url": image_url(h.id)} for h in hits]}


def code_record(code: np.ndarray, n_bits: int) -> dict[str, str]:
    """A packed code ``uint8 (1, n_bits/8)`` as hex bytes and as a bit string (character ``i``
    is 1 where u_i > 0)."""
    bits = unpack_codes(code, n_bits)[0] > 0
    return {"hex": bytes(code[0]).hex(), "bits": "".join("1" if b else "0" for b in bits)}
