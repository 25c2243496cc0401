"""The on-disk index file: versioned, checksummed, memory-mappable, written atomically.

Layout (all integers little-endian)::

    0     8 bytes   magic b"AHCLHIX\\0"
    8     uint32    format version (2; version 1 files are read too)
    12    uint32    header length L (bytes of JSON, space padded)
    16    uint32    CRC-32 of the header bytes
    20    uint32    reserved (0)
    24    L bytes   header JSON: n_bits, semantic_bits, n, next_id, file_size, and per
                    section {offset, nbytes, dtype, shape, crc32}
    ...   sections  codes uint8 (n, n_bits/8), ids int64 (n,), labels int64 (n,),
                    meta_offsets int64 (n+1,), meta_blob uint8 (UTF-8 JSON per item, empty = none);
                    each starts on a 64-byte boundary so np.memmap views are aligned.

Versions: 2 added ``semantic_bits`` (the class-level part of a split index's codes,
:class:`ahcl.index.HammingIndex`; ``n_bits`` for a plain index); a version-1 header has none and
holds a plain index (:func:`read_header` fills in ``semantic_bits = n_bits``). Nothing else
changed, so :func:`write_index` can still write version 1 for a plain index.

Integrity: the header is always verified; the file size and every section's bounds are checked
against the header at open, so a truncated or extended file is always an
:class:`~ahcl.errors.IndexFileError`. Section CRCs are checked unless the caller opts out: by
default (``verify=None``) they are checked when the file is under :data:`VERIFY_LIMIT` bytes or
when the file is read into memory anyway; a memory-mapped multi-GB file skips them so it opens
without reading every page (``verify=True`` forces the check, ~2.5 GB/s).

Writing: one pass into a temporary file beside the target (``ahcl._io.atomic_write``), then fsync
and rename, so a crash leaves the previous file intact. The header has a fixed reserved size, is
written as a placeholder first and rewritten once the CRCs are known, so each section is streamed
from its source (in-memory arrays or the old file's memory map) exactly once: re-saving after an
append costs one sequential copy of the file at disk speed, never a full copy in RAM.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

import numpy as np

from ahcl._io import atomic_write
from ahcl.errors import IndexFileError

MAGIC = b"AHCLHIX\0"
VERSION = 2
VERSIONS = (1, 2)  # what read_header accepts
ALIGN = 64
HEADER_RESERVED = 4096 - 24  # header JSON bytes; the sections start at 4096
VERIFY_LIMIT = 256 * 2**20
_PREAMBLE = struct.Struct("<8sIIII")
_CHUNK_BYTES = 32 * 2**20
SECTIONS = ("codes", "ids", "labels", "meta_offsets", "meta_blob")


@dataclass
class Segment:
    """A run of indexed rows held together (one file section or one batch of adds).

    Attributes:
        codes: ``uint8 (n, n_bits/8)``, C-contiguous (maybe a read-only memmap).
        ids: ``int64 (n,)``.
        labels: ``int64 (n,)``, ``-1`` for unknown.
        meta: ``None`` (no item has metadata), a list of ``dict | None`` of length ``n``, or a
            lazily decoded ``(offsets int64 (n+1,), blob uint8)`` pair from a file.
    """

    codes: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    meta: Any = None
    #: Views the kernels read, derived from this segment's rows (words, bit planes, tile
    #: minima); segments are never changed in place, so indexes that share one share these.
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def meta_at(self, i: int) -> dict | None:
        """Metadata of row ``i`` (``None`` when it has none)."""
        if self.meta is None:
            return None
        if isinstance(self.meta, list):
            return self.meta[i]
        offsets, blob = self.meta
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        return json.loads(bytes(blob[lo:hi])) if hi > lo else None

    def meta_chunks(self) -> Iterator[tuple[np.ndarray, bytes]]:
        """Yield ``(lengths int64, blob bytes)`` pieces of this segment's metadata section."""
        if self.meta is None:
            yield np.zeros(len(self), dtype=np.int64), b""
        elif isinstance(self.meta, list):
            enc = [b"" if m is None else json.dumps(m, separators=(",", ":")).encode()
                   for m in self.meta]
            yield np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(enc)), b"".join(enc)
        else:
            offsets, blob = self.meta
            lo, hi = int(offsets[0]), int(offsets[-1])
            yield np.diff(np.asarray(offsets)), bytes(blob[lo:hi])


def _file_error(path: Path, problem: str) -> IndexFileError:
    """``"<path>: <problem>"``, with the file as the error's ``path`` field."""
    return IndexFileError(f"{path}: {problem}", path=str(path))


def _aligned(x: int) -> int:
    return (x + ALIGN - 1) // ALIGN * ALIGN


