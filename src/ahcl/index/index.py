"""The Hamming index: add, remove, exact k-NN and range search, persistence (faiss binary style).

Results are exact and ordered by ``(distance, id)`` ascending. ``search`` pads a query's row when
fewer than ``k`` codes are indexed with ``I = -1`` and ``D = n_bits + 1`` (one more than any real
distance, so padded rows still sort last).

Storage is a list of segments (the file the index was loaded from, memory-mapped, then one segment
per ``add``), so adding to a loaded 100M-code index never copies it into RAM; the scan carries each
query's top-k state from one segment to the next. ``remove`` rewrites only the segments it touches.
Ids are any unique int64; storage order does not matter because ties are broken on the ids
themselves.

Multi-index hashing (:mod:`ahcl.index.mih`, ``mih=True``) keeps tables per segment: the file's
rows use the tables saved beside the file (``X.index.mih``, mapped at the first search; built and
saved there when missing, stale or damaged); the rows added since are scanned flat while they are
at most :data:`MIH_FLAT_SHARE` of the rows with tables, then merged into one in-memory segment
with tables of its own. Each query's top-k of every part are merged by ``(distance, id)``, so
results are those of the flat scan. A removal marks the rows removed in the tables it touches
(no rebuild; tables mostly of removed rows are dropped and rebuilt).

Split indexes (``semantic_bits`` given): a code is a class-level part (its first
``semantic_bits`` bits) and an instance-level part (the rest); results are exact and ordered by
``(semantic distance, instance distance, id)`` (:mod:`ahcl.index.lexicographic` scans), ``D`` is
the semantic distance and :meth:`HammingIndex.search_split` also returns the instance distances.
Multi-index hashing does not apply to that order: a split index always scans flat.

Kernels: :mod:`ahcl.index.kernels` scans, on the path :mod:`ahcl.index.simd` picks for the CPU
(or the one forced); the ``avx2`` path also keeps each segment's bit planes, built at the first
search and dropped at the next change. A search with a large ``k`` starts from a bound sampled
from the database (:meth:`HammingIndex._seed_bounds`), checked afterwards, so it stays exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ahcl.errors import AhclError, IndexFileError
from ahcl.index import format as fmt
from ahcl.index import kernels, lexicographic, planes, selection, simd, wal
from ahcl.index.columns import Column
from ahcl.index.hits import Hit, hits_from_rows
from ahcl.index.mih import MultiIndexHash, TablesFile, write_tables
from ahcl.index.packing import as_packed


SEED_ROWS = 8  # sample rows expected within the k-th distance (see HammingIndex._seed_bounds)
SEED_RANK = 2.0
CAP_EXTRA = 512  # candidate buffer: room for at least this many entries beyond k
RANGE_ROOM = 64  # range search results per query that the first scan keeps,
RANGE_ROOM_TOTAL = 1 << 22  # and for all queries together
#: Rows of the in-memory segment that small additions are merged into; past it they start a new
#: one. Bounds both the copy one addition costs and the number of segments a scan walks.
TAIL_ROWS = 16384
#: With ``mih``, rows without tables (added since the tables were built) are scanned flat while
#: they are at most this share of the rows with tables; past it they get tables of their own. On
#: clustered codes, where MIH pays, an MIH search of 10M codes costs what a flat scan of 1/30 of
#: them does (README, "Index speed"): the flat part stays below that.
MIH_FLAT_SHARE = 1 / 64


#: Most bytes of padding (results beyond the items indexed) a search may allocate: a k far above
#: len(index) is refused with an error instead (the CLI, Run and the service clamp k first).
MAX_PADDING_BYTES = 256 * 2**20
_BYTES_PER_RESULT = 20  # int32 distance(s), int64 position and id

#: Largest id :meth:`HammingIndex.add` accepts: default ids count up from the largest, so ids
#: near the int64 limit would overflow them.
MAX_ID = 2**62


class HammingIndexError(AhclError, ValueError):
    """Wrong input to the index: code width, duplicate or unknown ids, bad arguments.

    Fields, where they apply: ``n_bits`` (the index's, or the one given), ``got_bits`` (the width
    of the codes given), ``id`` (a clashing or unknown id), ``k``.
    """


class HammingIndex:
    """Exact Hamming-distance index over packed binary codes.

    Args:
        n_bits: code length, a positive multiple of 8.
        semantic_bits: make a split index: the first ``semantic_bits`` bits of each code are its
            class-level part, the other ``n_bits - semantic_bits`` its instance-level part, and
            searches order by ``(semantic distance, instance distance, id)``. A multiple of 8,
            ``8 <= semantic_bits <= n_bits``; ``None`` or ``n_bits``: a plain index.
        mih: keep multi-index hashing tables and use them for :meth:`search` (built or opened
            at the first search; see the module docstring for what changes cost). Adds about
            ``n m (4 + n_bits / 8)`` bytes (see :mod:`ahcl.index.mih`). A split index accepts it
            but builds no tables and scans flat (MIH prunes by the whole distance, not by the
            lexicographic order).
        threads: kernel threads of each call (``None``: the calling thread's numba setting, all
            cores by default). Scoped to the calling thread and the call
            (:func:`ahcl.index.kernels.thread_limit`): indexes with different ``threads`` can be
            searched from several threads at once.
    """

    def __init__(self, n_bits: int, *, semantic_bits: int | None = None, mih: bool = False,
                 threads: int | None = None) -> None:
        if n_bits <= 0 or n_bits % 8:
            raise HammingIndexError(f"n_bits must be a positive multiple of 8, got {n_bits}",
                                    n_bits=n_bits)
        self.n_bits = int(n_bits)
        if semantic_bits is None:
            semantic_bits = self.n_bits
        if isinstance(semantic_bits, bool) or not isinstance(semantic_bits, (int, np.integer)) \
                or semantic_bits % 8 or not 8 <= semantic_bits <= self.n_bits:
            raise HammingIndexError(f"semantic_bits must be a multiple of 8 in 8..{self.n_bits} "
                                    f"(n_bits), got {semantic_bits!r}", n_bits=self.n_bits)
        self._semantic_bits = int(semantic_bits)
        self.mih = bool(mih)
        self.threads = threads
        self._segments: list[fmt.Segment] = []
        self._ids_col: Column | None = None  # ids and labels in storage order, built on use
        self._labels_col: Column | None = None
        self._next_id = 0
        self._version = 0  # bumped on every change; cached views check it
        self._cache: dict[str, Any] = {}
        self._mih_width: int | None = None  # substring width asked of build_mih

    # ------------------------------------------------------------------ size and bookkeeping
    def __len__(self) -> int:
        return sum(len(s) for s in self._segments)

    @property
    def semantic_bits(self) -> int:
        """Bits of the class-level part of a code (``n_bits`` for a plain index)."""
        return self._semantic_bits

    @property
    def instance_bits(self) -> int:
        """Bits of the instance-level part, ``n_bits - semantic_bits`` (0 for a plain index)."""
        return self.n_bits - self._semantic_bits

    @property
    def split(self) -> bool:
        """Whether searches order by (semantic distance, instance distance, id)."""
        return self.instance_bits > 0

    @property
    def nbytes_per_code(self) -> int:
        """Bytes per packed code, ``n_bits / 8``."""
        return self.n_bits // 8

    @property
    def words(self) -> int:
        """64-bit words per code in the kernels."""
        return (self.n_bits + 63) // 64

    @property
    def ids(self) -> np.ndarray:
        """``int64 (n,)`` ids in storage order."""
        if self._ids_col is None:
            self._ids_col = Column(np.asarray(_concat([s.ids for s in self._segments], np.int64)))
        return self._ids_col.view(len(self))

    @property
    def labels(self) -> np.ndarray:
        """``int64 (n,)`` labels in storage order (``-1`` unknown)."""
        if self._labels_col is None:
            self._labels_col = Column(
                np.asarray(_concat([s.labels for s in self._segments], np.int64)))
        return self._labels_col.view(len(self))

    def copy(self) -> "HammingIndex":
        """An independent index with the same content, in O(segments): rows, kernel views and
        id/label columns are shared, never changed in place. What a search reads while a writer
        changes the original (the service searches the snapshot it took, never waiting)."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other._segments = list(self._segments)
        other._cache = dict(self._cache)
        return other

    def _cached(self, key: str, make: Any) -> Any:
        hit = self._cache.get(key)
        if hit is None or hit[0] != self._version:
            hit = (self._version, make())
            self._cache[key] = hit
        return hit[1]

    def _changed(self) -> None:
        self._version += 1
        self._cache.clear()

    # ------------------------------------------------------------------ mutation
    def _check_codes(self, codes: np.ndarray, what: str = "codes") -> np.ndarray:
        try:
            packed = as_packed(codes)
        except ValueError as exc:
            raise HammingIndexError(f"{what}: {exc}") from None
        if packed.shape[1] != self.nbytes_per_code:
            raise HammingIndexError(
                f"{what} have {packed.shape[1] * 8} bits, the index holds {self.n_bits}-bit codes",
                n_bits=self.n_bits, got_bits=packed.shape[1] * 8)
        return packed

    def add(self, codes: np.ndarray, ids: Sequence[int] | np.ndarray | None = None,
            labels: Sequence[int] | np.ndarray | None = None,
            meta: Sequence[dict | None] | None = None) -> np.ndarray:
        """Add codes.

        Args:
            codes: ``uint8 (n, n_bits/8)`` packed codes, or ``(n, n_bits)`` ±1 / real values.
            ids: ``int64 (n,)`` unique ids, not already indexed; default: consecutive integers
                after the largest id ever added.
            labels: ``int64 (n,)`` class labels, ``-1`` for unknown (the default).
            meta: ``n`` JSON-serialisable dicts (or ``None``), e.g. ``{"path": ...}``.

        Returns:
            ``int64 (n,)`` the ids given to the codes.

        Raises:
            HammingIndexError: wrong width, length mismatch, or duplicate ids.
        """
        packed = self._check_codes(codes)
        n = packed.shape[0]
        if ids is None:
            new_ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            given = np.asarray(ids)
            if given.size and not (np.issubdtype(given.dtype, np.integer)
                                   and not np.issubdtype(given.dtype, np.bool_)):
                raise HammingIndexError(f"ids must be integers, got {given.dtype}")
            if given.size and (given.min() < 0 or given.max() > MAX_ID):
                raise HammingIndexError(f"ids must be in 0..{MAX_ID} (-1 is the padding of "
                                        "search results)")
            new_ids = given.astype(np.int64).reshape(-1)
            self._check_new_ids(new_ids, n)
        lab = np.full(n, -1, dtype=np.int64) if labels is None \
            else np.asarray(labels, dtype=np.int64).reshape(-1)
        if lab.shape[0] != n:
            raise HammingIndexError(f"{lab.shape[0]} labels for {n} codes")
        items = None
        if meta is not None:
            items = list(meta)
            if len(items) != n:
                raise HammingIndexError(f"{len(items)} meta entries for {n} codes")
        if n == 0:
            return new_ids
        self._append(packed, new_ids, lab, items)
        return new_ids

    def _append(self, packed: np.ndarray, new_ids: np.ndarray, lab: np.ndarray,
                items: list | None) -> None:
        """Add checked rows: merged into the last segment while it is a small in-memory one
        (:data:`TAIL_ROWS`), so many single additions neither copy the archive nor leave the
        scan walking many tiny segments."""
        n_before, n = len(self), packed.shape[0]
        ordered = self._cache.get("sorter")
        ordered = ordered is not None and ordered[0] == self._version and ordered[1][0] is None \
            and bool(np.all(new_ids[1:] > new_ids[:-1])) \
            and (n_before == 0 or int(new_ids[0]) > int(self.ids[-1]))
        last = self._segments[-1] if self._segments else None
        if last is not None and len(last) + n <= TAIL_ROWS \
                and not isinstance(last.codes, np.memmap) and not isinstance(last.meta, tuple) \
                and not (self.mih and "mih file" in last.cache):  # its tables stay its own
            meta = None
            if last.meta is not None or items is not None:
                meta = (last.meta if last.meta is not None else [None] * len(last)) \
                    + (items if items is not None else [None] * n)
            self._segments[-1] = fmt.Segment(np.concatenate([last.codes, packed]),
                                             np.concatenate([last.ids, new_ids]),
                                             np.concatenate([last.labels, lab]), meta)
        else:
            self._segments.append(fmt.Segment(packed.copy(), new_ids.copy(), lab.copy(), items))
        if self._ids_col is not None:
            self._ids_col = self._ids_col.extended(n_before, new_ids)
        if self._labels_col is not None:
            self._labels_col = self._labels_col.extended(n_before, lab)
        self._next_id = max(self._next_id, int(new_ids.max()) + 1)
        self._changed()
        if ordered:  # ids still ascending in storage order: lookups need no sort
            self._cache["sorter"] = (self._version, (None,))

    def _check_new_ids(self, new_ids: np.ndarray, n: int) -> None:
        if new_ids.shape[0] != n:
            raise HammingIndexError(f"{new_ids.shape[0]} ids for {n} codes")
        if n and np.unique(new_ids).shape[0] != n:
            raise HammingIndexError("duplicate ids in one add() call; ids must be unique")
        if n and len(self) and new_ids.min() < self._next_id:
            clash = np.concatenate([np.empty(0, np.int64)] + [
                new_ids[np.isin(new_ids, s.ids)] for s in self._segments
                if new_ids.min() <= _max_id(s)])
            if clash.shape[0]:
                raise HammingIndexError(f"id {int(clash[0])} is already in the index "
                                        f"({clash.shape[0]} clashing ids); remove it first",
                                        id=int(clash[0]))

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Remove the codes with these ids (unknown ids are ignored); returns how many went."""
        gone = np.asarray(ids, dtype=np.int64).reshape(-1)
        removed = 0
        kept: list[fmt.Segment] = []
        for seg in self._segments:
            hit = np.isin(seg.ids, gone)
            n_hit = int(hit.sum())
            if n_hit == 0:
                kept.append(seg)
                continue
            removed += n_hit
            keep = ~hit
            if keep.any():
                rest = fmt.Segment(np.ascontiguousarray(seg.codes[keep]), seg.ids[keep],
                                   seg.labels[keep], seg.meta_of_rows(np.flatnonzero(keep)))
                self._derive_tables(seg, rest, np.flatnonzero(hit))
                kept.append(rest)
        if removed:
            self._segments = kept
            self._ids_col = self._labels_col = None
            self._changed()
        return removed

    def _derive_tables(self, old: fmt.Segment, new: fmt.Segment, gone: np.ndarray) -> None:
        """Give ``new`` (``old`` without its rows ``gone``) the MIH tables of ``old`` with those
        rows marked removed: a removal costs no rebuild. The file's tables are opened for it
        when they are there (``O(1)``), never built."""
        source = old.cache.get("mih file")
        if source is not None and "mih" not in old.cache and self.mih and not self.split \
                and len(old) == source.n and source.state == "unopened":
            tables = source.open(self.n_bits)
            if tables is not None:
                old.cache["mih"] = (tables, np.asarray(old.ids))
        have = old.cache.get("mih")
        if have is None or (source is not None and source.state == "damaged"):
            return
        new.cache["mih"] = (have[0].without(gone), have[1])
        if source is not None:
            new.cache["mih file"] = source

    def _merge_segments(self, first: int = 0) -> None:
        """Merge the segments from ``first`` on into one in-memory block (what MIH tables are
        built on)."""
        if len(self._segments) - first <= 1:
            return
        segs = self._segments[first:]
        meta = None
        if any(s.meta is not None for s in segs):
            meta = [s.meta_at(i) for s in segs for i in range(len(s))]
        merged = fmt.Segment(np.concatenate([s.codes for s in segs]),
                             np.concatenate([s.ids for s in segs]),
                             np.concatenate([s.labels for s in segs]), meta)
        self._segments = self._segments[:first] + [merged]
        self._cache.clear()  # same content, new arrays; positions are unchanged

    # ------------------------------------------------------------------ kernels' views
    def _words(self, codes: np.ndarray) -> np.ndarray:
        """``uint64 (n * W,)`` flat view of packed codes (a padded copy when n_bits % 64)."""
        codes = np.ascontiguousarray(codes)
        if self.n_bits % 64 == 0 and codes.ctypes.data % 8 == 0:
            return codes.view(np.uint64).reshape(-1)
        padded = np.zeros((codes.shape[0], self.words * 8), dtype=np.uint8)
        padded[:, :codes.shape[1]] = codes
        return padded.view(np.uint64).reshape(-1)

    def _segment_words(self) -> list[np.ndarray]:
        return [_segment_cached(s, "words", lambda s=s: self._words(s.codes))
                for s in self._segments]

    def _kernel_inputs(self, q: np.ndarray) -> tuple[int, np.ndarray, list[np.ndarray]]:
        """The calling thread's kernel path, and what it reads besides the rows: query plane
        masks and per-segment bit planes for ``avx2`` (built on first use and kept until the
        next change: as much memory again as the codes), empty arrays otherwise."""
        path = simd.path_code(self.n_bits)
        if path == simd.AVX2 and self.n_bits < 2**19:
            n_planes = planes.n_planes(self.n_bits)
            segs = [_segment_cached(s, "planes", lambda s=s, w=w: planes.to_planes(
                w, len(s), self.words, n_planes))
                for s, w in zip(self._segments, self._segment_words())]
            return path, planes.query_masks(q, n_planes), segs
        path = simd.POPCNT if path == simd.AVX2 else path
        empty = np.zeros(0, dtype=np.uint64)
        return path, np.zeros((q.shape[0], 0), dtype=np.uint64), [empty] * len(self._segments)

    def _queries(self, query_codes: np.ndarray) -> np.ndarray:
        q = self._check_codes(query_codes, "query codes")
        return self._words(q).reshape(q.shape[0], self.words)

    def build_mih(self, width: int | None = None) -> "HammingIndex":
        """Build multi-index hashing tables now (and keep them up to date); returns ``self``.

        The rows of the file the index was loaded from use the tables saved beside it when they
        fit ``width`` (else they are built and saved); all other rows get tables built afresh.
        A split index only records the wish: it builds no tables and scans flat."""
        self.mih = True
        self._mih_width = width
        if self.split:
            return self
        with kernels.thread_limit(self.threads):
            self._mih_plan(rebuild=True)
        return self

    @property
    def mih_nbytes(self) -> int:
        """Bytes of memory the MIH tables add, mapped ones included (0 when not built)."""
        return sum(s.cache["mih"][0].nbytes for s in self._segments if "mih" in s.cache)

    def _mih_plan(self, rebuild: bool = False
                  ) -> tuple[list[tuple[int, fmt.Segment, MultiIndexHash, np.ndarray]],
                             list[tuple[int, fmt.Segment]]]:
        """Tables for the segments that are to have them: the file's (:meth:`_file_tables`),
        and one merged segment of all the others once their rows without tables pass
        :data:`MIH_FLAT_SHARE` of the rows with (at once with ``rebuild``).

        Returns:
            ``(tabled, flat)`` in storage order: ``(start, segment, tables, ids of the table
            rows)`` and ``(start, segment)``, ``start`` the segment's first storage position.
        """
        for seg in self._segments:  # tables mostly of removed rows: cheaper rebuilt
            have = seg.cache.get("mih")
            if have is not None and 2 * have[0].n_live < have[0].n:
                seg.cache.pop("mih")
                seg.cache.pop("mih file", None)
        keep = int(bool(self._segments) and "mih file" in self._segments[0].cache
                   and self._file_tables(self._segments[0]))
        with_tables = sum(len(s) for s in self._segments if "mih" in s.cache)
        if len(self._segments) > keep and (
                rebuild or len(self) - with_tables > MIH_FLAT_SHARE * with_tables):
            self._merge_segments(keep)
            seg = self._segments[keep]
            seg.cache["mih"] = (MultiIndexHash(self._segment_words()[keep], self.n_bits,
                                               self._mih_width), np.asarray(seg.ids))
        tabled, flat, start = [], [], 0
        for seg in self._segments:
            have = seg.cache.get("mih")
            if have is None:
                flat.append((start, seg))
            else:
                tabled.append((start, seg, *have))
            start += len(seg)
        return tabled, flat

    def _file_tables(self, seg: fmt.Segment) -> bool:
        """Give the segment read from the index file its MIH tables: those saved beside the
        file (mapped), else built and saved there for the next start. Returns False, leaving
        the segment as any other, where the file's tables no longer apply (rows were removed
        since, and its tables are damaged or of another width)."""
        source: TablesFile = seg.cache["mih file"]
        width = self._mih_width
        have = seg.cache.get("mih")
        if have is not None and source.state != "damaged" \
                and (width is None or have[0].matches(self.n_bits, width)):
            return True
        seg.cache.pop("mih", None)
        if len(seg) != source.n:
            seg.cache.pop("mih file")
            return False
        tables = source.open(self.n_bits) if source.state == "unopened" else None
        if source.state == "damaged":  # a fresh record; segments derived before keep the old
            source = seg.cache["mih file"] = dataclasses.replace(source, state="unopened")
        if tables is None or (width is not None and not tables.matches(self.n_bits, width)):
            words = _segment_cached(seg, "words", lambda: self._words(seg.codes))
            tables = MultiIndexHash(words, self.n_bits, width)
            source.save(tables)
        seg.cache["mih"] = (tables, np.asarray(seg.ids))
        return True

    def _check_mih_file(self) -> bool:
        """Check the CRCs of the file's MIH tables if they were mapped without (see
        :meth:`ahcl.index.mih.TablesFile.check`); returns whether they are sound."""
        source = self._segments[0].cache.get("mih file") if self._segments else None
        return source is None or source.check()

    # ------------------------------------------------------------------ search
    def search(self, query_codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest neighbours.

        Args:
            query_codes: ``uint8 (nq, n_bits/8)`` packed, or ``(nq, n_bits)`` ±1.
            k: neighbours per query, an integer ``>= 1`` (the output is ``nq × k``, as in
                faiss: callers that take k from users clamp it to ``len(index)``, as the CLI,
                :meth:`ahcl.run.Run.search_codes` and the service do). A ``k`` so far above
                ``len(index)`` that its padding would take over 256 MiB is refused with a
                :class:`HammingIndexError` instead of allocated.

        Returns:
            ``D int32 (nq, k)`` distances and ``I int64 (nq, k)`` ids, each row ordered by
            ``(distance, id)``; missing neighbours are ``D = n_bits + 1``, ``I = -1``. A split
            index orders by ``(semantic distance, instance distance, id)`` and ``D`` is the
            semantic distance (padding ``semantic_bits + 1``); :meth:`search_split` also gives
            the instance distances.
        """
        d, _, i = self._search(query_codes, k)
        return d, i

    def search_split(self, query_codes: np.ndarray, k: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact k nearest neighbours by ``(semantic distance, instance distance, id)``.

        Returns:
            ``D_sem int32 (nq, k)``, ``D_inst int32 (nq, k)`` and ``I int64 (nq, k)``; missing
            neighbours are ``D_sem = semantic_bits + 1``, ``D_inst = instance_bits + 1``,
            ``I = -1``. A plain index gives :meth:`search`'s results with ``D_inst`` all 0.
        """
        ds, di, _, i = self._search_split(query_codes, k)
        return ds, di, i

    def _check_k(self, k: Any, nq: int = 1) -> int:
        """``k`` as an int; refuses a ``k`` whose padding alone (beyond the items indexed) would
        take more than :data:`MAX_PADDING_BYTES` of output, rather than allocate it."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise HammingIndexError(f"k must be an integer >= 1, got {k!r}", k=k)
        k = int(k)
        n = len(self)
        if k > n and max(nq, 1) * (k - n) * _BYTES_PER_RESULT > MAX_PADDING_BYTES:
            raise HammingIndexError(
                f"k = {k} asks for {k - n} padding entries per query beyond the {n} items "
                f"indexed ({max(nq, 1) * k * _BYTES_PER_RESULT / 2**30:.1f} GiB of results); "
                f"ask for at most {max(n, 1)} (min(k, len(index)) gives the same neighbours)", k=k)
        return k

    def _search_split(self, query_codes: np.ndarray, k: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`search_split` plus ``P int64 (nq, k)`` storage positions: ``(Ds, Di, P, I)``."""
        if not self.split:
            d, p, i = self._search(query_codes, k)
            return d, np.zeros_like(d), p, i
        q = self._queries(query_codes)
        k = self._check_k(k, q.shape[0])
        with kernels.thread_limit(self.threads, q.shape[0]):
            return self._flat_split(q, k)

    def _search(self, query_codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
        """:meth:`search` plus ``P int64 (nq, k)``: storage positions (``-1`` padding)."""
        if self.split:
            ds, _, p, i = self._search_split(query_codes, k)
            return ds, p, i
        q = self._queries(query_codes)
        nq = q.shape[0]
        k = self._check_k(k, nq)
        if not nq:
            return (np.empty((0, k), dtype=np.int32), np.empty((0, k), dtype=np.int64),
                    np.empty((0, k), dtype=np.int64))
        with kernels.thread_limit(self.threads, nq):
            if self.mih and len(self):
                return self._mih_search(q, k)
            return self._flat(q, k)

    def _mih_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_search` by the MIH tables of the segments that have them and a flat scan of
        the others (:meth:`_mih_plan`), each query's lists merged by ``(distance, id)``. Where
        a table gives up on a query (over its work budget) that segment alone is scanned flat
        for it."""
        with kernels.database_threads():
            tabled, flat = self._mih_plan()
        nq = q.shape[0]
        parts = []
        for start, seg, tables, ids in tabled:
            d = np.empty((nq, k), dtype=np.int32)
            p = np.empty((nq, k), dtype=np.int64)
            i = np.empty((nq, k), dtype=np.int64)
            done = tables.search(q, ids, k, d, p, i)
            real = (p >= 0) & done[:, None]
            p[real] = tables.live_positions(p[real]) + start
            missed = np.flatnonzero(~done)
            if missed.shape[0]:
                d[missed], p[missed], i[missed] = self._flat_over([(start, seg)], q[missed], k)
            parts.append((d, p, i))
        if flat:
            parts.append(self._flat_over(flat, q, k))
        return _merge_topk(k, parts)

    def _flat_over(self, segments: list[tuple[int, fmt.Segment]], q: np.ndarray, k: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_flat` over some segments only (``(start, segment)``), storage positions."""
        view = self.copy()
        view._segments = [seg for _, seg in segments]
        view._ids_col = view._labels_col = None
        view._cache = {}
        d, p, i = view._flat(q, k)
        starts = np.array([start for start, _ in segments], dtype=np.int64)
        local = np.cumsum([0] + [len(seg) for _, seg in segments])
        real = p >= 0
        part = np.searchsorted(local, p[real], side="right") - 1
        p[real] += starts[part] - local[part]
        return d, p, i

    def _flat(self, q: np.ndarray, k_out: int, seed: bool = True
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nq = q.shape[0]
        k = max(1, min(k_out, len(self)))  # buffers sized by what exists, then padded to k_out
        cap = max(2 * k, k + CAP_EXTRA)
        buf_d = np.empty((nq, cap), dtype=np.int32)
        buf_p = np.empty((nq, cap), dtype=np.int64)
        buf_n = np.zeros(nq, dtype=np.int64)
        buf_h = np.zeros((nq, self.n_bits + 2), dtype=np.int64)
        bound = np.zeros((nq, 2), dtype=np.int64)
        bound[:, 0] = self.n_bits + 1
        seeded = seed and self._seed_bounds(q, k, bound, lambda db, n_blocks, rank: (
            kernels.sample_bounds(q, db, n_blocks, rank, self.n_bits)))
        base = 0
        path, qmasks, seg_planes = self._kernel_inputs(q)
        qblock, tile = kernels.query_block(nq), kernels.tile_rows(self.words)
        ids = np.ascontiguousarray(self.ids)
        for seg, words, bits, lows in zip(self._segments, self._segment_words(), seg_planes,
                                          self._tile_min(tile)):
            kernels.topk_scan(path, tile, qblock, q, qmasks, words, bits, ids, lows, base, k,
                              self.n_bits, buf_d, buf_p, buf_n, buf_h, bound)
            base += len(seg)
        out_d = np.empty((nq, k), dtype=np.int32)
        out_p = np.empty((nq, k), dtype=np.int64)
        out_i = np.empty((nq, k), dtype=np.int64)
        selection.topk_finish(k, self.n_bits, buf_d, buf_p, buf_n, ids, bound, out_d, out_p,
                              out_i)
        missed = np.flatnonzero(buf_n < k) if seeded else np.zeros(0, dtype=np.int64)
        if missed.shape[0]:  # the sample's bound was below the k-th distance: scan again
            out_d[missed], out_p[missed], out_i[missed] = self._flat(q[missed], k, seed=False)
        return _pad(k_out, (out_d, self.n_bits + 1), (out_p, -1), (out_i, -1))

    def _tile_min(self, tile: int) -> list[np.ndarray]:
        """Per segment, the smallest id of each tile of ``tile`` rows (kept until a change)."""
        return [_segment_cached(s, f"tile_min {tile}", lambda s=s: kernels.tile_min_ids(
            np.asarray(s.ids), tile)) for s in self._segments]

    def _split_inputs(self, q: np.ndarray) -> tuple[Any, ...]:
        """What the split kernels read besides the rows (:mod:`ahcl.index.lexicographic`): the
        calling thread's kernel path, the word masks, the word spans, the key shift, and for
        ``avx2`` the queries' plane masks, each segment's split bit planes (the plain ones when
        ``semantic_bits`` is a multiple of 16, else a reordered copy kept beside them) and the
        plane geometry."""
        path, qmasks, seg_planes = self._kernel_inputs(q)
        if path == simd.AVX2:
            n, sem = self.n_bits, self.semantic_bits
            qmasks = planes.split_query_masks(qmasks, n, sem)
            seg_planes = [_segment_cached(s, "split planes", lambda p=p: planes.split_planes(
                p, n, sem)) for s, p in zip(self._segments, seg_planes)]
        return (path, lexicographic.split_masks(self.n_bits, self.semantic_bits),
                lexicographic.word_spans(self.semantic_bits),
                lexicographic.key_shift(self.n_bits, self.semantic_bits), qmasks, seg_planes,
                lexicographic.plane_geometry(self.n_bits, self.semantic_bits))

    def _flat_split(self, q: np.ndarray, k_out: int, seed: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Flat scan of a split index by ``(key, id)`` (:mod:`ahcl.index.lexicographic`),
        seeded for a large ``k`` as :meth:`_flat` is."""
        nq = q.shape[0]
        k = max(1, min(k_out, len(self)))
        cap = max(2 * k, k + CAP_EXTRA)
        buf_k = np.empty((nq, cap), dtype=np.int64)
        buf_p = np.empty((nq, cap), dtype=np.int64)
        buf_n = np.zeros(nq, dtype=np.int64)
        bound = np.zeros((nq, 2), dtype=np.int64)
        bound[:, 0] = lexicographic.max_key(self.n_bits, self.semantic_bits) + 1
        path, masks, spans, shift, qmasks, seg_planes, geom = self._split_inputs(q)
        seeded = seed and self._seed_bounds(q, k, bound, lambda db, n_blocks, rank: (
            lexicographic.sample_bounds(q, masks, shift, db, n_blocks, rank)))
        qblock, tile = kernels.query_block(nq), kernels.tile_rows(self.words)
        ids = np.ascontiguousarray(self.ids)
        base = 0
        for seg, words, bits, lows in zip(self._segments, self._segment_words(), seg_planes,
                                          self._tile_min(tile)):
            lexicographic.topk_scan(path, tile, qblock, q, masks, spans, shift, qmasks, bits, geom,
                                    words, ids, lows, base, k, buf_k, buf_p, buf_n, bound)
            base += len(seg)
        out_s = np.empty((nq, k), dtype=np.int32)
        out_i = np.empty((nq, k), dtype=np.int32)
        out_p = np.empty((nq, k), dtype=np.int64)
        out_id = np.empty((nq, k), dtype=np.int64)
        lexicographic.topk_finish(k, shift, self.semantic_bits, self.instance_bits, buf_k, buf_p,
                                  buf_n, ids, bound, out_s, out_i, out_p, out_id)
        missed = np.flatnonzero(buf_n < k) if seeded else np.zeros(0, dtype=np.int64)
        if missed.shape[0]:  # the sample's bound was below the k-th key: scan again
            out_s[missed], out_i[missed], out_p[missed], out_id[missed] = self._flat_split(
                q[missed], k, seed=False)
        return _pad(k_out, (out_s, self.semantic_bits + 1), (out_i, self.instance_bits + 1),
                    (out_p, -1), (out_id, -1))

    def _seed_bounds(self, q: np.ndarray, k: int, bound: np.ndarray, sample: Any) -> bool:
        """Start a large-k search at a bound read from a sample of the largest segment.

        Without it the running bound starts at ``n_bits + 1`` and takes ~``k ln(n / k)``
        candidates to settle. The sample holds :data:`SEED_ROWS` rows within the k-th distance
        on average; its ``(SEED_RANK * SEED_ROWS + 2)``-th smallest distance lets about
        ``SEED_RANK * k`` rows enter. It is too low (fewer than ``k`` rows within it) for about
        one query in 100; :meth:`_flat` scans those again without a seed. Returns whether it
        seeded. ``sample(rows, n_blocks, rank)``: the kernel that reads the bound (distances, or
        keys for a split index) from the flat rows of a segment.
        """
        n = len(self)
        if k < 256 or k * k * max(0.0, np.log(n / k) - 2.0) < 2.0 * n:
            return False  # the sample would cost more than the candidates it saves
        seg = max(range(len(self._segments)), key=lambda i: len(self._segments[i]))
        rows = len(self._segments[seg])
        n_blocks = min(rows // (8 * kernels.GROUP), -(-SEED_ROWS * n // (k * kernels.GROUP)))
        if n_blocks < 8:
            return False
        rank = int(SEED_RANK * (kernels.GROUP * n_blocks * k / n)) + 2
        bound[:, 0] = sample(self._segment_words()[seg], n_blocks, rank)
        bound[:, 1] = kernels.NO_ID
        return True

    def range_search(self, query_codes: np.ndarray, radius: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All codes within ``radius`` (inclusive), faiss style.

        Returns:
            ``lims int64 (nq + 1,)``, ``D int32 (lims[-1],)``, ``I int64 (lims[-1],)``: query
            ``i``'s results are ``D[lims[i]:lims[i+1]]``, ordered by ``(distance, id)``. A split
            index takes ``radius`` on the semantic distance, orders each query's results by
            ``(semantic distance, instance distance, id)`` and gives the semantic distance as
            ``D`` (:meth:`range_search_split` also gives the instance distances).
        """
        lims, d, _, i = self._range_search(query_codes, radius)
        return lims, d, i

    def range_search_split(self, query_codes: np.ndarray, radius: int
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """All codes within semantic distance ``radius`` (inclusive).

        Returns:
            ``lims int64 (nq + 1,)``, ``D_sem int32``, ``D_inst int32`` and ``I int64``, each
            ``(lims[-1],)``, each query's slice ordered by ``(semantic distance, instance
            distance, id)``. A plain index gives :meth:`range_search`'s with ``D_inst`` all 0.
        """
        lims, ds, di, _, i = self._range_search_split(query_codes, radius)
        return lims, ds, di, i

    def _range_search(self, query_codes: np.ndarray, radius: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`range_search` plus storage positions: ``(lims, D, P, I)``."""
        if self.split:
            lims, ds, _, p, i = self._range_search_split(query_codes, radius)
            return lims, ds, p, i
        return self._range_plain(query_codes, radius)

    def _range_plain(self, query_codes: np.ndarray, radius: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        q = self._queries(query_codes)
        radius = int(radius)
        with kernels.thread_limit(self.threads, q.shape[0]):
            path, qmasks, seg_planes = self._kernel_inputs(q)
            qblock, tile = kernels.query_block(q.shape[0]), kernels.tile_rows(self.words)

            def scan(rows: np.ndarray, offsets: np.ndarray, limits: np.ndarray,
                     dist: np.ndarray, pos: np.ndarray) -> np.ndarray:
                base = 0
                for seg, w, bits in zip(self._segments, self._segment_words(), seg_planes):
                    kernels.range_fill(path, tile, qblock, q[rows], qmasks[rows], w, bits,
                                       self.n_bits, radius, base, offsets, limits, dist, pos)
                    base += len(seg)
                return offsets

            lims, out_d, out_p = self._range_rows(q.shape[0], radius, scan, np.int32)
            ids = self.ids[out_p] if out_p.shape[0] else np.empty(0, dtype=np.int64)
            kernels.sort_ranges(lims, self.n_bits, out_d, out_p, ids)
        return lims, out_d, out_p, ids

    def _range_search_split(self, query_codes: np.ndarray, radius: int
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                       np.ndarray]:
        """:meth:`range_search_split` plus storage positions: ``(lims, Ds, Di, P, I)``."""
        if not self.split:
            lims, d, p, i = self._range_plain(query_codes, radius)
            return lims, d, np.zeros_like(d), p, i
        q = self._queries(query_codes)
        radius = min(int(radius), self.semantic_bits)  # every row is within semantic_bits
        with kernels.thread_limit(self.threads, q.shape[0]):
            path, masks, spans, shift, qmasks, seg_planes, geom = self._split_inputs(q)
            qblock, tile = kernels.query_block(q.shape[0]), kernels.tile_rows(self.words)

            def scan(rows: np.ndarray, offsets: np.ndarray, limits: np.ndarray,
                     keys: np.ndarray, pos: np.ndarray) -> np.ndarray:
                base = 0
                for seg, w, bits in zip(self._segments, self._segment_words(), seg_planes):
                    lexicographic.range_fill(path, tile, qblock, q[rows], masks, spans, shift,
                                             qmasks[rows], bits, geom, w, radius, base, offsets,
                                             limits, keys, pos)
                    base += len(seg)
                return offsets

            lims, keys, pos = self._range_rows(q.shape[0], radius, scan, np.int64)
            ids = self.ids[pos] if pos.shape[0] else np.empty(0, dtype=np.int64)
            ds = np.empty(keys.shape[0], dtype=np.int32)
            di = np.empty(keys.shape[0], dtype=np.int32)
            lexicographic.sort_ranges(lims, shift, self.semantic_bits, keys, pos, ids, ds, di)
        return lims, ds, di, pos, ids

    @staticmethod
    def _range_rows(nq: int, radius: int, scan: Any, dtype: Any
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every query's rows within ``radius``, unsorted: ``(lims, values, positions)``.

        ``scan(rows, offsets, limits, values, positions)`` runs a ``range_fill`` kernel over
        every segment for the queries ``rows`` and returns ``offsets``. One scan with room for
        a few results per query; the queries with more go again, into their exact room.
        """
        per_query = max(1, min(RANGE_ROOM, RANGE_ROOM_TOTAL // max(nq, 1)))
        room = np.arange(nq + 1, dtype=np.int64) * per_query
        values = np.empty(room[-1], dtype=dtype)
        pos = np.empty(room[-1], dtype=np.int64)
        every = np.arange(nq)
        found = np.zeros(nq, dtype=np.int64)
        if radius >= 0:
            found = scan(every, room[:-1].copy(), room[1:], values, pos) - room[:-1]
        lims = np.zeros(nq + 1, dtype=np.int64)
        np.cumsum(found, out=lims[1:])
        kept = np.minimum(found, per_query)
        within = np.arange(kept.sum()) - np.repeat(np.cumsum(kept) - kept, kept)
        out_v = np.empty(lims[-1], dtype=dtype)
        out_p = np.empty(lims[-1], dtype=np.int64)
        src, dst = np.repeat(room[:-1], kept) + within, np.repeat(lims[:-1], kept) + within
        out_v[dst], out_p[dst] = values[src], pos[src]
        over = np.flatnonzero(found > per_query)
        if over.shape[0]:
            scan(over, lims[over], lims[over + 1], out_v, out_p)
        return lims, out_v, out_p

    # ------------------------------------------------------------------ lookups
    def _positions_of(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Storage positions of ``ids`` (raises on unknown ids)."""
        want = np.asarray(ids, dtype=np.int64).reshape(-1)
        all_ids = self.ids

        def sorter() -> np.ndarray | None:
            ordered = all_ids.shape[0] < 2 or bool(np.all(all_ids[1:] > all_ids[:-1]))
            return None if ordered else np.argsort(all_ids, kind="stable")

        order = self._cached("sorter", lambda: (sorter(),))[0]
        keys = all_ids if order is None else all_ids[order]
        at = np.searchsorted(keys, want)
        at = np.minimum(at, max(keys.shape[0] - 1, 0))
        if keys.shape[0] == 0 or np.any(keys[at] != want):
            missing = want if keys.shape[0] == 0 else want[keys[at] != want]
            raise HammingIndexError(f"id {int(missing[0])} is not in the index", id=int(missing[0]))
        return at if order is None else order[at]

    def _locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts = np.cumsum([0] + [len(s) for s in self._segments])
        seg = np.searchsorted(starts, positions, side="right") - 1
        return seg, positions - starts[seg]

    def labels_of(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """``int64`` labels of ``ids`` (``-1`` unknown label); raises on ids not indexed."""
        return self.labels[self._positions_of(ids)]

    def codes_of(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Stored packed codes of ``ids``: ``uint8 (len(ids), n_bits/8)``; raises on unknown ids."""
        seg, local = self._locate(self._positions_of(ids))
        out = np.empty((len(seg), self.n_bits // 8), dtype=np.uint8)
        for row, (s, i) in enumerate(zip(seg, local)):
            out[row] = self._segments[int(s)].codes[int(i)]
        return out

    def meta_of(self, ids: Sequence[int] | np.ndarray) -> list[dict | None]:
        """Metadata dicts of ``ids`` (``None`` where none was given); raises on unknown ids."""
        return self._meta_at(self._positions_of(ids))

    def meta_with_key(self, key: str) -> tuple[np.ndarray, list[dict]]:
        """The ids (in storage order) and metadata of the items whose metadata has ``key``.
        A file's metadata is decoded only for the rows whose bytes mention the key
        (:meth:`ahcl.index.format.Segment.meta_with_key`), so a key few items have is found
        without a JSON read of every item's metadata."""
        ids, metas = [], []
        for seg in self._segments:
            rows, found = seg.meta_with_key(key)
            ids.append(np.asarray(seg.ids)[rows])
            metas += found
        return _concat(ids, np.int64), metas

    def _meta_at(self, positions: np.ndarray) -> list[dict | None]:
        seg, local = self._locate(np.asarray(positions, dtype=np.int64))
        return [self._segments[s].meta_at(int(i)) for s, i in zip(seg, local)]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, *, mih: bool | None = None) -> str:
        """Write the index to one file, atomically (format: :mod:`ahcl.index.format`), and
        remove the write-ahead log of an earlier file at ``path`` (this file holds what the
        index holds). Returns the file's token (:func:`ahcl.index.format.header_token`).

        Args:
            mih: also build multi-index hashing tables of the file and save them beside it
                (``X.index.mih``, atomically), so the next start maps them instead of building
                them; ``None``: when the index uses them (``mih=True``) or an earlier file at
                ``path`` had them. Otherwise an earlier file's tables are removed. A split or
                empty index has none.
        """
        token = fmt.write_index(path, self.n_bits, self._next_id, self._segments,
                                semantic_bits=self.semantic_bits)
        wal.discard(path)
        if mih is None:
            mih = self.mih or fmt.tables_path(path).exists()
        if mih and not self.split and len(self):
            _, seg = fmt.read_index(path, mmap=True, verify=False)  # the rows as saved, in order
            with kernels.thread_limit(self.threads):
                tables = MultiIndexHash(self._words(seg.codes), self.n_bits, self._mih_width)
            write_tables(path, token, tables)
        else:
            with contextlib.suppress(FileNotFoundError):
                fmt.tables_path(path).unlink()
        return token

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, verify: bool | None = None, *,
             mih: bool = False, threads: int | None = None) -> "HammingIndex":
        """Open an index file.

        Args:
            path: file written by :meth:`save`.
            mmap: memory-map the arrays (opens in O(1), pages load on use) instead of reading.
            verify: check section checksums; ``None``: unless memory-mapping a file over
                :data:`ahcl.index.format.VERIFY_LIMIT` (sizes are always checked).
            mih, threads: as in the constructor (``semantic_bits`` comes from the file; files of
                format version 1 hold plain indexes). With ``mih``, the first search maps the
                tables saved beside the file (``X.index.mih``; their CRCs checked as ``mmap`` and
                ``verify`` say for the file), or builds them and saves them there.

        Raises:
            IndexFileError: missing, truncated, corrupted or of another format version.
        """
        return cls._open(path, mmap=mmap, verify=verify, mih=mih, threads=threads)[0]

    @classmethod
    def _open(cls, path: str | os.PathLike, mmap: bool = True, verify: bool | None = None, *,
              mih: bool = False, threads: int | None = None
              ) -> tuple["HammingIndex", dict, wal.LogRead]:
        """:meth:`load`, plus the file's header and what its log held: the file and the log
        are read as one consistent state (read again if the file was replaced meanwhile)."""
        for _ in range(8):
            before = _file_identity(path)
            header, segment = fmt.read_index(path, mmap=mmap, verify=verify)
            log = wal.read_log(path, header["token"], header["n_bits"], header["semantic_bits"])
            if _file_identity(path) == before:
                break
        index = cls(header["n_bits"], semantic_bits=header["semantic_bits"], mih=mih,
                    threads=threads)
        index._next_id = int(header["next_id"])
        if len(segment):
            segment.cache["mih file"] = TablesFile(Path(path), header["token"], len(segment),
                                                   mmap, verify)
            index._segments.append(segment)
        index._replay(log.records, path)
        return index, header, log

    def _replay(self, records: list[wal.Record], path: str | os.PathLike) -> None:
        """Apply logged changes in order; consecutive additions go in as one."""
        pending: list[wal.Record] = []

        def flush() -> None:
            if not pending:
                return
            ids = np.concatenate([r.ids for r in pending])
            meta = None
            if any(r.meta is not None for r in pending):
                meta = [m for r in pending for m in (r.meta or [None] * len(r.ids))]
            try:
                self._check_new_ids(ids, ids.shape[0])
            except HammingIndexError as exc:
                raise IndexFileError(f"{wal.log_path(path)}: the log adds an id twice ({exc}); "
                                     "restore the index", path=str(path)) from None
            self._append(np.concatenate([r.codes for r in pending]), ids,
                         np.concatenate([r.labels for r in pending]), meta)
            pending.clear()

        for record in records:
            if record.kind == "add":
                pending.append(record)
            else:
                flush()
                self.remove(record.ids)
        flush()


def _merge_topk(k: int, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
                ) -> tuple[np.ndarray, ...]:
    """The ``k`` best of several exact top-k lists ``(D, P, I)`` (each ``(nq, k)``) by
    ``(distance, id)``: exact, as each part holds every row of its own top-k (padding, at
    ``n_bits + 1``, sorts last)."""
    if len(parts) == 1:
        return parts[0]
    d, p, i = (np.concatenate(column, axis=1) for column in zip(*parts))
    order = np.lexsort((i, d), axis=-1)[:, :k]
    return tuple(np.take_along_axis(x, order, axis=1) for x in (d, p, i))


def _pad(k_out: int, *columns: tuple[np.ndarray, int]) -> tuple[np.ndarray, ...]:
    """Each ``(array (nq, k), fill)`` widened to ``k_out`` columns with ``fill``."""
    out = []
    for arr, fill in columns:
        if arr.shape[1] < k_out:
            arr = np.pad(arr, ((0, 0), (0, k_out - arr.shape[1])), constant_values=fill)
        out.append(arr)
    return tuple(out)


def _file_identity(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """(inode, mtime ns, size) of a file, ``None`` when it does not exist: saves are renames,
    so every save by any process changes it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _segment_cached(seg: fmt.Segment, key: str, make: Any) -> Any:
    """``seg.cache[key]``, made on first use (segments never change, so neither does it)."""
    hit = seg.cache.get(key)
    if hit is None:
        with kernels.database_threads():
            hit = seg.cache[key] = make()
    return hit


def _max_id(seg: fmt.Segment) -> int:
    return int(_segment_cached(seg, "max id", lambda: np.max(seg.ids) if len(seg) else -1))


def _concat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    if not parts:
        return np.empty(0, dtype=dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def search_results(index: HammingIndex, query_codes: np.ndarray, k: int,
                   classes: list[str] | None = None) -> list[list[Hit]]:
    """:meth:`HammingIndex.search` as :class:`~ahcl.index.hits.Hit` records (the CLI, the
    service and :meth:`ahcl.run.Run.search` all show these).

    Args:
        classes: names of labels ``0..len-1`` (``Hit.class_name``), if known.

    Returns:
        Per query, up to ``k`` hits in (distance, id) order (padding dropped); a split index's
        are in (semantic distance, instance distance, id) order, with ``Hit.distance`` the
        semantic distance and ``Hit.instance_distance`` the instance distance (``None`` for a
        plain index).
    """
    d, di, p, i = index._search_split(query_codes, k)
    labels = index.labels
    out = []
    for row_d, row_di, row_p, row_i in zip(d, di, p, i):
        valid = row_p >= 0
        out.append(hits_from_rows(row_i[valid], row_d[valid], labels[row_p[valid]],
                                  index._meta_at(row_p[valid]), classes,
                                  instance_distances=row_di[valid] if index.split else None))
    return out
