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

Multi-index hashing tables (:mod:`ahcl.index.mih`) of a file ``X.index`` are kept beside it in
``X.index.mih``, laid out the same way (magic ``b"AHCLMIH\\0"``, version 1; header JSON with
``index_token``, the :func:`header_token` of the index file they were built from, ``n_bits``,
``n``, the substring layout ``subs`` and the sections ``perms``, ``offsets``, ``codes``), written
atomically and checked as the index file is (:func:`write_tables`, :func:`read_tables`). Tables
with another ``index_token`` were built from an earlier file at that path: stale, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
TABLES_MAGIC = b"AHCLMIH\0"
TABLES_VERSION = 1
TABLES_SECTIONS = ("perms", "offsets", "codes")


@dataclass(frozen=True)
class _Kind:
    """One kind of sectioned file: its magic and versions, what errors call it, how to fix one."""

    what: str
    magic: bytes
    versions: tuple[int, ...]
    fix: str
    fix_version: str


_INDEX = _Kind("index", MAGIC, VERSIONS, "rebuild or restore it",
               "upgrade ahcl or rebuild the index")
_TABLES = _Kind("MIH tables", TABLES_MAGIC, (TABLES_VERSION,), "they are rebuilt from the index",
                "they are rebuilt from the index")


@dataclass
class Segment:
    """A run of indexed rows held together (one file section or one batch of adds).

    Attributes:
        codes: ``uint8 (n, n_bits/8)``, C-contiguous (maybe a read-only memmap).
        ids: ``int64 (n,)``.
        labels: ``int64 (n,)``, ``-1`` for unknown.
        meta: ``None`` (no item has metadata), a list of ``dict | None`` of length ``n``, or a
            lazily decoded ``(offsets int64 (m+1,), blob uint8)`` pair from a file (``m = n``),
            or ``(offsets, blob, rows int64 (n,))``: rows ``rows`` of such a pair (what is left
            of a file's segment after removals, still undecoded).
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
        offsets, blob, *rows = self.meta
        r = int(rows[0][i]) if rows else i
        lo, hi = int(offsets[r]), int(offsets[r + 1])
        return json.loads(bytes(blob[lo:hi])) if hi > lo else None

    def meta_with_key(self, key: str) -> tuple[np.ndarray, list[dict]]:
        """The rows (ascending) whose metadata has ``key``, and their metadata. A file's
        undecoded metadata is searched as bytes for the key's JSON spelling and only the rows
        that mention it are decoded: a pass over the section at memory speed instead of a JSON
        read per row."""
        if self.meta is None:
            return np.zeros(0, dtype=np.int64), []
        if isinstance(self.meta, list):
            found = [(i, m) for i, m in enumerate(self.meta) if m and key in m]
        else:
            offsets, blob, *picked = self.meta
            offsets = np.asarray(offsets)
            lo, hi = int(offsets[0]), int(offsets[-1])
            starts = [lo + m.start() for m in re.finditer(re.escape(json.dumps(key).encode()),
                                                         blob[lo:hi])]
            rows = np.unique(np.searchsorted(offsets, np.asarray(starts, dtype=np.int64),
                                             side="right") - 1)
            if picked:  # file rows -> this segment's rows (what removals left)
                kept = np.asarray(picked[0])
                at = np.minimum(np.searchsorted(kept, rows), max(len(kept) - 1, 0))
                rows = at[kept[at] == rows] if len(kept) else np.zeros(0, dtype=np.int64)
            # a mention is not always the key (it may be nested deeper): decode to be sure
            found = [(r, m) for r in rows.tolist() if key in (m := self.meta_at(r) or {})]
        return np.array([r for r, _ in found], dtype=np.int64), [m for _, m in found]

    def meta_of_rows(self, rows: np.ndarray) -> Any:
        """The metadata of rows ``rows`` (ascending positions) in this segment's form: a list
        stays a list, a file's lazily decoded form stays undecoded (``O(len(rows))``, no JSON
        read), so removing a few rows from a large file costs no pass over its metadata."""
        if self.meta is None or isinstance(self.meta, list):
            return None if self.meta is None else [self.meta[int(i)] for i in rows]
        offsets, blob, *picked = self.meta
        rows = np.asarray(rows, dtype=np.int64)
        return offsets, blob, (picked[0][rows] if picked else rows)

    def meta_chunks(self) -> Iterator[tuple[np.ndarray, bytes]]:
        """Yield ``(lengths int64, blob bytes)`` pieces of this segment's metadata section."""
        if self.meta is None:
            yield np.zeros(len(self), dtype=np.int64), b""
        elif isinstance(self.meta, list):
            enc = [b"" if m is None else json.dumps(m, separators=(",", ":")).encode()
                   for m in self.meta]
            yield np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(enc)), b"".join(enc)
        elif len(self.meta) == 2:
            offsets, blob = self.meta
            lo, hi = int(offsets[0]), int(offsets[-1])
            yield np.diff(np.asarray(offsets)), bytes(blob[lo:hi])
        else:  # one piece per run of consecutive rows (removals leave few runs)
            offsets, blob, rows = self.meta
            if not len(rows):
                yield np.zeros(0, dtype=np.int64), b""
                return
            for run in np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1):
                a, b = int(run[0]), int(run[-1]) + 1
                yield (np.diff(np.asarray(offsets[a:b + 1])),
                       bytes(blob[int(offsets[a]):int(offsets[b])]))