def _layout(n: int, nbytes: int, blob_size: int) -> tuple[dict[str, dict], int]:
    """Section table (without CRCs) and total file size."""
    specs = {
        "codes": ("uint8", [n, nbytes], n * nbytes),
        "ids": ("int64", [n], 8 * n),
        "labels": ("int64", [n], 8 * n),
        "meta_offsets": ("int64", [n + 1], 8 * (n + 1)),
        "meta_blob": ("uint8", [blob_size], blob_size),
    }
    table, offset = {}, 24 + HEADER_RESERVED
    for name, (dtype, shape, size) in specs.items():
        offset = _aligned(offset)
        table[name] = {"offset": offset, "nbytes": size, "dtype": dtype, "shape": shape}
        offset += size
    return table, offset


def _write_array(f: IO[bytes], pieces: Iterable[np.ndarray | bytes], section: dict) -> None:
    """Stream ``pieces`` into the section at ``section['offset']``; records its CRC-32."""
    f.seek(section["offset"])
    crc, written = 0, 0
    for piece in pieces:
        raw = _bytes_view(piece) if isinstance(piece, np.ndarray) else memoryview(piece)
        for lo in range(0, len(raw), _CHUNK_BYTES):
            part = raw[lo:lo + _CHUNK_BYTES]
            f.write(part)
            crc = zlib.crc32(part, crc)
            written += len(part)
    if written != section["nbytes"]:
        raise RuntimeError(f"wrote {written} bytes for a {section['nbytes']}-byte section")
    section["crc32"] = crc


def header_token(raw: bytes) -> str:
    """The identity of one saved file: a digest of its header bytes, which hold every section's
    CRC, ``n`` and ``next_id``. The write-ahead log (:mod:`ahcl.index.wal`) names the file it
    extends by this token; a log for another file at the same path is stale and ignored."""
    return hashlib.sha256(raw).hexdigest()[:32]


