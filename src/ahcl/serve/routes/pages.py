"""The web page, its scripts and the local API docs page (no CDN assets), from ``static/``."""

from __future__ import annotations

from importlib import resources
from typing import Callable

from fastapi import APIRouter, Response

#: URL → (file in ``ahcl/serve/static``, media type).
PAGES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
         "/static/style.css": ("style.css", "text/css; charset=utf-8"),
         "/docs": ("docs.html", "text/html; charset=utf-8"),
         "/static/docs.js": ("docs.js", "text/javascript; charset=utf-8")}


def pages_router() -> APIRouter:
    """The routes of :data:`PAGES`, each serving its file as read now (not in the schema)."""
    router = APIRouter(include_in_schema=False)
    for url, (name, media) in PAGES.items():
        router.add_api_route(url, _page(name, media), methods=["GET"])
    return router


def _page(name: str, media: str) -> Callable[[], Response]:
    data = resources.files("ahcl.serve").joinpath("static", name).read_bytes()

    def page() -> Response:
        return Response(data, media_type=media, headers={"Cache-Control": "no-cache"})

    return page