def _file_error(path: Path, problem: str) -> IndexFileError:
    """``"<path>: <problem>"``, with the file as the error's ``path`` field."""
    return IndexFileError(f"{path}: {problem}", path=str(path))


def _aligned(x: int) -> int:
    return (x + ALIGN - 1) // ALIGN * ALIGN


def _layout(n: int, nbytes: int, blob_size: int) -> tuple[dict[str, dict], int]:
    """Section table (without CRCs) and total file size."""
    return _plan({"codes": ("uint8", [n, nbytes]), "ids": ("int64", [n]),
                  "labels": ("int64", [n]), "meta_offsets": ("int64", [n + 1]),
                  "meta_blob": ("uint8", [blob_size])})


def _plan(specs: dict[str, tuple[str, list[int]]]) -> tuple[dict[str, dict], int]:
    """Section table (without CRCs) of sections ``name: (dtype, shape)`` in that order, each on
    an :data:`ALIGN` boundary after the reserved header, and the total file size."""
    table, offset = {}, 24 + HEADER_RESERVED
    for name, (dtype, shape) in specs.items():
        size = np.dtype(dtype).itemsize * int(np.prod(shape, dtype=np.int64))
        offset = _aligned(offset)
        table[name] = {"offset": offset, "nbytes": size, "dtype": dtype, "shape": shape}
        offset += size
    return table, offset


