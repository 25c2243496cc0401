"""ASGI middleware of the service: the streaming body limit, the upload-search alias, and
additions handed straight to the writer process."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ahcl.serve.deps import check_write
from ahcl.serve.forms import NOT_MULTIPART, FormError, is_multipart
from ahcl.serve.offload import run_blocking
from ahcl.serve.routes.items import with_image_url
from ahcl.serve.uploads import UploadError
from ahcl.serve.writer import WriterError


class BodyTooLarge(Exception):
    """A request body went past the configured limit while being read."""


class BodyLimit:
    """413 for bodies over ``limit`` bytes, without buffering them first.

    A ``Content-Length`` above the limit is refused before anything is read; otherwise the
    bytes are counted as they arrive and the request is cut off one chunk past the limit.
    """

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
        over = started = False

        async def counting_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:  # the app's answer to a body it could not read (FastAPI says 400): drop it
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            pass
        if over and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body over the limit of {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class SearchUploadAlias:
    """Serve ``POST path`` with a body that is not JSON from ``POST target``.

    ``POST /api/search`` once took both a JSON body and a multipart upload; the upload now has
    its own endpoint (``/api/search/image``), and this keeps the old form of the call working.
    """

    def __init__(self, app: ASGIApp, path: str, target: str) -> None:
        self.app, self.path, self.target = app, path, target

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _is_post_to(scope, self.path) and not _is_json(scope):
            path = scope["path"][:-len(self.path)] + self.target
            scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)


class WriterAdditions:
    """``POST path`` (an addition) straight to the archive's writer process, when it has one.

    The route of ``POST /api/items`` holds the server process's interpreter lock for its
    routing, dependencies, form parsing, validation and response: time a search waits for
    while another client adds. Here the server checks write access and the
    ``Content-Type``, reads the body and hands it whole to the writer process, which parses
    the form (:func:`ahcl.serve.forms.parse_add_form`) and adds; the answers are the route's.
    An archive without a writer process (``--inline-writes``) is served by the route.
    """

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app, self.path = app, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_post_to(scope, self.path) or not scope["app"].state.archive.has_writer:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        headers = Headers(scope=scope)
        try:
            check_write(headers, state.settings)
        except HTTPException as exc:
            await _answer(scope, receive, send, exc.status_code, {"detail": exc.detail},
                          exc.headers)
            return
        content_type = headers.get("content-type", "")
        if not is_multipart(content_type):
            await _answer(scope, receive, send, 415, {"detail": NOT_MULTIPART})
            return
        body = await _read_body(receive)
        if body is None:  # the client went away
            return
        try:
            items, count = await run_blocking(state.archive.add_form, content_type, body,
                                              state.settings.max_pixels)
        except FormError as exc:
            await _answer(scope, receive, send, 422, {"detail": str(exc), "errors": exc.errors})
        except UploadError as exc:
            await _answer(scope, receive, send, exc.status, {"detail": str(exc)})
        except WriterError as exc:
            await _answer(scope, receive, send, 503, {"detail": str(exc)})
        else:
            await _answer(scope, receive, send, 201, {
                "items": [with_image_url(it) for it in items], "count": count})


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (None if the client disconnected first)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(scope: Scope, receive: Receive, send: Send, status: int,
                  payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    await JSONResponse(payload, status_code=status, headers=headers)(scope, receive, send)


def _is_post_to(scope: Scope, path: str) -> bool:
    """An HTTP POST to ``path`` (under the app's root path, if any)."""
    return scope["type"] == "http" and scope["method"] == "POST" \
        and scope["path"] in (path, scope.get("root_path", "") + path)


def _is_json(scope: Scope) -> bool:
    ctype = dict(scope.get("headers") or []).get(b"content-type", b"")
    return ctype.startswith(b"application/json")
