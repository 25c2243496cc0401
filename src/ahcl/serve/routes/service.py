"""Service routes: liveness and what this server holds and allows."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ahcl.serve.deps import ArchiveDep, SettingsDep
from ahcl.serve.routing import ServeRoute
from ahcl.serve.settings import MAX_K

router = APIRouter(prefix="/api", tags=["service"], route_class=ServeRoute)


@router.get("/health", summary="Liveness")
def health(archive: ArchiveDep) -> dict[str, Any]:
    return {"status": "ok", "items": len(archive)}


@router.get("/info", summary="Items, bits, classes, model, index version")
def info(archive: ArchiveDep, settings: SettingsDep) -> dict[str, Any]:
    return archive.info() | {"writes": settings.writes,
                             "max_upload_bytes": settings.max_upload_bytes,
                             "max_pixels": settings.max_pixels, "max_k": MAX_K}
