"""ASGI middleware of the service: the streaming body limit and the upload-search alias."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
        if scope["type"] == "http" and scope["method"] == "POST":
            root = scope.get("root_path", "")
            if scope["path"] in (self.path, root + self.path) and not _is_json(scope):
                path = scope["path"][:-len(self.path)] + self.target
                scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)


def _is_json(scope: Scope) -> bool:
    ctype = dict(scope.get("headers") or []).get(b"content-type", b"")
    return ctype.startswith(b"application/json")
