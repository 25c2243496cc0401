"""The HTTP API and web page over an :class:`~ahcl.serve.store.Archive` (FastAPI).

Endpoints (OpenAPI schema at ``/openapi.json``, rendered locally at ``/docs``)::

    POST   /api/search              multipart: image (file), k, radius  |  JSON {"id", "k", "radius"}
    GET    /api/items               browse: ?label=&offset=&limit=
    POST   /api/items               multipart: image (one or more files), label (class name)  [write]
    GET    /api/items/{id}          one item
    DELETE /api/items/{id}          remove an item                                              [write]
    GET    /api/items/{id}/image    JPEG thumbnail (cached)
    GET    /api/classes, /api/health, /api/info

Safety: request bodies are counted as they arrive and cut off with 413 past
``max_upload_bytes`` (a ``Content-Length`` above it is refused before reading anything); image
headers are checked against ``max_pixels`` before decoding; ids are parsed as integers and looked
up in the index, never used as paths; writes need ``Authorization: Bearer TOKEN`` when a token is
set, and are refused without one unless the server is bound to loopback with writes enabled.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ahcl.index.packing import unpack_codes
from ahcl.serve.store import Archive, UnknownItemError, Upload, UploadError, decode_upload

MAX_K = 1000
_ID = re.compile(r"-?[0-9]{1,18}")
_STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
           "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
           "/static/style.css": ("style.css", "text/css; charset=utf-8"),
           "/docs": ("docs.html", "text/html; charset=utf-8"),
           "/static/docs.js": ("docs.js", "text/javascript; charset=utf-8")}


@dataclass
class ServeSettings:
    """Limits and access rules of one server.

    Attributes:
        host: the address the server is bound to (decides whether writes may go without a token).
        token: bearer token required by write endpoints (``None``: no token).
        allow_writes: enable writes without a token (only honoured on a loopback ``host``).
        max_upload_bytes: largest request body accepted (413 above it).
        max_pixels: largest image (width × height) decoded (400 above it).
    """

    host: str = "127.0.0.1"
    token: str | None = None
    allow_writes: bool = False
    max_upload_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000

    @property
    def writes(self) -> str:
        """``"token"``, ``"open"`` (loopback, enabled) or ``"disabled"``."""
        if self.token:
            return "token"
        return "open" if self.allow_writes and is_loopback(self.host) else "disabled"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BodyTooLarge(Exception):
    """A request body went past the configured limit while being read."""


class BodyLimit:
    """ASGI middleware: 413 for bodies over ``limit`` bytes, without buffering them first."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, int(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body over the limit of {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class SearchById(BaseModel):
    """JSON body of ``POST /api/search``: search from an archive item."""

    model_config = ConfigDict(extra="forbid")
    id: int = Field(description="archive item to search from (left out of its own hits)")
    k: int = Field(10, ge=1, le=MAX_K, description="number of hits")
    radius: int | None = Field(None, ge=0, description="only hits within this Hamming distance")


def _error(status: int, detail: Any) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _parse_id(raw: str) -> int:
    """An item id from the URL: decimal digits only, anything else is 'not found'."""
    if not _ID.fullmatch(raw):
        raise UnknownItemError(f"no archive item has id {raw!r}")
    return int(raw)


def _code_record(code: np.ndarray, n_bits: int) -> dict[str, str]:
    """The packed code as hex bytes and as a bit string (character ``i`` is 1 where u_i > 0)."""
    bits = unpack_codes(code, n_bits)[0] > 0
    return {"hex": bytes(code[0]).hex(), "bits": "".join("1" if b else "0" for b in bits)}