def write_index(path: str | os.PathLike, n_bits: int, next_id: int, segments: list[Segment], *,
                semantic_bits: int | None = None, version: int = VERSION) -> str:
    """Write ``segments`` as one index file at ``path``, atomically (see the module docstring).

    ``semantic_bits``: of a split index (``None``: ``n_bits``, plain). ``version``: 1 writes the
    old layout (readable by older ahcl), only for a plain index. Returns the file's
    :func:`header_token`: a log written for an earlier file at ``path`` no longer applies.
    """
    semantic_bits = n_bits if semantic_bits is None else int(semantic_bits)
    if version not in VERSIONS or (version == 1 and semantic_bits != n_bits):
        raise ValueError(f"cannot write index format version {version} "
                         f"(semantic_bits={semantic_bits}, n_bits={n_bits})")
    n = sum(len(s) for s in segments)
    metas = [list(s.meta_chunks()) for s in segments]
    blob_size = sum(len(b) for chunks in metas for _, b in chunks)
    table, file_size = _layout(n, n_bits // 8, blob_size)

    def offsets() -> Iterator[np.ndarray]:
        start = 0
        yield np.zeros(1, dtype=np.int64)
        for chunks in metas:
            for lengths, _ in chunks:
                ends = np.cumsum(lengths) + start
                if len(ends):
                    start = int(ends[-1])
                yield ends

    with atomic_write(path, "wb") as f:
        f.write(b"\0" * (24 + HEADER_RESERVED))  # placeholder; the real header comes last
        _write_array(f, (s.codes for s in segments), table["codes"])
        _write_array(f, (s.ids for s in segments), table["ids"])
        _write_array(f, (s.labels for s in segments), table["labels"])
        _write_array(f, offsets(), table["meta_offsets"])
        _write_array(f, (b for chunks in metas for _, b in chunks), table["meta_blob"])
        f.truncate(file_size)
        header = {"format": "ahcl-hamming-index", "version": version, "n_bits": n_bits, "n": n,
                  "next_id": next_id, "file_size": file_size, "sections": table}
        if version >= 2:
            header["semantic_bits"] = semantic_bits
        raw = json.dumps(header, separators=(",", ":")).encode()
        if len(raw) > HEADER_RESERVED:
            raise RuntimeError("index header does not fit its reserved space")
        raw = raw.ljust(HEADER_RESERVED, b" ")
        f.seek(0)
        f.write(_PREAMBLE.pack(MAGIC, version, len(raw), zlib.crc32(raw), 0))
        f.write(raw)
    return header_token(raw)


def read_header(path: str | os.PathLike) -> dict:
    """The validated header of the index file at ``path`` (sizes checked, CRCs of sections not);
    ``semantic_bits`` is always set (``n_bits`` for a version-1 file), and ``token`` (the
    file's :func:`header_token`, not stored in it).

    Raises:
        IndexFileError: missing, not an index, unknown version, damaged header, or wrong size.
    """
    path = Path(path)
    if not path.is_file():
        raise _file_error(path, "no such index file (create one with `ahcl index build`)")
    size = path.stat().st_size
    with open(path, "rb") as f:
        pre = f.read(_PREAMBLE.size)
        if len(pre) < _PREAMBLE.size:
            raise _file_error(path, f"truncated index file ({size} bytes); rebuild or restore it")
        magic, version, hlen, hcrc, _ = _PREAMBLE.unpack(pre)
        if magic != MAGIC:
            raise _file_error(path, "not an ahcl index file (bad magic)")
        if version not in VERSIONS:
            raise _file_error(path, f"index format version {version}, this ahcl reads "
                                    f"{' and '.join(map(str, VERSIONS))}; upgrade ahcl or rebuild "
                                    "the index")
        raw = f.read(hlen)
    if len(raw) < hlen:
        raise _file_error(path, f"truncated index file ({size} bytes); rebuild or restore it")
    if zlib.crc32(raw) != hcrc:
        raise _file_error(path, "index header checksum mismatch (file corrupted); "
                                "rebuild or restore it")
    header = json.loads(raw)
    header["token"] = header_token(raw)
    if header.get("version") != version:
        raise _file_error(path, f"index header says version {header.get('version')}, the file "
                                f"{version}; rebuild or restore it")
    if version == 1:
        header["semantic_bits"] = header["n_bits"]
    n_bits, sem = header["n_bits"], header.get("semantic_bits")
    if not isinstance(sem, int) or isinstance(sem, bool) or sem % 8 or not 8 <= sem <= n_bits:
        raise _file_error(path, f"index header has semantic_bits {sem!r} for {n_bits}-bit codes "
                                "(a multiple of 8 in 8..n_bits); rebuild or restore it")
    if header["file_size"] != size:
        what = "truncated" if size < header["file_size"] else "has trailing bytes"
        raise _file_error(path, f"index file {what} ({size} bytes, header says "
                                f"{header['file_size']}); rebuild or restore it")
    for name in SECTIONS:
        sec = header["sections"][name]
        if sec["offset"] + sec["nbytes"] > size:
            raise _file_error(path, f"section {name} runs past the end of the file; "
                                    "rebuild or restore it")
    return header


def _section(path: Path, sec: dict, mmap: bool) -> np.ndarray:
    dtype, shape = np.dtype(sec["dtype"]), tuple(sec["shape"])
    if sec["nbytes"] == 0:
        return np.zeros(shape, dtype=dtype)
    if mmap:
        return np.memmap(path, dtype=dtype, mode="r", offset=sec["offset"], shape=shape)
    with open(path, "rb") as f:
        f.seek(sec["offset"])
        arr = np.fromfile(f, dtype=dtype, count=int(np.prod(shape)))
    return arr.reshape(shape)


def _bytes_view(arr: np.ndarray) -> memoryview:
    """The raw bytes of ``arr`` (no copy when contiguous; fine for empty arrays)."""
    return memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))


def _crc(arr: np.ndarray) -> int:
    raw = _bytes_view(arr)
    crc = 0
    for lo in range(0, len(raw), _CHUNK_BYTES):
        crc = zlib.crc32(raw[lo:lo + _CHUNK_BYTES], crc)
    return crc


def read_index(path: str | os.PathLike, mmap: bool = True,
               verify: bool | None = None) -> tuple[dict, Segment]:
    """Open an index file.

    Args:
        path: the file.
        mmap: map the sections read-only instead of reading them.
        verify: check every section's CRC-32; ``None``: when not ``mmap`` or the file is under
            :data:`VERIFY_LIMIT` bytes.

    Returns:
        ``(header, segment)``.

    Raises:
        IndexFileError: the file is missing, truncated, corrupted or of another version.
    """
    path = Path(path)
    header = read_header(path)
    if verify is None:
        verify = not mmap or header["file_size"] <= VERIFY_LIMIT
    arrays = {name: _section(path, header["sections"][name], mmap) for name in SECTIONS}
    if verify:
        for name, arr in arrays.items():
            if _crc(arr) != header["sections"][name]["crc32"]:
                raise _file_error(path, f"section {name} checksum mismatch (file corrupted); "
                                        "rebuild or restore it")
    n = header["n"]
    offsets = arrays["meta_offsets"]
    if offsets.shape != (n + 1,) or (n and int(offsets[-1]) != arrays["meta_blob"].shape[0]):
        raise _file_error(path, "inconsistent metadata section; rebuild or restore it")
    meta = (offsets, arrays["meta_blob"]) if arrays["meta_blob"].shape[0] else None
    return header, Segment(arrays["codes"], arrays["ids"], arrays["labels"], meta)
