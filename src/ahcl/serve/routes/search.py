"""Search routes: from an archive item (JSON) or from an uploaded image (multipart)."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ahcl.index import Hit
from ahcl.index.packing import unpack_codes
from ahcl.serve.deps import ArchiveDep, SettingsDep, upload_form
from ahcl.serve.routes.items import image_url
from ahcl.serve.routing import ServeRoute
from ahcl.serve.settings import MAX_K
from ahcl.serve.store import Archive
from ahcl.serve.uploads import decode_upload

router = APIRouter(prefix="/api/search", tags=["search"], route_class=ServeRoute)
RESULT = ('Returns `{"query": {"code": {"hex", "bits"}, ...}, "hits": [{"id", "distance", '
          '"label", "class", "image_url"}]}`, hits in (distance, id) order.')


class SearchById(BaseModel):
    """JSON body of POST /api/search: search from an archive item."""

    model_config = ConfigDict(extra="forbid")
    # Strict: JSON true is not id 1, and 1.7 is not k = 1.
    id: StrictInt = Field(description="archive item to search from (left out of its own hits)")
    k: StrictInt = Field(10, ge=1, le=MAX_K, description="number of hits")
    radius: StrictInt | None = Field(None, ge=0,
                                     description="only hits within this Hamming distance")


@router.post("", summary="Search from an archive item",
             description=RESULT + " A multipart upload sent here is served as by "
                                  "`POST /api/search/image`.")
def search_by_id(body: SearchById, archive: ArchiveDep) -> dict[str, Any]:
    code = archive.code_of(body.id)
    item = archive.item(body.id)
    hits = archive.search(code, body.k, body.radius, exclude=body.id)
    return result(archive, code, hits, {"id": body.id, "label": item["label"],
                                        "class": item["class"]})


@router.post("/image", summary="Search by an uploaded image", description=RESULT,
             dependencies=[Depends(upload_form(max_images=1))])
def search_by_image(
        archive: ArchiveDep, settings: SettingsDep,
        image: Annotated[UploadFile, File(description="query image (JPEG, PNG, TIFF, ...)")],
        k: Annotated[int, Form(ge=1, le=MAX_K, description="number of hits")] = 10,
        radius: Annotated[int | None, Form(ge=0, description="only hits within this "
                                                             "Hamming distance")] = None,
) -> dict[str, Any]:
    n_bits = archive.run.semantic_bits  # the radius applies to the semantic distance
    if radius is not None and radius > n_bits:
        raise HTTPException(422, f"radius must be in [0, {n_bits}], got {radius}")
    upload = decode_upload(image.file.read(), settings.max_pixels)
    code = archive.encode([upload.image])
    return result(archive, code, archive.search(code, k, radius))


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
