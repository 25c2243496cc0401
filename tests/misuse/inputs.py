"""Bad inputs that are slow to make, made once."""

from __future__ import annotations

import functools
import io

from PIL import Image


@functools.cache
def blank_png(mode: str, width: int, height: int) -> bytes:
    """A blank PNG: a few KB for any number of pixels (``1``: one bit per pixel)."""
    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, "PNG")
    return buf.getvalue()
