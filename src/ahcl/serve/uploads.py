"""Uploaded images: checked and decoded without trusting their size or format."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import tifffile
from PIL import Image

from ahcl.data.images import ImageReadError, ImageTooLargeError, load_rgb
from ahcl.errors import AhclError

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
    if not data:
        raise UploadError("the upload is empty: send an image file", status=415)
    width, height, fmt = _probe(data)
    if width * height > max_pixels:
        raise UploadError(f"image is {width}x{height} = {width * height} pixels, over the limit "
                          f"of {max_pixels}: downscale it first", status=400)
    suffix = _FORMAT_SUFFIX.get(fmt, ".img")
    try:
        image = load_rgb(f"upload{suffix}", data=data)
    except ImageTooLargeError as exc:
        raise UploadError(f"image refused: {exc}", status=400) from None
    except ImageReadError:
        raise UploadError(f"cannot read the {fmt} image (truncated or corrupt?)",
                          status=400) from None
    if image.width * image.height > max_pixels:  # e.g. a TIFF series larger than its first page
        raise UploadError(f"image has {image.width * image.height} pixels, over the limit of "
                          f"{max_pixels}", status=400)
    return Upload(data, image, suffix, hashlib.sha256(data).hexdigest())


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