def _write_file(path: str | os.PathLike, magic: bytes, header: dict,
                pieces: dict[str, Iterable[np.ndarray | bytes]]) -> bytes:
    """Write a sectioned file atomically: a placeholder header, each section of
    ``header["sections"]`` streamed from ``pieces[name]`` (its CRC recorded in the table), then
    the real header. Returns the header's bytes (what :func:`header_token` digests)."""
    with atomic_write(path, "wb") as f:
        f.write(b"\0" * (24 + HEADER_RESERVED))  # placeholder; the real header comes last
        for name, section in header["sections"].items():
            _write_array(f, pieces[name], section)
        f.truncate(header["file_size"])
        raw = json.dumps(header, separators=(",", ":")).encode()
        if len(raw) > HEADER_RESERVED:
            raise RuntimeError(f"{header['format']} header does not fit its reserved space")
        raw = raw.ljust(HEADER_RESERVED, b" ")
        f.seek(0)
        f.write(_PREAMBLE.pack(magic, header["version"], len(raw), zlib.crc32(raw), 0))
        f.write(raw)
    return raw


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

    header = {"format": "ahcl-hamming-index", "version": version, "n_bits": n_bits, "n": n,
              "next_id": next_id, "file_size": file_size, "sections": table}
    if version >= 2:
        header["semantic_bits"] = semantic_bits
    raw = _write_file(path, MAGIC, header, {
        "codes": (s.codes for s in segments), "ids": (s.ids for s in segments),
        "labels": (s.labels for s in segments), "meta_offsets": offsets(),
        "meta_blob": (b for chunks in metas for _, b in chunks)})
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
    header, size = _read_head(path, _INDEX)
    if header["version"] == 1:
        header["semantic_bits"] = header["n_bits"]
    n_bits, sem = header["n_bits"], header.get("semantic_bits")
    if not isinstance(sem, int) or isinstance(sem, bool) or sem % 8 or not 8 <= sem <= n_bits:
        raise _file_error(path, f"index header has semantic_bits {sem!r} for {n_bits}-bit codes "
                                "(a multiple of 8 in 8..n_bits); rebuild or restore it")
    _check_sizes(path, header, size, SECTIONS, _INDEX)
    return header


def _read_head(path: Path, kind: _Kind) -> tuple[dict, int]:
    """The header of a sectioned file of ``kind`` (preamble, version and header CRC checked;
    ``token`` added) and the file's size."""
    size = path.stat().st_size
    truncated = f"truncated {kind.what} file ({size} bytes); {kind.fix}"
    with open(path, "rb") as f:
        pre = f.read(_PREAMBLE.size)
        if len(pre) < _PREAMBLE.size:
            raise _file_error(path, truncated)
        magic, version, hlen, hcrc, _ = _PREAMBLE.unpack(pre)
        if magic != kind.magic:
            raise _file_error(path, f"not an ahcl {kind.what} file (bad magic)")
        if version not in kind.versions:
            raise _file_error(path, f"{kind.what} format version {version}, this ahcl reads "
                                    f"{' and '.join(map(str, kind.versions))}; "
                                    f"{kind.fix_version}")
        raw = f.read(hlen)
    if len(raw) < hlen:
        raise _file_error(path, truncated)
    if zlib.crc32(raw) != hcrc:
        raise _file_error(path, f"{kind.what} header checksum mismatch (file corrupted); "
                                f"{kind.fix}")
    header = json.loads(raw)
    header["token"] = header_token(raw)
    if header.get("version") != version:
        raise _file_error(path, f"{kind.what} header says version {header.get('version')}, the "
                                f"file {version}; {kind.fix}")
    return header, size


def _check_sizes(path: Path, header: dict, size: int, names: Iterable[str], kind: _Kind) -> None:
    """The file is as long as its header says, and every section lies inside it."""
    if header["file_size"] != size:
        what = "truncated" if size < header["file_size"] else "has trailing bytes"
        raise _file_error(path, f"{kind.what} file {what} ({size} bytes, header says "
                                f"{header['file_size']}); {kind.fix}")
    for name in names:
        sec = header["sections"][name]
        if sec["offset"] + sec["nbytes"] > size:
            raise _file_error(path, f"section {name} runs past the end of the file; {kind.fix}")


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
    arrays = _sections(path, header, SECTIONS, mmap, verify, _INDEX)
    n = header["n"]
    offsets = arrays["meta_offsets"]
    if offsets.shape != (n + 1,) or (n and int(offsets[-1]) != arrays["meta_blob"].shape[0]):
        raise _file_error(path, "inconsistent metadata section; rebuild or restore it")
    meta = (offsets, arrays["meta_blob"]) if arrays["meta_blob"].shape[0] else None
    return header, Segment(arrays["codes"], arrays["ids"], arrays["labels"], meta)


