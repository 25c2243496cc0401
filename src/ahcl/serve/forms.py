"""The form of an addition (``POST /api/items``) read from its raw body, with the answers the
FastAPI route gives: what the writer process runs on the bytes the server hands it, so that a
server with a writer process parses nothing of an addition (:mod:`ahcl.serve.middleware`).

The form is parsed by Starlette's multipart parser under the service's limits
(:data:`~ahcl.serve.settings.MAX_FORM_FILES` files, :data:`~ahcl.serve.settings.MAX_FORM_FIELDS`
text fields: 400 past them), and checked as the route's parameters are: ``image`` one or more
files (422 when missing or not files), ``label`` at most one text (its last value; empty is
none; 422 a file or an unknown class).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Sequence

from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ahcl.serve.settings import MAX_FORM_FIELDS, MAX_FORM_FILES
from ahcl.serve.uploads import UploadError


_THREAD = threading.local()
#: The answer (415) to an upload that is not a multipart form.
NOT_MULTIPART = "send multipart/form-data with the image in the field 'image'"


class FormError(UploadError):
    """A form the route's parameters refuse (422), with FastAPI's list of ``errors``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(validation_detail(errors), status=422)
        self.errors = errors


def validation_detail(errors: Sequence[dict[str, Any]]) -> str:
    """One line for a list of validation errors: ``body.image: Field required; ...``."""
    detail = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', 'invalid')}"
                       for e in errors)
    return " ".join(detail.split()) or "invalid request"


def is_multipart(content_type: str) -> bool:
    """What the route asks of an upload's ``Content-Type`` before reading its body."""
    return content_type.startswith("multipart/form-data")


def parse_add_form(content_type: str, body: bytes, classes: Sequence[str]
                   ) -> tuple[list[bytes], int | None]:
    """The files of the field ``image`` and the class index of ``label`` (None without one).

    Raises:
        UploadError: 415 not a multipart body; 400 an unreadable form or one past the limits;
            422 (:class:`FormError`, or an unknown class) what the route's parameters refuse.
    """
    if not is_multipart(content_type):
        raise UploadError(NOT_MULTIPART, status=415)
    datas, label = _loop().run_until_complete(_read_form(content_type, body))
    if label is None:
        return datas, None
    if label not in classes:
        raise UploadError(f"unknown class {label[:60]!r}; classes: " + ", ".join(classes),
                          status=422)
    return datas, list(classes).index(label)


def _loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop for the parser, kept: ``asyncio.run`` makes and closes a loop
    per form, which costs more than the parse, in the writer process whose interpreter lock
    paces a stream of additions."""
    loop = getattr(_THREAD, "loop", None)
    if loop is None:
        loop = _THREAD.loop = asyncio.new_event_loop()
    return loop


async def _read_form(content_type: str, body: bytes) -> tuple[list[bytes], str | None]:
    form = await _parse(content_type, body)
    try:
        images, errors = form.getlist("image"), []
        if not images:
            errors.append({"type": "missing", "loc": ["body", "image"], "msg": "Field required"})
        for i, value in enumerate(images):
            if not isinstance(value, UploadFile):
                errors.append({"type": "value_error", "loc": ["body", "image", i],
                               "msg": f"Value error, Expected UploadFile, received: "
                                      f"{type(value)}", "ctx": {"error": {}}})
                break
        labels = form.getlist("label")
        label = labels[-1] if labels else None
        if isinstance(label, UploadFile):
            errors.append({"type": "string_type", "loc": ["body", "label"],
                           "msg": "Input should be a valid string"})
        if errors:
            raise FormError(errors)
        return [await f.read() for f in images], label or None
    finally:
        await form.close()


async def _parse(content_type: str, body: bytes) -> FormData:
    if parse_options_header(content_type)[0] != b"multipart/form-data":
        return FormData()  # as Starlette reads another type: no fields

    async def stream() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(Headers({"content-type": content_type}), stream(),
                             max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS)
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise UploadError(exc.message, status=400) from None