def _int_field(form: Any, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = form.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(str(raw))
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {str(raw)[:20]!r}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def create_app(archive: Archive, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``archive`` under ``settings``."""
    settings = settings or ServeSettings()
    app = FastAPI(title="ahcl query-by-image service", version="1",
                  description="Search a remote-sensing image archive by example image "
                              "(deep hashing, Hamming distance).",
                  docs_url=None, redoc_url=None)  # /docs is served locally (no CDN assets)
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)
    app.state.archive, app.state.settings = archive, settings
    n_bits = archive.run.n_bits

    @app.exception_handler(UnknownItemError)
    async def _unknown(request: Request, exc: UnknownItemError) -> JSONResponse:
        return _error(404, str(exc).strip("'\""))

    @app.exception_handler(UploadError)
    async def _upload(request: Request, exc: UploadError) -> JSONResponse:
        return _error(exc.status, str(exc))

    def check_write(request: Request) -> JSONResponse | None:
        if settings.token:
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                                     settings.token.encode()):
                return JSONResponse({"detail": "write access needs 'Authorization: Bearer TOKEN'"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
            return None
        if settings.writes == "disabled":
            return _error(403, "writes are disabled: start the server with --token (or "
                               "AHCL_TOKEN), or on 127.0.0.1 with --allow-writes")
        return None

    async def read_form(request: Request) -> Any:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise UploadError("send multipart/form-data with the image in the field 'image'", 415)
        return await request.form(max_files=64, max_fields=16)

    async def uploads_of(form: Any, max_files: int) -> list[Upload]:
        files = [f for f in form.getlist("image") if isinstance(f, UploadFile)]
        if not files:
            raise UploadError("no file in the form field 'image'", 422)
        if len(files) > max_files:
            raise UploadError(f"at most {max_files} images per request", 422)
        out = []
        for f in files:
            data = await f.read()
            out.append(await run_in_threadpool(decode_upload, data, settings.max_pixels))
        return out

    search_doc = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary", "description": "query image"},
            "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10},
            "radius": {"type": "integer", "minimum": 0}}}},
        "application/json": {"schema": SearchById.model_json_schema()}}}}

    @app.post("/api/search", openapi_extra=search_doc, tags=["search"],
              summary="Search by an uploaded image or by an archive item")
    async def search(request: Request) -> JSONResponse:
        """Returns ``{"query": {"code": {"hex", "bits"}, "id"?, "label"?}, "hits": [{"id",
        "distance", "label", "class", "image_url"}]}`` in (distance, id) order."""
        ctype = request.headers.get("content-type", "")
        query: dict[str, Any] = {}
        if ctype.startswith("application/json"):
            try:
                body = SearchById.model_validate_json(await request.body())
            except ValidationError as exc:
                return _error(422, json.loads(exc.json(include_url=False, include_input=False)))
            k, radius = body.k, body.radius
            code = archive.code_of(body.id)
            item = archive.item(body.id)
            query = {"id": body.id, "label": item["label"], "class": item["class"]}
            exclude: int | None = body.id
        else:
            form = await read_form(request)
            try:
                k = _int_field(form, "k", 10, 1, MAX_K)
                radius = _int_field(form, "radius", None, 0, n_bits)
                upload = (await uploads_of(form, 1))[0]
            except ValueError as exc:
                return _error(422, str(exc))
            finally:
                await form.close()
            code = await run_in_threadpool(archive.encode, [upload.image])
            exclude = None
        hits = await run_in_threadpool(archive.search, code, k, radius, exclude)
        for h in hits:
            h["image_url"] = f"/api/items/{h['id']}/image"
        return JSONResponse({"query": {"code": _code_record(code, n_bits), **query},
                             "hits": hits})

    @app.get("/api/items", tags=["archive"], summary="Browse archive items (by class)")
    def list_items(label: int | None = None, offset: int = 0, limit: int = 60) -> JSONResponse:
        """``label``: class index (``-1``: unlabelled); pages of at most 500 items."""
        if offset < 0 or not 1 <= limit <= 500:
            return _error(422, "offset must be >= 0 and limit in [1, 500]")
        total, items = archive.items(label, offset, limit)
        for it in items:
            it["image_url"] = f"/api/items/{it['id']}/image"
        return JSONResponse({"total": total, "offset": offset, "items": items})

    @app.post("/api/items", status_code=201, tags=["archive"],
              summary="Add images to the archive (needs write access)",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                                     "properties": {
                      "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
                      "label": {"type": "string", "description": "class name (optional)"}}}}}}})
    async def add_items(request: Request) -> JSONResponse:
        """Stores the images, indexes their codes and saves the index atomically. With a
        ``label`` the codes come from the run's database-code step, else from the network."""
        refused = check_write(request)
        if refused is not None:
            return refused
        form = await read_form(request)
        try:
            name = form.get("label")
            label = None
            if isinstance(name, str) and name != "":
                if name not in archive.classes:
                    return _error(422, f"unknown class {name[:60]!r}; classes: "
                                       + ", ".join(archive.classes))
                label = archive.classes.index(name)
            uploads = await uploads_of(form, 64)
        finally:
            await form.close()
        items = await run_in_threadpool(archive.add, uploads, label)
        for it in items:
            it["image_url"] = f"/api/items/{it['id']}/image"
        return JSONResponse({"items": items, "count": len(archive)}, status_code=201)

    @app.get("/api/items/{item_id}", tags=["archive"], summary="One archive item")
    def get_item(item_id: str) -> JSONResponse:
        record = archive.item(_parse_id(item_id))
        return JSONResponse(record | {"image_url": f"/api/items/{record['id']}/image"})

    @app.delete("/api/items/{item_id}", tags=["archive"],
                summary="Remove an archive item (needs write access)")
    def delete_item(item_id: str, request: Request) -> JSONResponse:
        refused = check_write(request)
        if refused is not None:
            return refused
        archive.delete(_parse_id(item_id))
        return JSONResponse({"deleted": int(item_id), "count": len(archive)})

    @app.get("/api/items/{item_id}/image", tags=["archive"], summary="Thumbnail (JPEG)",
             response_class=Response)
    def item_image(item_id: str) -> Response:
        data = archive.thumbnail(_parse_id(item_id))
        # Ids are never reused, so an id's thumbnail never changes.
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "public, max-age=86400, immutable"})

    @app.get("/api/classes", tags=["archive"], summary="Classes with item counts")
    def classes() -> JSONResponse:
        counts, unlabelled = archive.class_counts()
        return JSONResponse({"classes": [{"label": i, "name": n, "count": c} for i, (n, c)
                                         in enumerate(zip(archive.classes, counts))],
                             "unlabelled": unlabelled})

    @app.get("/api/health", tags=["service"], summary="Liveness")
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "items": len(archive)})

    @app.get("/api/info", tags=["service"], summary="Items, bits, classes, model, index version")
    def info() -> JSONResponse:
        return JSONResponse(archive.info() | {"writes": settings.writes,
                                              "max_upload_bytes": settings.max_upload_bytes,
                                              "max_pixels": settings.max_pixels, "max_k": MAX_K})

    for route, (name, media) in _STATIC.items():
        app.add_api_route(route, _static_handler(name, media), methods=["GET"],
                          include_in_schema=False)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    return app


def _static_handler(name: str, media: str):
    data = resources.files("ahcl.serve").joinpath("static", name).read_bytes()

    def handler() -> Response:
        return Response(data, media_type=media, headers={"Cache-Control": "no-cache"})

    return handler


class ServerThread:
    """Run the app with uvicorn in a background thread (tests, benchmarks, notebooks).

    Use as a context manager; ``url`` is ``http://HOST:PORT`` once started (``port=0`` picks a
    free port).
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                     access_log=False, lifespan="off")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> "ServerThread":
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
