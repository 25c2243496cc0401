"""Archive routes: browse, read, add and remove items, thumbnails, classes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Response, UploadFile

from ahcl.serve.deps import ArchiveDep, ItemId, SettingsDep, require_write, upload_form
from ahcl.serve.routing import ServeRoute
from ahcl.serve.settings import MAX_FORM_FILES
from ahcl.serve.uploads import decode_upload

router = APIRouter(prefix="/api", tags=["archive"], route_class=ServeRoute)
MAX_PAGE = 500


def image_url(item_id: int) -> str:
    """Where the thumbnail of an item is served."""
    return f"/api/items/{item_id}/image"


def with_image_url(record: dict[str, Any]) -> dict[str, Any]:
    return record | {"image_url": image_url(record["id"])}


@router.get("/items", summary="Browse archive items (by class)")
def list_items(archive: ArchiveDep,
               label: Annotated[int | None, Query(description="class index (-1: unlabelled)")]
               = None,
               offset: Annotated[int, Query(ge=0)] = 0,
               limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 60) -> dict[str, Any]:
    """Items in id order, in pages of at most 500."""
    total, items = archive.items(label, offset, limit)
    return {"total": total, "offset": offset, "items": [with_image_url(it) for it in items]}


@router.post("/items", status_code=201, summary="Add images to the archive (needs write access)",
             dependencies=[Depends(require_write), Depends(upload_form(MAX_FORM_FILES))])
def add_items(archive: ArchiveDep, settings: SettingsDep,
              image: Annotated[list[UploadFile], File(description="one or more images")],
              label: Annotated[str | None, Form(description="class name (optional)")] = None,
              ) -> dict[str, Any]:
    """Stores the images, indexes their codes and saves the index atomically. With a
    ``label`` the codes come from the run's database-code step, else from the network."""
    if label is not None and label not in archive.classes:
        raise HTTPException(422, f"unknown class {label[:60]!r}; classes: "
                                 + ", ".join(archive.classes))
    index = None if label is None else archive.classes.index(label)
    uploads = [decode_upload(f.file.read(), settings.max_pixels) for f in image]
    items = archive.add(uploads, index)
    return {"items": [with_image_url(it) for it in items], "count": len(archive)}


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
