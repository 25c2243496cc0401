"""Uploaded images: checked and decoded without trusting their size or format."""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import tifffile
from PIL import Image

from ahcl.data.images import ImageReadError, ImageTooLargeError, load_rgb
from ahcl.errors import AhclError

#: Uploads are decoded at most this many at a time in one server, whatever the number of
#: requests or of images in them, so that small files that decode to many pixels (a blank 40-Mpx
#: PNG is 38 KB) cannot multiply the server's memory.
DECODES_IN_FLIGHT = 2
# The decodes run on these threads only, not on the request threads: glibc keeps the memory a
# thread freed in that thread's own arena, so full-size pixels decoded on each of 40 request
# threads would stay resident 40 times over (8 concurrent 40-Mpx searches: +1.8 GB that was never
# returned) even with only two decodes at a time.
_DECODERS = ThreadPoolExecutor(max_workers=DECODES_IN_FLIGHT, thread_name_prefix="ahcl-decode")
#: JPEGs decode at reduced scale while both sides keep at least this many pixels, and a decoded
#: image is shrunk to this longest side before it is kept: the encoder resizes to 256 anyway.
KEPT_SIDE = 1024

_FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "BMP": ".bmp", "WEBP": ".webp",
                  "GIF": ".gif"}


class UploadError(AhclError):
    """An uploaded file (or the request carrying it) is rejected.

    Attributes:
        status: the HTTP status that says why (400 unreadable or too large, 415 not an image).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status=status)


@dataclass
class Upload:
    """A validated, decoded upload.

    Attributes:
        data: the file's bytes as sent.
        image: the decoded RGB image.
        suffix: file name ending for its format (``.jpg``, ``.png``, ...).
        sha256: hex digest of ``data``.
    """

    data: bytes
    image: Image.Image
    suffix: str
    sha256: str


def decode_upload(data: bytes, max_pixels: int) -> Upload:
    """Check and decode uploaded bytes without trusting their size or format.

    The pixel count is read from the header (Pillow, or tifffile for TIFFs Pillow cannot open)
    and compared with ``max_pixels`` before anything is decoded, so a decompression bomb is
    refused without allocating its pixels; nothing global (``Image.MAX_IMAGE_PIXELS``) changes.

    Raises:
        UploadError: 415 not an image; 400 over ``max_pixels``, a bomb, truncated or corrupt.
    """
    return _decoded(data, _header(data, max_pixels)[2], max_pixels)


def _header(data: bytes, max_pixels: int) -> tuple[int, int, str]:
    """``(width, height, format)`` from the header, checked against ``max_pixels``."""
    if not data:
        raise UploadError("the upload is empty: send an image file", status=415)
    width, height, fmt = _probe(data)
    if width * height > max_pixels:
        raise UploadError(f"image is {width}x{height} = {width * height} pixels, over the limit "
                          f"of {max_pixels}: downscale it first", status=400)
    return width, height, fmt


def _decoded(data: bytes, fmt: str, max_pixels: int) -> Upload:
    suffix = _FORMAT_SUFFIX.get(fmt, ".img")
    image = _DECODERS.submit(_decode, data, suffix, fmt, max_pixels).result()
    return Upload(data, image, suffix, hashlib.sha256(data).hexdigest())


#: A request's images together may hold this many times ``max_pixels`` (read from their
#: headers before any is decoded).
REQUEST_PIXELS_FACTOR = 4


def decode_uploads(datas: list[bytes], max_pixels: int) -> list[Upload]:
    """:func:`decode_upload` of every image of one request, after checking from their headers
    alone that together they hold at most ``REQUEST_PIXELS_FACTOR * max_pixels`` pixels.

    Raises:
        UploadError: as :func:`decode_upload`; 400 over the per-request budget.
    """
    budget = REQUEST_PIXELS_FACTOR * max_pixels
    headers = [_header(d, max_pixels) for d in datas]  # each header read once
    total = sum(w * h for w, h, _ in headers)
    if total > budget:
        raise UploadError(f"the {len(datas)} images of this request hold {total} pixels in all, "
                          f"over the limit of {budget} per request: send fewer at once",
                          status=400)
    return [_decoded(d, h[2], max_pixels) for d, h in zip(datas, headers)]


def _decode(data: bytes, suffix: str, fmt: str, max_pixels: int) -> Image.Image:
    """The image at most :data:`KEPT_SIDE` pixels long (the full-size pixels exist only here,
    on a decoder thread)."""
    try:
        image = load_rgb(f"upload{suffix}", data=data, draft=KEPT_SIDE)
    except ImageTooLargeError as exc:
        raise UploadError(f"image refused: {exc}", status=400) from None
    except ImageReadError:
        raise UploadError(f"cannot read the {fmt} image (truncated or corrupt?)",
                          status=400) from None
    if image.width * image.height > max_pixels:  # e.g. a TIFF series larger than page 1
        raise UploadError(f"image has {image.width * image.height} pixels, over the limit "
                          f"of {max_pixels}", status=400)
    if max(image.size) > KEPT_SIDE:
        image.thumbnail((KEPT_SIDE, KEPT_SIDE), Image.Resampling.BILINEAR)
    return image


def _probe(data: bytes) -> tuple[int, int, str]:
    """``(width, height, format)`` from the header only; raises UploadError(415) if no image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(img.width), int(img.height), str(img.format)
    except Image.DecompressionBombError as exc:
        raise UploadError(f"image refused: {exc}", status=400) from None
    except Exception:  # noqa: BLE001 - any failure to identify: try tifffile, then refuse
        pass
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            return int(page.imagewidth), int(page.imagelength), "TIFF"
    except Exception:  # noqa: BLE001
        raise UploadError("the upload is not an image (or a format this server cannot read): "
                          "send JPEG, PNG, TIFF, BMP or WebP", status=415) from None
