"""The app factory: the HTTP API and web page over an :class:`~ahcl.serve.store.Archive`.

Endpoints (OpenAPI schema at ``/openapi.json``, rendered locally at ``/docs``)::

    POST   /api/search            JSON {"id", "k", "radius"}: search from an archive item
    POST   /api/search/image      multipart: image (file), k, radius (also taken at /api/search)
    GET    /api/items             browse: ?label=&offset=&limit=
    POST   /api/items             multipart: image (one or more files), label (class)  [write]
    GET    /api/items/{id}        one item
    DELETE /api/items/{id}        remove an item                                       [write]
    GET    /api/items/{id}/image  JPEG thumbnail (cached)
    GET    /api/scenes            the scenes of an archive of GeoTIFF tiles (number, size, corners)
    GET    /api/scenes/{n}/overview  JPEG overview of scene n (made once, cached)
    GET    /api/classes, /api/health, /api/info

With a writer process (:mod:`ahcl.serve.writer`), ``POST /api/items`` does not go through its
route: :class:`~ahcl.serve.middleware.WriterAdditions` checks write access and hands the body
to the writer process, which parses it and answers as the route would.

Safety: request bodies are counted as they arrive and cut off with 413 past
``max_upload_bytes`` (a ``Content-Length`` above it is refused before reading anything); image
headers are checked against ``max_pixels`` before decoding; ids are parsed as integers and looked
up in the index, never used as paths; writes need ``Authorization: Bearer TOKEN`` when a token is
set, and are refused without one unless the server is bound to loopback with writes enabled.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ahcl.serve.forms import validation_detail
from ahcl.serve.middleware import BodyLimit, SearchUploadAlias, WriterAdditions
from ahcl.serve.routes import items, pages, scenes, search, service
from ahcl.serve.settings import ServeSettings
from ahcl.serve.store import Archive, UnknownItemError
from ahcl.serve.uploads import UploadError
from ahcl.serve.writer import WriterError

__all__ = ["ServeSettings", "create_app"]


def create_app(archive: Archive, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``archive`` under ``settings``.

    The routes read both through dependencies (:mod:`ahcl.serve.deps`) from ``app.state``.
    """
    app = FastAPI(title="ahcl query-by-image service", version="1",
                  description="Search a remote-sensing image archive by example image "
                              "(deep hashing, Hamming distance).",
                  docs_url=None, redoc_url=None)  # /docs is served locally (no CDN assets)
    app.state.archive, app.state.settings = archive, settings or ServeSettings()
    for router in (search.router, items.router, scenes.router, service.router,
                   pages.pages_router()):
        app.include_router(router)
    app.add_exception_handler(UnknownItemError, _unknown_item)
    app.add_exception_handler(UploadError, _bad_upload)
    app.add_exception_handler(WriterError, _writer_failed)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_middleware(SearchUploadAlias, path="/api/search", target="/api/search/image")
    app.add_middleware(WriterAdditions, path="/api/items")
    app.add_middleware(BodyLimit, limit=app.state.settings.max_upload_bytes)  # outermost
    return app


async def _unknown_item(request: Request, exc: UnknownItemError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _bad_upload(request: Request, exc: UploadError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=exc.status)


async def _writer_failed(request: Request, exc: WriterError) -> JSONResponse:
    """The writer process stopped during an addition, or failed it: 503, with why."""
    return JSONResponse({"detail": str(exc)}, status_code=503)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    # One line in "detail", as every other answer has; FastAPI's list under "errors", without
    # the "input" of each error: never echo a request body back.
    errors = [{key: value for key, value in e.items() if key != "input"} for e in exc.errors()]
    return JSONResponse({"detail": validation_detail(errors),
                         "errors": jsonable_encoder(errors)}, status_code=422)