def _sections(path: Path, header: dict, names: Iterable[str], mmap: bool, verify: bool | None,
              kind: _Kind) -> dict[str, np.ndarray]:
    """The sections ``names``, mapped or read; CRC-checked when ``verify`` (``None``: when not
    ``mmap`` or the file is under :data:`VERIFY_LIMIT` bytes)."""
    if verify is None:
        verify = not mmap or header["file_size"] <= VERIFY_LIMIT
    arrays = {name: _section(path, header["sections"][name], mmap) for name in names}
    if verify:
        _verify(path, header, arrays, kind)
    header["verified"] = bool(verify)
    return arrays


def _verify(path: Path, header: dict, arrays: dict[str, np.ndarray], kind: _Kind) -> None:
    for name, arr in arrays.items():
        if _crc(arr) != header["sections"][name]["crc32"]:
            raise _file_error(path, f"section {name} checksum mismatch (file corrupted); "
                                    f"{kind.fix}")


def tables_path(index_path: str | os.PathLike) -> Path:
    """The MIH tables of an index file: ``X.index.mih`` beside ``X.index``."""
    path = Path(index_path)
    return path.with_name(path.name + ".mih")


def write_tables(index_path: str | os.PathLike, token: str, n_bits: int, subs: np.ndarray,
                 arrays: dict[str, np.ndarray]) -> None:
    """Write MIH tables for the index file whose :func:`header_token` is ``token``, atomically.

    Args:
        subs: ``int64 (m, 3)`` substring layout.
        arrays: the :data:`TABLES_SECTIONS` arrays (``perms int32 (m, n)``, ``offsets int32``,
            ``codes uint64``), C-contiguous.
    """
    specs = {name: (arrays[name].dtype.name, list(arrays[name].shape)) for name in TABLES_SECTIONS}
    table, file_size = _plan(specs)
    header = {"format": "ahcl-mih-tables", "version": TABLES_VERSION, "index_token": token,
              "n_bits": int(n_bits), "n": int(arrays["perms"].shape[1]),
              "subs": np.asarray(subs).tolist(), "file_size": file_size, "sections": table}
    _write_file(tables_path(index_path), TABLES_MAGIC, header,
                {name: (arrays[name],) for name in TABLES_SECTIONS})


def read_tables(index_path: str | os.PathLike, token: str, *, mmap: bool = True,
                verify: bool | None = None) -> tuple[dict, dict[str, np.ndarray]] | None:
    """The MIH tables beside an index file, if they were built from the file ``token``.

    Args:
        mmap, verify: as in :func:`read_index` (``verify=None``: CRCs checked unless mapping
            tables over :data:`VERIFY_LIMIT` bytes).

    Returns:
        ``(header, arrays)`` (``header["verified"]``: whether the CRCs were checked), or
        ``None``: there are none, or they were built from another index file (``index_token``
        is not ``token``: stale).

    Raises:
        IndexFileError: the tables file is damaged: truncated, bad header, failed CRC.
    """
    path = tables_path(index_path)
    if not path.is_file():
        return None
    header, size = _read_head(path, _TABLES)
    if header.get("index_token") != token:
        return None
    if not isinstance(header.get("sections"), dict) or set(header["sections"]) != \
            set(TABLES_SECTIONS):
        raise _file_error(path, f"MIH tables header lacks its sections; {_TABLES.fix}")
    _check_sizes(path, header, size, TABLES_SECTIONS, _TABLES)
    return header, _sections(path, header, TABLES_SECTIONS, mmap, verify, _TABLES)


def verify_tables(index_path: str | os.PathLike, header: dict,
                  arrays: dict[str, np.ndarray]) -> None:
    """Check the CRCs of tables :func:`read_tables` gave without (the arrays in hand, so a file
    replaced since does not stand in for them).

    Raises:
        IndexFileError: a section's CRC does not match.
    """
    _verify(tables_path(index_path), header, arrays, _TABLES)
