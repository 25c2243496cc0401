"""Reading scene images as RGB.

Every image the project touches goes through :func:`load_rgb`, so the conversion to RGB is
decided once, here:

* **8-bit images Pillow understands** (JPEG, PNG, 8-bit TIFF; modes ``L``, ``LA``, ``P``,
  ``RGBA``, ``CMYK``, ``YCbCr``, ``1``): ``Image.convert("RGB")``. Alpha is dropped, palettes
  are applied, grey is replicated to three channels.
* **TIFF files** (``.tif``/``.tiff``) are read with ``tifffile``, which also handles what Pillow
  cannot: 16-bit, 32-bit and float samples and more than 4 bands (multispectral scenes).
  The bands are found from the series axes (``S``/``C``), so both interleaved ``(H, W, C)``
  and planar ``(C, H, W)`` files work. Palette TIFFs and files tifffile cannot decode (e.g.
  JPEG-compressed without ``imagecodecs``) fall back to Pillow.
* **Band choice**: bands ``(0, 1, 2)`` become R, G, B, unless ``bands=(r, g, b)`` names others
  (0-based); a single band is replicated to grey; two bands use band 0 as grey.
* **Bit depth**: ``uint8`` samples are kept as they are. Any other dtype (16-bit, float, ...)
  is stretched per band linearly so that its 2nd percentile maps to 0 and its 98th to 255,
  clipping outside; NaNs become 0. A band whose 2nd and 98th percentiles coincide falls back
  to its min..max, and a constant band becomes 0. The stretch is per image, so absolute
  radiometry is not preserved, only contrast (what a pretrained RGB backbone expects).

Truncated files and non-images raise :class:`ImageReadError` naming the file. Nothing global
is changed (in particular not ``ImageFile.LOAD_TRUNCATED_IMAGES``): a truncated JPEG is an
error, never silently grey-padded. An image Pillow refuses as a decompression bomb (over twice
``Image.MAX_IMAGE_PIXELS``) raises :class:`ImageTooLargeError`, an ``ImageReadError``, so a
dataset or a folder of images skips it like any unreadable file and a server can give it its
own answer.
"""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ahcl.errors import AhclError

#: File name endings treated as images (lower case, with the dot).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
TIFF_EXTENSIONS: tuple[str, ...] = (".tif", ".tiff")

# Errors Pillow and tifffile raise on a corrupt or truncated file (Pillow raises OSError for
# truncation, SyntaxError from some plugins, ValueError/struct.error/IndexError from broken
# headers; tifffile raises its own TiffFileError, a ValueError subclass, and others).
_DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, IndexError,
                  KeyError, EOFError, TypeError, RuntimeError)
_PERCENTILES = (2.0, 98.0)


class ImageReadError(AhclError):
    """An image file cannot be read (not an image, truncated, unsupported)."""


class ImageTooLargeError(ImageReadError):
    """An image has more pixels than can be decoded safely (Pillow's decompression-bomb limit)."""


def load_rgb(path: str | os.PathLike, bands: Sequence[int] | None = None,
             data: bytes | None = None, draft: int | None = None) -> Image.Image:
    """Open ``path`` and return a fully decoded ``RGB`` PIL image (rules in the module doc).

    Args:
        path: the image file; its suffix picks the TIFF reader. Also used in error messages.
        bands: three 0-based band indices to use as R, G, B (multi-band images); default
            the first three.
        data: the file's bytes if the caller already read them (avoids a second read).
        draft: for a JPEG, let the decoder scale down by a power of two while both sides stay
            at least this many pixels (much less memory for huge photos; other formats decode
            whole).

    Returns:
        A PIL image of mode ``RGB``, size as stored.

    Raises:
        ImageReadError: the file is missing, not an image, truncated, or ``bands`` does not fit
            it; the message names the file.
    """
    name = os.fspath(path)
    if bands is not None and len(bands) != 3:
        raise ImageReadError(f"bands must name 3 bands (r, g, b), got {tuple(bands)} for {name}")
    try:
        if data is None:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as exc:
        raise ImageReadError(f"cannot read image {name}: {exc.strerror or exc}") from None
    if name.lower().endswith(TIFF_EXTENSIONS):
        array = _read_tiff(data)
        if array is not None:
            return Image.fromarray(to_rgb_array(array, bands, name), "RGB")
    try:
        return _read_pillow(data, name, bands, draft)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"cannot read image {name}: too large to decode safely ({exc})",
                                 path=name) from None


