"""Overviews of GeoTIFF scenes: each scene downsampled once (longest side at most
``max_side`` pixels) and cached on disk as JPEG, for the web page to draw footprints over.

* **Size**: a scene of ``W`` × ``H`` pixels becomes ``round(W s)`` × ``round(H s)`` with
  ``s = min(1, max_side / max(W, H))`` (never enlarged, at least one pixel a side). Overview
  pixel ``x`` covers scene columns ``[x W / w, (x + 1) W / w)``, so a scene pixel position
  times :attr:`Overview.scale` is its overview position, exactly (per axis: rounding makes
  the two factors differ slightly).
* **Reading**: :func:`ahcl.data.scenes.read_scaled`, GDAL's decimated read: the scene is never
  held whole at full resolution; RGB by the tiles' rule (16-bit data stretched over the
  overview).
* **Cache**: one file per scene in the cache folder, named
  ``<sha256 of the scene's absolute path>-<sha256 of its size, mtime and max_side>.jpg``
  (16 hex digits each): a scene whose file changes gets a new name and the old file is removed.
  Names are made only from hashes, so no scene path (and nothing a client sends) becomes a
  path on disk. Writes are atomic (:func:`ahcl._io.atomic_write_bytes`); a cache folder that
  cannot be written is not an error, the overview is then made again each time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ahcl._io import atomic_write_bytes
from ahcl.data.scenes import SceneError, SceneInfo, read_scaled, scene_info
from ahcl.errors import DiskFullError

#: Longest side of an overview in pixels, by default.
MAX_SIDE = 1024
JPEG_QUALITY = 90


def overview_size(width: int, height: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """``(width, height)`` of the overview of a ``width`` × ``height`` scene (module doc)."""
    s = min(1.0, max_side / max(width, height))
    return max(1, round(width * s)), max(1, round(height * s))


@dataclass(frozen=True)
class Overview:
    """A scene's overview: the JPEG and how it maps onto the scene.

    Attributes:
        jpeg: the image, JPEG bytes.
        key: the cache file's name without suffix (changes when the scene does; an ETag).
        info: the scene's :class:`~ahcl.data.scenes.SceneInfo`.
        size: ``(width, height)`` of the overview in pixels.
    """

    jpeg: bytes
    key: str
    info: SceneInfo
    size: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """Overview pixels per scene pixel along columns and rows."""
        return self.size[0] / self.info.width, self.size[1] / self.info.height


def make_overview(path: str | os.PathLike, max_side: int = MAX_SIDE) -> tuple[bytes, SceneInfo]:
    """The JPEG overview of a scene, uncached, and the scene's info.

    Raises:
        SceneError: the scene is unreadable.
    """
    info = scene_info(path)
    image = read_scaled(path, overview_size(info.width, info.height, max_side))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue(), info


class OverviewCache:
    """Overviews of scenes made once and kept in ``folder`` (thread-safe; module doc).

    Args:
        folder: the cache folder (made at the first write).
        max_side: longest side of an overview in pixels.
    """

    def __init__(self, folder: str | os.PathLike, max_side: int = MAX_SIDE) -> None:
        self.folder = Path(folder)
        self.max_side = int(max_side)
        self._lock = threading.Lock()  # one overview made at a time: bounded memory and CPU
        self._infos: dict[str, tuple[str, SceneInfo]] = {}  # path → (key, info)

    def key(self, path: str | os.PathLike) -> str:
        """The cache name of a scene as its file is now.

        Raises:
            OSError: the scene cannot be stat'ed (gone).
        """
        st = os.stat(path)
        stamp = json.dumps([st.st_size, st.st_mtime_ns, self.max_side])
        return f"{_digest(os.path.abspath(path))}-{_digest(stamp)}"

    def info(self, path: str | os.PathLike) -> SceneInfo:
        """The scene's info, read from its header once per version of its file.

        Raises:
            SceneError: the scene is gone or unreadable.
        """
        return self._current(path)[1]

    def _current(self, path: str | os.PathLike) -> tuple[str, SceneInfo]:
        """The scene's cache key and info now (one entry a scene: its current version)."""
        name = os.fspath(path)
        try:
            key = self.key(name)
        except OSError:
            raise SceneError(f"scene {name} not found", path=name) from None
        cached = self._infos.get(name)
        if cached is None or cached[0] != key:
            cached = self._infos[name] = key, scene_info(name)
        return cached

    def get(self, path: str | os.PathLike) -> Overview:
        """The overview of a scene: from the cache, else made and cached.

        Raises:
            SceneError: the scene is gone or unreadable.
        """
        key, info = self._current(path)
        file = self.folder / f"{key}.jpg"
        size = overview_size(info.width, info.height, self.max_side)
        with contextlib.suppress(OSError):
            return Overview(file.read_bytes(), key, info, size)
        with self._lock:
            with contextlib.suppress(OSError):  # made by another thread meanwhile
                return Overview(file.read_bytes(), key, info, size)
            jpeg, info = make_overview(path, self.max_side)
            self._store(file, jpeg)
        return Overview(jpeg, key, info, size)

    def _store(self, file: Path, jpeg: bytes) -> None:
        """Write ``file`` and remove the scene's older overviews (same path hash)."""
        with contextlib.suppress(OSError, DiskFullError):
            atomic_write_bytes(file, jpeg)
            scene = file.name.split("-")[0]
            for old in self.folder.glob(f"{scene}-*.jpg"):
                if old != file:
                    old.unlink(missing_ok=True)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
