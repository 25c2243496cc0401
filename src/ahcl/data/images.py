"""Reading scene images as RGB. (First version: the data layer extends it to 16-bit / multi-band TIFF.)"""

from __future__ import annotations

import os

from PIL import Image, UnidentifiedImageError

from ahcl.errors import AhclError


class ImageReadError(AhclError):
    """An image file cannot be read (not an image, truncated, unsupported)."""


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` and return a fully decoded ``RGB`` PIL image.

    Raises:
        ImageReadError: the file is missing, not an image, or truncated; the message names it.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"cannot read image {os.fspath(path)}: {exc}") from None
