"""Seeded procedural aerial-looking scenes (numpy + Pillow only), for tests and demos.

Eight classes, each a small texture program drawn in rotated, scaled coordinates so that every
image of a class differs in orientation, scale, colour and noise, while the classes stay
visually distinct (water ripples, forest canopy blobs, farmland stripes, a residential street
grid, roads, parking rows, desert dunes, industrial roofs).

Determinism: image ``i`` of class ``c`` is drawn from ``np.random.default_rng([seed, k, i])``
where ``k`` is the class's position in :data:`CLASSES`, so it does not depend on which other
classes or how many images are asked for; same arguments, same bytes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ahcl.errors import DatasetError

CLASSES: tuple[str, ...] = ("water", "forest", "farmland", "residential", "roads", "parking",
                            "desert", "industrial")

_Frame = tuple[np.ndarray, np.ndarray, float]  # rotated coordinates u, v (pixels) and scale


def _frame(size: int, rng: np.random.Generator) -> _Frame:
    """Rotated pixel coordinates (random angle and offset) and a random scale factor."""
    theta = rng.uniform(0, np.pi)
    scale = size / 64 * rng.uniform(0.7, 1.4)  # patterns keep their look at any image size
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    x -= size / 2
    y -= size / 2
    u = x * np.cos(theta) + y * np.sin(theta) + rng.uniform(0, 100)
    v = -x * np.sin(theta) + y * np.cos(theta) + rng.uniform(0, 100)
    return u, v, scale


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """``float64 (size, size)`` noise with about ``cells`` blobs per side, unit std."""
    cells = max(2, int(cells))
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    up = np.asarray(Image.fromarray(grid, "F").resize((size, size), Image.Resampling.BICUBIC),
                    dtype=np.float64)
    return (up - up.mean()) / (up.std() + 1e-9)


def _colour(base: Sequence[float], rng: np.random.Generator, jitter: float = 12.0) -> np.ndarray:
    return np.asarray(base, np.float64) + rng.normal(0, jitter, 3)


def _cell_table(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, period: float,
                k: int = 17) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cell ids (wrapped into a k x k random table) and local coordinates in [0, 1)."""
    iu, iv = np.floor(u / period), np.floor(v / period)
    table = rng.random((k, k))
    cell = table[iu.astype(np.int64) % k, iv.astype(np.int64) % k]
    return cell, iu, u / period - iu, v / period - iv


def _water(size: int, rng: np.random.Generator) -> np.ndarray:
    u, v, s = _frame(size, rng)
    base = _colour((30, 70, 110), rng)
    shade = 1 + 0.12 * _smooth_noise(rng, size, 3) + 0.05 * np.sin(2 * np.pi * u / (5 * s))
    return base * shade[..., None]


def _forest(size: int, rng: np.random.Generator) -> np.ndarray:
    _, _, s = _frame(size, rng)
    canopy = _smooth_noise(rng, size, size / (3 * s)) + 0.4 * _smooth_noise(rng, size, 3)
    base = _colour((40, 85, 35), rng)
    return base * (0.75 + 0.25 * np.tanh(canopy))[..., None]


def _farmland(size: int, rng: np.random.Generator) -> np.ndarray:
    u, v, s = _frame(size, rng)
    palette = np.array([(110, 150, 60), (170, 160, 90), (130, 110, 70), (90, 130, 50),
                        (190, 180, 110)], np.float64) + rng.normal(0, 10, (5, 3))
    width = 14 * s * rng.uniform(0.7, 1.3)
    field = (np.floor(u / width).astype(np.int64) * 7 + 3) % len(palette)
    rows = 1 + 0.08 * np.sin(2 * np.pi * v / (2.5 * s))
    edge = np.where((u / width) % 1 < 0.04, 0.7, 1.0)
    return palette[field] * (rows * edge)[..., None]


def _residential(size: int, rng: np.random.Generator) -> np.ndarray:
    u, v, s = _frame(size, rng)
    cell, _, lu, lv = _cell_table(rng, u, v, 14 * s)
    img = np.empty(u.shape + (3,))
    img[:] = _colour((95, 130, 75), rng)  # yards
    roof_a, roof_b = _colour((150, 70, 55), rng), _colour((120, 115, 110), rng)
    roof = (np.abs(lu - 0.55) < 0.25) & (np.abs(lv - 0.55) < 0.22)
    img[roof] = np.where((cell[roof] < 0.5)[:, None], roof_a, roof_b)
    street = (lu < 0.2) | (lv < 0.2)
    img[street] = _colour((105, 105, 105), rng, 6)
    return img


