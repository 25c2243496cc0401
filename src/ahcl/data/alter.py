"""Seeded alterations of scene images: the near-duplicate protocol's copies.

This is the protocol of ``ahcl evaluate --near-duplicates N``: :func:`near_duplicate_rows`
draws ``N`` database rows, :func:`altered_copies` makes one altered copy of each row's image,
the copies are encoded as queries, and :func:`ahcl.eval.near_duplicate_ranks` tells where each
copy's source ranks in the database.

One alteration (:func:`alter_image`) applies, in this order:

1. **Crop** keeping a fraction uniform in ``[0.90, 0.97]`` of the width and, drawn separately, of
   the height, at an offset uniform over the positions that fit, resized back to the original
   size (bilinear).
2. **Rotation** by ``k * 90`` degrees counter-clockwise, ``k`` uniform in ``{0, 1, 2, 3}``
   (``Image.transpose``: exact, no resampling). An odd ``k`` swaps the sides of a non-square
   image; square scenes keep their size.
3. **Brightness** factor uniform in ``[0.8, 1.2]`` (``ImageEnhance.Brightness``).
4. **JPEG** re-encode at a quality uniform in ``60..90`` (in memory), then decoded.

Randomness: every copy has its own generator, ``numpy.random.default_rng([seed, row])``, so the
copy of a row depends on ``(seed, row)`` and the image only, never on which other rows are drawn
or in what order. :func:`near_duplicate_rows` takes the first ``N`` of a seeded permutation of
the rows (then sorted), so the rows drawn for a smaller ``N`` are among those for a larger one.
"""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageEnhance

from ahcl.data.images import load_rgb

CROP_FRACTION = (0.90, 0.97)
BRIGHTNESS = (0.8, 1.2)
JPEG_QUALITY = (60, 90)  # inclusive
_TRANSPOSE = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
              Image.Transpose.ROTATE_270)


def alter_image(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """One seeded alteration (crop, quarter turn, brightness, JPEG; see the module doc).

    Args:
        image: any PIL image (converted to RGB first).
        rng: the source of every random choice (7 draws, always in the same order).

    Returns:
        ``(altered, params)``: an ``RGB`` image of the original size (sides swapped by an odd
        quarter turn of a non-square image) and a JSON-safe dict of what was done: ``crop_box``
        ``[left, top, right, bottom]``, ``crop_fraction`` ``[width, height]``, ``rotate``
        (degrees, counter-clockwise), ``brightness``, ``jpeg_quality``.
    """
    img = image if image.mode == "RGB" else image.convert("RGB")
    width, height = img.size
    fw, fh = (float(rng.uniform(*CROP_FRACTION)) for _ in range(2))
    cw, ch = max(1, round(fw * width)), max(1, round(fh * height))
    left, top = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
    box = (left, top, left + cw, top + ch)
    k = int(rng.integers(0, 4))
    brightness = float(rng.uniform(*BRIGHTNESS))
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))

    out = img.crop(box).resize((width, height), Image.Resampling.BILINEAR)
    if k:
        out = out.transpose(_TRANSPOSE[k])
    out = ImageEnhance.Brightness(out).enhance(brightness)
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as decoded:
        out = decoded.convert("RGB")
    params = {"crop_box": list(box), "crop_fraction": [fw, fh], "rotate": 90 * k,
              "brightness": brightness, "jpeg_quality": quality}
    return out, params


def near_duplicate_rows(n_items: int, n: int, seed: int) -> np.ndarray:
    """``n`` distinct rows of ``0..n_items - 1``, sorted, drawn from ``seed``.

    ``n`` above ``n_items`` is clamped: every row is returned. The rows are the first ``n`` of
    one seeded permutation, so those for a smaller ``n`` are a subset of those for a larger.

    Returns:
        ``int64 (min(n, n_items),)``.

    Raises:
        ValueError: a negative ``n_items`` or ``n``.
    """
    n_items, n = int(n_items), int(n)
    if n_items < 0 or n < 0:
        raise ValueError(f"n_items and n must be >= 0, got {n_items} and {n}")
    order = np.random.default_rng(seed).permutation(n_items)
    return np.sort(order[:min(n, n_items)]).astype(np.int64)


def altered_copy(path: str | os.PathLike, row: int, seed: int) -> tuple[Image.Image, dict]:
    """The altered copy of one database image (read with :func:`ahcl.data.images.load_rgb`) and
    its parameters; the generator is ``default_rng([seed, row])``."""
    return alter_image(load_rgb(path), copy_rng(seed, row))


def altered_copies(paths: Sequence[str | os.PathLike], rows: Sequence[int] | np.ndarray,
                   seed: int) -> list[Image.Image]:
    """Altered copies of ``paths[r]`` for each ``r`` in ``rows``, in the order of ``rows``.

    Raises:
        IndexError: a row outside ``0..len(paths) - 1``.
        ahcl.data.images.ImageReadError: an image cannot be read.
    """
    out = []
    for r in rows:
        r = int(r)
        if not 0 <= r < len(paths):
            raise IndexError(f"row {r} out of range for {len(paths)} images")
        out.append(altered_copy(paths[r], r, seed)[0])
    return out


def copy_rng(seed: int, row: int) -> np.random.Generator:
    """The generator of row ``row``'s copy: ``numpy.random.default_rng([seed, row])``."""
    return np.random.default_rng([int(seed), int(row)])

