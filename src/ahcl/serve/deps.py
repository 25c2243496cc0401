"""FastAPI dependencies: the served archive and settings (kept on ``app.state``), write access,
item ids from URLs, and the form check of upload endpoints."""

from __future__ import annotations

import hmac
import re
from typing import Annotated, Any, Callable, Coroutine
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers

from ahcl.serve.forms import NOT_MULTIPART, is_multipart
from ahcl.serve.settings import ServeSettings, is_loopback
from ahcl.serve.store import Archive, UnknownItemError
from ahcl.serve.uploads import UploadError

_ID = re.compile(r"-?[0-9]{1,18}")
_bearer = HTTPBearer(auto_error=False, description="the server's --token (AHCL_TOKEN)")


async def get_archive(request: Request) -> Archive:
    """The archive this app serves (``app.state.archive``)."""
    return request.app.state.archive


async def get_settings(request: Request) -> ServeSettings:
    """The settings this app runs under (``app.state.settings``)."""
    return request.app.state.settings


ArchiveDep = Annotated[Archive, Depends(get_archive)]
SettingsDep = Annotated[ServeSettings, Depends(get_settings)]


async def require_write(request: Request, settings: SettingsDep, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Allow a write (:func:`check_write` on the request's headers; ``credentials`` names the
    bearer scheme in the OpenAPI schema)."""
    check_write(request.headers, settings)


def check_write(headers: Headers, settings: ServeSettings) -> None:
    """Allow a write: the bearer token when one is set, else only an open loopback server.

    Writes also refuse other websites: a request a browser sends from another origin
    (``Origin`` not this server, ``Sec-Fetch-Site`` cross-site) is 403 whatever the token, and
    without a token the ``Host`` must be a loopback name, so a page that rebinds its own DNS
    name to 127.0.0.1 cannot reach the server.

    Raises:
        HTTPException: 401 a missing or wrong token; 403 writes disabled, another origin, or a
            non-loopback ``Host`` on a tokenless server.
    """
    host = headers.get("host", "")
    origin = headers.get("origin")
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise HTTPException(403, f"writes from another site are refused (Sec-Fetch-Site: "
                                 f"{site[:30]})")
    if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
        raise HTTPException(403, "writes from another origin are refused")
    if settings.writes == "open" and not _is_loopback_host_header(host):
        raise HTTPException(403, "writes without a token accept only requests addressed to "
                                 "127.0.0.1, ::1 or localhost")
    if settings.token:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        given = given.strip() if scheme.lower() == "bearer" else ""  # as HTTPBearer reads it
        if not hmac.compare_digest(given.encode(), settings.token.encode()):
            raise HTTPException(401, "write access needs 'Authorization: Bearer TOKEN'",
                                headers={"WWW-Authenticate": "Bearer"})
    elif settings.writes == "disabled":
        raise HTTPException(403, "writes are disabled: start the server with --token (or "
                                 "AHCL_TOKEN), or on 127.0.0.1 with --allow-writes")


def _is_loopback_host_header(host: str) -> bool:
    """``127.0.0.1:8000``, ``[::1]:8000``, ``localhost`` → True; any other name → False."""
    name = urlsplit(f"//{host}").hostname or ""
    return name == "localhost" or is_loopback(name)


async def item_id(item_id: Annotated[str, Path(description="archive item id")]) -> int:
    """The item id from the URL: decimal digits only, anything else is 'not found' (404).

    Raises:
        UnknownItemError: not an id.
    """
    if not _ID.fullmatch(item_id):
        raise UnknownItemError(item_id)
    return int(item_id)


ItemId = Annotated[int, Depends(item_id)]


def upload_form(max_images: int) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """A dependency that checks an upload endpoint's form: ``multipart/form-data`` (else 415)
    with at most ``max_images`` files in the field ``image`` (else 422)."""

    async def check_upload_form(request: Request) -> None:
        if not is_multipart(request.headers.get("content-type", "")):
            raise UploadError(NOT_MULTIPART, status=415)
        if len((await request.form()).getlist("image")) > max_images:  # parsed once, cached
            raise UploadError(f"at most {max_images} images per request", status=422)

    return check_upload_form
