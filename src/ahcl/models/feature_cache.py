"""The on-disk feature cache: ``float32`` vectors keyed by the sha256 of an image's bytes.

A binary, append-only store safe for several processes and threads at once. What it holds is
decided elsewhere (:func:`ahcl.models.features.extract_features` fills it); this module only
knows records, segments, locks and compaction.

On-disk format, version 1
-------------------------
``<cache_dir>/<backbone name>-<first 16 hex of sha256(cache_key)>/`` holds the features of one
backbone run one way, where ``cache_key = "name|weights_id|transform_id|feature_dim|form"`` and
``form`` says how the network was run, e.g. ``fast1-cpu-fp32`` (see
:meth:`ahcl.models.backbones.Backbone.feature_key` and :func:`~ahcl.models.backbones.form_tag`;
``key.txt`` there spells it out for people). The
folder holds *segment files* ``seg-<pid>-<uuid>.bin``. Every writer (a process, a
:class:`FeatureCache`) appends to a segment of its own, so concurrent processes never write to the
same file; readers merge all segments (the first valid record of a key, in file-name order, wins).

Segment file (all integers little-endian)::

    header   magic b"AHCLFEAT" (8) | version u32 = 1 | feature_dim u32 | crc32 of the previous 16 bytes u32
    records  key (32: sha256 digest of the image bytes) | features float32 × feature_dim | crc32 u32
             (the crc32 covers key and features)

Records have a fixed size (``36 + 4 * feature_dim`` bytes) given by the header, so a reader needs no
resynchronisation: a trailing partial record (a writer killed mid-write, or still writing) is left
unread, and a record whose checksum fails is skipped; those items are recomputed by the next
:func:`~ahcl.models.features.extract_features`. A segment with a bad header is ignored as a whole.
A writer creates its segment under a hidden temporary name, takes an exclusive ``flock`` on it for
its lifetime, writes the header and only then renames it into place, so a visible segment always
has a full header.

:meth:`FeatureCache.compact` merges the segments nobody is writing (those it can ``flock``) into one;
:func:`~ahcl.models.features.extract_features` calls it when a folder has more than
:data:`MAX_SEGMENTS` segments.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import struct
import threading
import uuid
import weakref
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ahcl._io import atomic_write, atomic_write_text

if TYPE_CHECKING:  # only for annotations: the store itself never builds a model
    from ahcl.models.backbones import Backbone
    from ahcl.models.inference import InferenceBackbone

try:  # POSIX only; without it compaction is skipped (writers never share files anyway)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAX_SEGMENTS",
    "FeatureCache",
    "default_cache_dir",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAGIC = b"AHCLFEAT"
_HEADER = struct.Struct("<8sII")  # magic, version, feature_dim; then crc32 u32
HEADER_SIZE = _HEADER.size + 4
KEY_SIZE = 32
MAX_SEGMENTS = 32
_HEX_KEY = re.compile(r"[0-9a-f]{64}")


def default_cache_dir() -> Path:
    """``$AHCL_CACHE`` if set, else ``~/.cache/ahcl/features``."""
    env = os.environ.get("AHCL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ahcl" / "features"


def _digest(key: str) -> bytes:
    if not isinstance(key, str) or not _HEX_KEY.fullmatch(key):
        raise ValueError(f"feature cache keys are sha256 hex digests (see content_key), got {key!r}")
    return bytes.fromhex(key)


def _header(feature_dim: int) -> bytes:
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, feature_dim)
    return head + struct.pack("<I", zlib.crc32(head))


class FeatureCache:
    """Append-only on-disk store of ``float32 (feature_dim,)`` vectors keyed by sha256 hex digests.

    Safe to use from several processes on one folder at once (each writes its own segment) and from
    several threads of one process. Use as a context manager or call :meth:`close`.

    Args:
        cache_dir: root folder; this cache lives in a subfolder named after ``cache_key``.
        cache_key: what the stored features depend on (``Backbone.cache_key``).
        feature_dim: length of every stored vector.

    Attributes:
        path: the folder of this ``cache_key``.
        n_bad_records: records skipped so far because their checksum failed.
    """

    def __init__(self, cache_dir: str | os.PathLike, cache_key: str, feature_dim: int) -> None:
        if feature_dim <= 0:
            raise ValueError(f"feature_dim must be positive, got {feature_dim}")
        self.cache_key = cache_key
        self.feature_dim = int(feature_dim)
        safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", cache_key.split("|")[0]) or "features"
        key_hash = hashlib.sha256(cache_key.encode()).hexdigest()[:16]
        self.path = Path(cache_dir) / f"{safe_name}-{key_hash}"
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / "key.txt").is_file():
            atomic_write_text(self.path / "key.txt",
                              f"format_version {FORMAT_VERSION}\ncache_key {cache_key}\n")
        self._dtype = np.dtype([("key", f"V{KEY_SIZE}"), ("feat", "<f4", (self.feature_dim,)),
                                ("crc", "<u4")])
        self._store: dict[bytes, np.ndarray] = {}
        self._offsets: dict[str, int] = {}  # segment name → bytes consumed; -1: bad header
        self._lock = threading.Lock()
        self._writer: tuple[int, int, str] | None = None  # (pid, fd, segment name)
        self._finalizer: weakref.finalize | None = None
        self.n_bad_records = 0

    @classmethod
    def for_backbone(cls, backbone: Backbone | InferenceBackbone,
                     cache_dir: str | os.PathLike | None = None) -> "FeatureCache":
        """The cache of ``backbone``'s features under ``cache_dir`` (default
        :func:`default_cache_dir`).

        For an inference form, the features of that form; for a plain ``Backbone``, those of its
        default form (the CPU in float32), i.e. what ``extract_features(paths, backbone)`` fills.
        """
        return cls(default_cache_dir() if cache_dir is None else cache_dir, backbone.cache_key,
                   backbone.feature_dim)

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        """Number of distinct keys seen so far (call :meth:`refresh` to include others' writes)."""
        return len(self._store)

    def segments(self) -> list[Path]:
        """The segment files now in the folder, in merge order."""
        return sorted(self.path.glob("seg-*.bin"))

    def get_many(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Look up keys, re-reading the folder first when one is not already in memory.

        Args:
            keys: ``n`` sha256 hex digests (:func:`~ahcl.models.features.content_key`).

        Returns:
            ``features`` ``float32 (n, feature_dim)`` (zero rows where missing) and ``found``
            ``bool (n,)``.
        """
        digests = [_digest(k) for k in keys]
        with self._lock:
            if any(d not in self._store for d in digests):
                self._refresh()
            features = np.zeros((len(digests), self.feature_dim), dtype=np.float32)
            found = np.zeros(len(digests), dtype=bool)
            for i, d in enumerate(digests):
                row = self._store.get(d)
                if row is not None:
                    features[i] = row
                    found[i] = True
        return features, found

    def put_many(self, keys: Sequence[str], features: np.ndarray) -> None:
        """Append ``features`` ``float (n, feature_dim)`` under ``keys`` (``n`` hex digests).

        Each call is one append to this writer's segment: a crash mid-call loses at most the
        records of this call (and never corrupts earlier ones).
        """
        digests = [_digest(k) for k in keys]
        features = np.asarray(features)
        if features.shape != (len(digests), self.feature_dim):
            raise ValueError(f"expected features of shape ({len(digests)}, {self.feature_dim}), "
                             f"got {features.shape}")
        if not digests:
            return
        data = memoryview(self._encode(digests, features))
        with self._lock:
            fd = self._writer_fd()
            while data:
                data = data[os.write(fd, data):]
            for d, row in zip(digests, features.astype(np.float32)):
                self._store.setdefault(d, row)

    def refresh(self) -> None:
        """Read records that other writers appended since the last read."""
        with self._lock:
            self._refresh()

    def close(self) -> None:
        """Flush this writer's segment to disk and release it."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
                self._finalizer = None
            self._writer = None

    def compact(self) -> int:
        """Merge the segments no writer holds into one; returns how many segments were removed.

        A segment is merged only while this call holds an exclusive ``flock`` on it, and the merged
        file is in place before any merged segment is removed, so readers and concurrent
        compactions never lose a record.
        """
        if fcntl is None:  # pragma: no cover
            return 0
        with self._lock:
            own = self._writer[2] if self._writer else None
            locked = [(path, fd) for path in self.segments() if path.name != own
                      for fd in [_try_lock(path)] if fd is not None]
            try:
                if len(locked) < 2:
                    return 0
                self._refresh()  # every locked segment is now complete and read to its end
                merged = self.path / f"seg-{os.getpid()}-{uuid.uuid4().hex[:12]}.bin"
                digests = sorted(self._store)
                data = self._encode(digests, np.stack([self._store[d] for d in digests]))
                with atomic_write(merged) as f:
                    f.write(_header(self.feature_dim))
                    f.write(data)
                self._offsets[merged.name] = HEADER_SIZE + len(data)
                for path, _ in locked:
                    path.unlink(missing_ok=True)
                    self._offsets.pop(path.name, None)
                return len(locked)
            finally:
                for _, fd in locked:
                    os.close(fd)

    def _encode(self, digests: list[bytes], features: np.ndarray) -> bytes:
        """Records (key, features, crc32) of ``features`` ``float (n, feature_dim)``, as bytes."""
        records = np.zeros(len(digests), dtype=self._dtype)
        records["key"] = np.frombuffer(b"".join(digests), dtype=f"V{KEY_SIZE}")
        records["feat"] = features
        raw = memoryview(records.tobytes())
        size = self._dtype.itemsize
        records["crc"] = [zlib.crc32(raw[i * size:(i + 1) * size - 4]) for i in range(len(digests))]
        return records.tobytes()

    def _writer_fd(self) -> int:
        # A forked child (DataLoader worker, multiprocessing) must not append to its parent's segment.
        if self._writer is not None and self._writer[0] == os.getpid():
            return self._writer[1]
        name = f"seg-{os.getpid()}-{uuid.uuid4().hex[:12]}.bin"
        tmp = self.path / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, _header(self.feature_dim))
            os.replace(tmp, self.path / name)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        self._writer = (os.getpid(), fd, name)
        self._finalizer = weakref.finalize(self, _close_segment, fd, os.getpid())
        return fd

    def _refresh(self) -> None:
        size = self._dtype.itemsize
        for path in self.segments():
            offset = self._offsets.get(path.name, 0)
            if offset < 0:
                continue
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except FileNotFoundError:  # removed by a compaction since the listing
                continue
            if offset == 0:
                if len(data) < HEADER_SIZE:
                    continue
                if data[:HEADER_SIZE] != _header(self.feature_dim):
                    logger.warning("ignoring feature cache segment %s: bad header", path)
                    self._offsets[path.name] = -1
                    continue
                data, offset = data[HEADER_SIZE:], HEADER_SIZE
            n = len(data) // size  # a trailing partial record stays unread
            self._ingest(memoryview(data)[:n * size], n)
            self._offsets[path.name] = offset + n * size

    def _ingest(self, data: memoryview, n: int) -> None:
        records = np.frombuffer(data, dtype=self._dtype, count=n)
        size = self._dtype.itemsize
        feats = records["feat"].astype(np.float32)
        bad = 0
        for i in range(n):
            if zlib.crc32(data[i * size:(i + 1) * size - 4]) != records["crc"][i]:
                bad += 1
                continue
            self._store.setdefault(records["key"][i].tobytes(), feats[i])
        if bad:
            self.n_bad_records += bad
            logger.warning("feature cache %s: skipped %d corrupt records (they will be recomputed)",
                           self.path, bad)


def _try_lock(path: Path) -> int | None:
    """An fd of ``path`` holding an exclusive flock, or ``None`` if it is held elsewhere or gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _close_segment(fd: int, pid: int) -> None:
    if os.getpid() != pid:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
