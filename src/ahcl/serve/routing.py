"""How the API parses requests: multipart forms under the service's limits, and any JSON body
that cannot be decoded answered like malformed JSON (422)."""

from __future__ import annotations

import json
from typing import Any, Callable, Coroutine

from fastapi import Request, Response
from fastapi.routing import APIRoute

from ahcl.serve.settings import MAX_FORM_FIELDS, MAX_FORM_FILES


class ServeRequest(Request):
    """A request whose form parser stops at :data:`MAX_FORM_FILES` files and
    :data:`MAX_FORM_FIELDS` text fields (400 past them) instead of Starlette's 1000."""

    def form(self, *, max_files: int | float = MAX_FORM_FILES,
             max_fields: int | float = MAX_FORM_FIELDS, **kwargs: Any) -> Any:
        return super().form(max_files=max_files, max_fields=max_fields, **kwargs)

    async def json(self) -> Any:
        try:
            return await super().json()
        except UnicodeDecodeError as exc:  # FastAPI would answer 400; it is malformed JSON
            raise json.JSONDecodeError("the body is not UTF-8 text", "", 0) from exc


class ServeRoute(APIRoute):
    """An API route that hands its endpoint a :class:`ServeRequest` (FastAPI's documented way
    to customise request parsing: a custom ``APIRoute.get_route_handler``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def serve_handler(request: Request) -> Response:
            return await handler(ServeRequest(request.scope, request.receive))

        return serve_handler