def to_rgb_array(array: np.ndarray, bands: Sequence[int] | None = None,
                 name: str = "<array>") -> np.ndarray:
    """Convert a band-last image array to ``uint8 (H, W, 3)`` by the rules in the module doc.

    Args:
        array: ``(H, W)`` or ``(H, W, C)`` of any real dtype.
        bands: three band indices for R, G, B, or None for ``(0, 1, 2)``.
        name: used in error messages.

    Returns:
        ``uint8 (H, W, 3)``, C-contiguous.
    """
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"cannot read image {name}: unsupported shape {array.shape}")
    n_bands = array.shape[2]
    if bands is not None:
        bad = [b for b in bands if not 0 <= int(b) < n_bands]
        if bad:
            raise ImageReadError(f"cannot read image {name}: bands {tuple(bands)} out of range "
                                 f"for an image with {n_bands} band(s)")
        picked = array[:, :, [int(b) for b in bands]]
    elif n_bands >= 3:
        picked = array[:, :, :3]
    else:
        picked = array[:, :, [0, 0, 0]]
    if picked.dtype == np.uint8:
        return np.ascontiguousarray(picked)
    return np.stack([_stretch_band(picked[:, :, i]) for i in range(3)], axis=2)


def _stretch_band(band: np.ndarray) -> np.ndarray:
    """Linear 2nd..98th percentile stretch of one band to ``uint8``."""
    values = band.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(band.shape, np.uint8)
    lo, hi = np.percentile(values[finite], _PERCENTILES)
    if hi <= lo:  # a band mostly one value: use the full range instead
        lo, hi = values[finite].min(), values[finite].max()
    if hi <= lo:
        return np.zeros(band.shape, np.uint8)
    scaled = (np.where(finite, values, lo) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _read_tiff(data: bytes) -> np.ndarray | None:
    """Decode a TIFF with tifffile to band-last; None when Pillow should try instead."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            if page.photometric == tifffile.PHOTOMETRIC.PALETTE:
                return None  # Pillow applies the colour map
            series = tif.series[0]
            array = series.asarray()
            axes = series.axes
    except Exception:  # noqa: BLE001 - any tifffile failure: let Pillow decide (and name the file)
        return None
    # Keep the first item of any extra axis (pages, time, z) and move samples/channels last.
    for i in range(len(axes) - 1, -1, -1):
        if axes[i] not in "YXSC":
            array = np.take(array, 0, axis=i)
            axes = axes[:i] + axes[i + 1:]
    band_axes = [i for i, a in enumerate(axes) if a in "SC"]
    if len(band_axes) > 1:  # both S and C: flatten them into one band axis
        array = array.reshape(*array.shape[:band_axes[0]], -1)
        axes = axes[:band_axes[0]] + "S"
    if "S" in axes or "C" in axes:
        array = np.moveaxis(array, axes.index("S" if "S" in axes else "C"), -1)
    return array


def _read_pillow(data: bytes, name: str, bands: Sequence[int] | None,
                 draft: int | None = None) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as img:
            if draft is not None and img.format == "JPEG":
                img.draft("RGB", (draft, draft))
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                return Image.fromarray(to_rgb_array(np.asarray(img), bands, name), "RGB")
            if bands is not None:
                array = np.asarray(img.convert("RGBA") if img.mode in ("RGBA", "LA", "P")
                                   else img.convert("RGB"))
                return Image.fromarray(to_rgb_array(array, bands, name), "RGB")
            return img.convert("RGB")
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"cannot read image {name}: not an image, or a format Pillow "
                             "does not know") from None
    except _DECODE_ERRORS as exc:
        raise ImageReadError(f"cannot read image {name}: {exc}") from None