def _roads(size: int, rng: np.random.Generator) -> np.ndarray:
    u, v, s = _frame(size, rng)
    img = _colour((105, 125, 70), rng)[None, None] * (1 + 0.1 * _smooth_noise(rng, size, 4))[
        ..., None]
    width = 5 * s * rng.uniform(0.8, 1.3)
    for coord, along in ((v, u), (u, v))[: rng.integers(1, 3)]:
        centre = coord[size // 2, size // 2] + rng.uniform(-0.25, 0.25) * size  # crosses the view
        off = np.abs(coord - centre)
        img[off < width / 2] = _colour((70, 70, 75), rng, 5)
        dash = (off < 0.5 * s) & (np.sin(2 * np.pi * along / (6 * s)) > 0)
        img[dash] = (220, 210, 150)
    return img


def _parking(size: int, rng: np.random.Generator) -> np.ndarray:
    u, v, s = _frame(size, rng)
    img = np.empty(u.shape + (3,))
    img[:] = _colour((115, 115, 118), rng, 8)
    row = (v / (12 * s)) % 1
    stall = (u / (4 * s)) % 1
    img[(row < 0.7) & (stall < 0.12)] = (230, 230, 225)
    cell = _cell_table(rng, u, v, 4 * s)[0]
    car = (row > 0.1) & (row < 0.6) & (stall > 0.25) & (stall < 0.9) & (cell < 0.6)
    cars = rng.uniform(20, 235, (17, 3))
    img[car] = cars[(cell[car] * 17).astype(np.int64) % 17]
    return img


def _desert(size: int, rng: np.random.Generator) -> np.ndarray:
    u, _, s = _frame(size, rng)
    warp = 3 * s * _smooth_noise(rng, size, 3)
    dunes = np.sin(2 * np.pi * (u + warp) / (10 * s))
    base = _colour((200, 170, 120), rng)
    return base * (1 + 0.12 * dunes + 0.04 * _smooth_noise(rng, size, size / 4))[..., None]


def _industrial(size: int, rng: np.random.Generator) -> np.ndarray:
    u, v, s = _frame(size, rng)
    cell, _, lu, lv = _cell_table(rng, u, v, 28 * s)
    img = np.empty(u.shape + (3,))
    img[:] = _colour((140, 135, 125), rng, 8)  # concrete
    roof = (lu > 0.1) & (lu < 0.9) & (lv > 0.15) & (lv < 0.85) & (cell < 0.8)
    light, blue = _colour((205, 205, 200), rng, 8), _colour((90, 120, 160), rng, 8)
    img[roof] = np.where((cell[roof] < 0.45)[:, None], light, blue)
    ridge = roof & ((lv * 8) % 1 < 0.1)
    img[ridge] *= 0.85
    return img


_GENERATORS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "water": _water, "forest": _forest, "farmland": _farmland, "residential": _residential,
    "roads": _roads, "parking": _parking, "desert": _desert, "industrial": _industrial,
}


def generate_scene(cls: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one scene of class ``cls``.

    Args:
        cls: one of :data:`CLASSES`.
        size: side in pixels (>= 8).
        rng: the generator all randomness comes from.

    Returns:
        ``uint8 (size, size, 3)`` RGB.

    Raises:
        DatasetError: unknown class or too small a size.
    """
    if cls not in _GENERATORS:
        raise DatasetError(f"unknown synthetic class {cls!r}; known: {', '.join(CLASSES)}")
    if size < 8:
        raise DatasetError(f"synthetic scenes need size >= 8 pixels, got {size}")
    img = _GENERATORS[cls](size, rng)
    gain = (1 + rng.normal(0, 0.06, 3)) * rng.uniform(0.85, 1.15)  # colour and brightness jitter
    img = img * gain + rng.normal(0, rng.uniform(2, 6), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_synthetic_dataset(out: str | os.PathLike, per_class: int = 50, size: int = 64,
                            seed: int = 0, classes: Sequence[str] | None = None,
                            overwrite: bool = False) -> Path:
    """Write a folder-per-class dataset of PNG scenes, atomically.

    The images go to a temporary sibling folder that is renamed to ``out`` when complete, so
    ``out`` never holds a partial dataset. Files are ``<class>/<class>_<i:04d>.png``.

    Args:
        out: the dataset folder to create.
        per_class: images per class (>= 1).
        size: image side in pixels.
        seed: the seed (see module doc).
        classes: a subset of :data:`CLASSES` (default all), at least 2.
        overwrite: replace an existing ``out``; otherwise an existing non-empty ``out`` is an
            error.

    Returns:
        ``out`` as a Path.
    """
    out = Path(out)
    classes = list(CLASSES if classes is None else classes)
    unknown = [c for c in classes if c not in _GENERATORS]
    if unknown:
        raise DatasetError(f"unknown synthetic class(es) {unknown}; known: {', '.join(CLASSES)}")
    if len(set(classes)) < 2:
        raise DatasetError("a synthetic dataset needs at least 2 distinct classes")
    if per_class < 1:
        raise DatasetError(f"per_class must be >= 1, got {per_class}")
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out} already exists: choose another --out or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for cls in dict.fromkeys(classes):
            k = CLASSES.index(cls)
            (tmp / cls).mkdir()
            for i in range(per_class):
                img = generate_scene(cls, size, np.random.default_rng([seed, k, i]))
                Image.fromarray(img, "RGB").save(tmp / cls / f"{cls}_{i:04d}.png")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
