"""Multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012): exact k-NN in sublinear time.

Each code is cut into ``m`` disjoint substrings (each inside one 64-bit word), and each substring
indexes a table: a counting-sorted permutation of the rows, bucket offsets, and a copy of the codes
in bucket order, so a probed bucket is read sequentially instead of one cache miss per candidate
(5x faster on 10M codes, paid for in memory). If two codes are
within distance ``d`` then some substring is within ``floor(d / m)``: probing substring radii
``rho = 0, 1, ...`` in table order, once tables ``0..i`` have been probed at radius ``rho`` every
code within ``m * rho + i`` has been seen. The search stops as soon as the ``k``-th best candidate
is within that guaranteed radius, so every code at the k-th distance is a candidate and ties are
broken by id exactly as in the flat scan: the results are identical.

A probed bucket is read 64 rows at a time, and only the rows within the running bound (a mask
from the flat scan's vector popcount, :func:`~ahcl.index.intrinsics.vp_mask64`) are looked at
further. A duplicate (a row met again through another table) is recognised from its substring
distances, without a visited set: a row was met earlier iff some substring is closer than
``rho``, or an earlier table's substring is at exactly ``rho``.

A query whose work (buckets probed + candidates) passes ``budget`` (a fraction of ``n``) stops and
returns ``False`` so the caller scans it flat instead: MIH never costs much more than a scan, even
on data it does not suit.

Removed rows stay in the tables, listed in ``dead`` (sorted table rows, checked by binary search
on each candidate within the bound), so a removal costs no rebuild; positions are renumbered to
the live rows on the way out (:meth:`MultiIndexHash.live_positions`). Tables made from arrays read
back from a file (:meth:`MultiIndexHash.from_arrays`, :mod:`ahcl.index.format`) may be
unverified: the kernel clamps bucket bounds and row numbers, so damaged tables give wrong
answers until checked, never out-of-bounds reads.

Tables of an index file are kept beside it (:class:`TablesFile`, ``X.index.mih``, laid out by
:mod:`ahcl.index.format`), so a start maps them instead of building them.

Memory added: ``m`` tables of ``n (4 + n_bits / 8)`` bytes (int32 row numbers and the code copy)
plus ``4 * 2**s`` bytes of bucket offsets each (``s`` = substring width, about ``log2 n``, at most
24): for 10M 64-bit codes, ``m = 3``, ``s = 22``, ~410 MB beside 80 MB of codes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit, prange

from ahcl.errors import AhclError, IndexFileError
from ahcl.index import format as fmt
from ahcl.index.intrinsics import cttz64, vp_mask64
from ahcl.index.intrinsics import popcount64 as _popcount64
from ahcl.index.kernels import GROUP, row_distance
from ahcl.index.lock import writing
from ahcl.index.selection import compact, finish_one

log = logging.getLogger(__name__)


def plan_substrings(n_bits: int, n: int, width: int | None = None) -> np.ndarray:
    """Substring layout ``int64 (m, 3)`` rows ``(word, shift, width)``, none crossing a word.

    ``width`` defaults to ``round(log2 n)`` clamped to ``[8, 24]`` (Norouzi et al.'s choice).
    """
    if width is None:
        width = int(min(24, max(8, round(math.log2(max(n, 2))))))
    rows = []
    for word in range(0, n_bits, 64):
        bits = min(64, n_bits - word)
        parts = max(1, math.ceil(bits / width))
        shift = 0
        for p in range(parts):
            w = bits // parts + (1 if p < bits % parts else 0)
            rows.append((word // 64, shift, w))
            shift += w
    return np.array(rows, dtype=np.int64)


@njit(cache=True, nogil=True, parallel=True)
def _build(db, w, subs):
    """Per table: ``perm int32 (n,)`` rows sorted by substring key, ``offsets int32 (2**s + 1,)``
    and ``codes uint64 (n * w,)``, the rows in that order."""
    n = db.shape[0] // w
    m = subs.shape[0]
    perms = np.empty((m, n), dtype=np.int32)
    codes = np.empty((m, n * w), dtype=np.uint64)
    max_width = subs[:, 2].max()
    offsets = np.zeros((m, (1 << max_width) + 1), dtype=np.int32)
    for t in prange(m):
        word, shift, width = subs[t, 0], subs[t, 1], subs[t, 2]
        mask = np.uint64((1 << width) - 1)
        off = offsets[t]
        for j in range(n):
            key = (db[j * w + word] >> np.uint64(shift)) & mask
            off[key + 1] += 1
        for b in range(1 << width):
            off[b + 1] += off[b]
        cursor = off[:(1 << width)].copy()
        for j in range(n):
            key = (db[j * w + word] >> np.uint64(shift)) & mask
            e = cursor[key]
            perms[t, e] = j
            for c in range(w):
                codes[t, e * w + c] = db[j * w + c]
            cursor[key] += 1
    return perms, offsets, codes


@njit(cache=True, nogil=True, inline="always")
def _bucket_mask(q, rows, w, n, lo, hi, t):
    """Mask of the bucket rows ``[lo, hi)`` (at most 64) within ``t`` of ``q``: 64-bit codes by
    :func:`~ahcl.index.intrinsics.vp_mask64` (the vector popcount of the flat scan; the rows
    after ``hi`` it reads are masked off), others one row at a time."""
    if w == 1 and lo + GROUP <= n:
        m = vp_mask64(rows, 0, lo, q, 1, t)
        if hi - lo < GROUP:
            m &= (np.uint64(1) << np.uint64(hi - lo)) - np.uint64(1)
        return m
    m = np.uint64(0)
    for e in range(lo, hi):
        m |= np.uint64(row_distance(q, rows, w, e) <= t) << np.uint64(e - lo)
    return m


@njit(cache=True, nogil=True, inline="always")
def _is_dead(dead, j):
    """Whether table row ``j`` is in the sorted ``dead`` rows."""
    if dead.shape[0] == 0:
        return False
    r = np.searchsorted(dead, j)
    return r < dead.shape[0] and dead[r] == j


@njit(cache=True, nogil=True)
def _search_one(q, w, ids, dead, subs, perms, offsets, codes, k, n_bits, budget, out_d, out_p,
                out_i):
    """Exact top-k of one query; returns False (outputs untouched) when over budget."""
    m = subs.shape[0]
    n = perms.shape[1]
    qkeys = np.empty(m, dtype=np.int64)
    for t in range(m):
        qkeys[t] = np.int64((q[subs[t, 0]] >> np.uint64(subs[t, 1]))
                            & np.uint64((1 << subs[t, 2]) - 1))
    cap = max(2 * k, k + 64)
    bd = np.empty(cap, dtype=np.int32)
    bp = np.empty(cap, dtype=np.int64)
    bound = np.empty(2, dtype=np.int64)
    bound[0] = n_bits + 1
    bound[1] = 0
    hist = np.zeros(n_bits + 2, dtype=np.int64)  # distances of the rows in the buffer
    cnt = 0
    work = 0
    sub_d = np.empty(m, dtype=np.int64)
    min_width = subs[:, 2].min()
    for rho in range(min_width + 1):
        for t in range(m):
            width = subs[t, 2]
            full = np.int64(1) << width
            mask = (np.int64(1) << rho) - 1  # Gosper's hack: every width-bit mask with rho ones
            while mask < full:
                key = qkeys[t] ^ mask
                lo = min(max(np.int64(offsets[t, key]), 0), n)
                hi = min(max(np.int64(offsets[t, key + 1]), lo), n)
                work += 1 + hi - lo
                rows = codes[t]
                for g in range(lo, hi, GROUP):
                    hits = _bucket_mask(q, rows, w, n, g, min(hi, g + GROUP), bound[0])
                    while hits != 0:
                        e = g + np.int64(cttz64(hits))
                        hits &= hits - np.uint64(1)
                        dup = False
                        for u in range(m):
                            x = (q[subs[u, 0]] ^ rows[e * w + subs[u, 0]]) >> np.uint64(subs[u, 1])
                            sub_d[u] = _popcount64(x & np.uint64((1 << subs[u, 2]) - 1))
                            if sub_d[u] < rho or (u < t and sub_d[u] == rho):
                                dup = True
                        j = np.int64(perms[t, e])
                        if dup or j < 0 or j >= n or _is_dead(dead, j):
                            continue
                        d = row_distance(q, rows, w, e)
                        if d < bound[0] or (d == bound[0] and ids[j] < bound[1]):
                            if cnt == cap:
                                cnt = compact(k, n_bits, cnt, bd, bp, ids, bound, hist)
                            bd[cnt] = d
                            bp[cnt] = j
                            hist[d] += 1
                            cnt += 1
                if work > budget:
                    return False
                if rho == 0:
                    break
                c = mask & -mask
                r = mask + c
                mask = (((r ^ mask) >> 2) // c) | r
            # every row within m * rho + t is a candidate now: stop once k of them are
            guaranteed = m * rho + t
            within = 0
            for dd in range(min(guaranteed, n_bits) + 1):
                within += hist[dd]
            if within >= k or guaranteed >= n_bits:
                finish_one(k, n_bits, cnt, bd, bp, ids, bound, out_d, out_p, out_i)
                return True
    finish_one(k, n_bits, cnt, bd, bp, ids, bound, out_d, out_p, out_i)
    return True


@njit(cache=True, nogil=True, parallel=True)
def mih_search(queries, ids, dead, subs, perms, offsets, codes, k, n_bits, budget, out_d, out_p,
               out_i):
    """:func:`_search_one` for every query; returns ``bool (nq,)``, False where over budget."""
    nq, w = queries.shape
    done = np.zeros(nq, dtype=np.bool_)
    for qi in prange(nq):
        done[qi] = _search_one(queries[qi], w, ids, dead, subs, perms, offsets, codes, k, n_bits,
                               budget, out_d[qi], out_p[qi], out_i[qi])
    return done


def check_substrings(subs: np.ndarray, n_bits: int) -> None:
    """Raise ``ValueError`` unless ``subs`` (``int64 (m, 3)``) covers each of the ``n_bits`` bits
    once, each substring inside one word and at most 24 bits wide (what the kernels assume)."""
    subs = np.asarray(subs)
    words = (n_bits + 63) // 64
    if subs.ndim != 2 or subs.shape[1] != 3 or not subs.shape[0]:
        raise ValueError(f"substring layout of shape {subs.shape}, expected (m, 3)")
    covered = np.zeros(words * 64, dtype=np.int64)
    for word, shift, width in subs.tolist():
        if not (0 <= word < words and 0 < width <= 24 and 0 <= shift and shift + width <= 64):
            raise ValueError(f"substring (word {word}, shift {shift}, width {width}) does not fit "
                             f"{n_bits}-bit codes")
        covered[64 * word + shift:64 * word + shift + width] += 1
    if covered[:n_bits].tolist() != [1] * n_bits or covered[n_bits:].any():
        raise ValueError(f"substrings do not cover each of the {n_bits} bits once")


class MultiIndexHash:
    """MIH tables over one contiguous block of codes.

    Args:
        db: ``uint64 (n * W,)`` flat rows (copied into the tables in bucket order).
        n_bits: code length.
        width: substring width (default about ``log2 n``).

    Attributes:
        subs, perms, offsets, codes: the tables (see :func:`_build`); :data:`ARRAYS` names the
            three arrays, as :mod:`ahcl.index.format` stores them.
        dead: ``int64 (r,)`` sorted rows of the tables removed since (see the module docstring).
    """

    ARRAYS = ("perms", "offsets", "codes")

    def __init__(self, db: np.ndarray, n_bits: int, width: int | None = None) -> None:
        self.n_bits = n_bits
        self.words = (n_bits + 63) // 64
        self.n = db.shape[0] // self.words
        self.subs = plan_substrings(n_bits, self.n, width)
        self.perms, self.offsets, self.codes = _build(db, self.words, self.subs)
        self.dead = np.zeros(0, dtype=np.int64)

    @classmethod
    def from_arrays(cls, n_bits: int, n: int, subs: np.ndarray, perms: np.ndarray,
                    offsets: np.ndarray, codes: np.ndarray) -> "MultiIndexHash":
        """Tables from arrays read back (maybe memory-mapped), their shapes checked.

        Raises:
            ValueError: the arrays do not make tables of ``n`` rows of ``n_bits`` bits.
        """
        subs = np.ascontiguousarray(subs, dtype=np.int64)
        check_substrings(subs, n_bits)
        m, words = subs.shape[0], (n_bits + 63) // 64
        want = {"perms": ((m, n), np.int32), "codes": ((m, n * words), np.uint64),
                "offsets": ((m, (1 << int(subs[:, 2].max())) + 1), np.int32)}
        for name, arr in (("perms", perms), ("offsets", offsets), ("codes", codes)):
            if arr.shape != want[name][0] or arr.dtype != want[name][1]:
                raise ValueError(f"MIH {name} of shape {arr.shape} ({arr.dtype}), expected "
                                 f"{want[name][0]} ({np.dtype(want[name][1])})")
        self = object.__new__(cls)
        self.n_bits, self.words, self.n, self.subs = n_bits, words, n, subs
        self.perms, self.offsets, self.codes = perms, offsets, codes
        self.dead = np.zeros(0, dtype=np.int64)
        return self

    @property
    def nbytes(self) -> int:
        """Memory the tables add, in bytes (mapped bytes, for tables read from a file)."""
        return int(self.perms.nbytes + self.offsets.nbytes + self.codes.nbytes)

    def matches(self, n_bits: int, width: int | None) -> bool:
        """Whether these are the tables ``MultiIndexHash(db, n_bits, width)`` would build."""
        planned = plan_substrings(n_bits, self.n, width)
        return self.n_bits == n_bits and np.array_equal(planned, self.subs)

    def without(self, live: np.ndarray) -> "MultiIndexHash":
        """These tables with the live rows at positions ``live`` (``int64``, numbered as
        :meth:`live_positions` numbers them) removed too: the arrays are shared."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.dead = np.union1d(self.dead, self.table_rows(np.asarray(live, dtype=np.int64)))
        return other

    def table_rows(self, live: np.ndarray) -> np.ndarray:
        """Table rows of live positions (the ``p``-th live row is ``p`` plus the dead rows
        before it)."""
        return live + np.searchsorted(self.dead - np.arange(self.dead.shape[0]), live,
                                      side="right")

    def live_positions(self, rows: np.ndarray) -> np.ndarray:
        """Live positions (rows numbered without the dead ones) of live table ``rows``."""
        return rows - np.searchsorted(self.dead, rows)

    @property
    def n_live(self) -> int:
        """Rows of the tables not removed."""
        return self.n - int(self.dead.shape[0])

    def search(self, queries: np.ndarray, ids: np.ndarray, k: int, out_d: np.ndarray,
               out_p: np.ndarray, out_i: np.ndarray, budget_fraction: float = 0.25) -> np.ndarray:
        """Exact top-k into ``out_* (nq, k)``; returns ``bool (nq,)``: False rows need a flat scan.

        Args:
            queries: ``uint64 (nq, W)``.
            ids: ``int64 (n,)`` ids of the table rows (removed rows included).
            k: neighbours per query.
            out_d, out_p, out_i: ``int32 / int64 / int64 (nq, k)`` outputs: distances, table
                rows (:meth:`live_positions` renumbers them; ``-1`` padding) and ids.
            budget_fraction: give up on a query after this fraction of ``n`` in work.
        """
        budget = int(budget_fraction * self.n) + 256
        return mih_search(queries, ids, self.dead, self.subs, self.perms, self.offsets,
                          self.codes, k, self.n_bits, budget, out_d, out_p, out_i)


def write_tables(index_path: str | Path, token: str, tables: MultiIndexHash) -> None:
    """Save ``tables`` (of every row of the index file ``token``, none removed) beside it."""
    if tables.dead.shape[0]:
        raise ValueError("tables with removed rows describe no index file")
    fmt.write_tables(index_path, token, tables.n_bits, tables.subs,
                     {name: getattr(tables, name) for name in MultiIndexHash.ARRAYS})


@dataclass
class TablesFile:
    """The MIH tables file of one index file (:func:`ahcl.index.format.tables_path`), as the
    segment read from that file knows it. Segments derived from that one by removals and every
    snapshot share the object, so damage found once is known to all of them.

    Attributes:
        path: the index file; ``token`` its header token, ``n`` its rows.
        mmap, verify: how to open the tables (as the index file was opened).
        state: ``"unopened"``; ``"unverified"`` (mapped without their CRCs: over
            :data:`ahcl.index.format.VERIFY_LIMIT`, as the index file itself); ``"ok"``
            (checked, or built here); ``"damaged"`` (:meth:`check` failed: rebuild them).
    """

    path: Path
    token: str
    n: int
    mmap: bool = True
    verify: bool | None = None
    state: str = "unopened"
    _opened: tuple | None = field(default=None, repr=False)  # header, arrays: still to check

    def open(self, n_bits: int) -> MultiIndexHash | None:
        """The tables in the file (``O(1)`` when mapped without their CRCs), or ``None``: there
        are none, they belong to another file (stale), or they are damaged (one warning line:
        the caller rebuilds them, never uses them)."""
        try:
            found = fmt.read_tables(self.path, self.token, mmap=self.mmap, verify=self.verify)
            if found is None:
                return None
            header, arrays = found
            if (header.get("n_bits"), header.get("n")) != (n_bits, self.n):
                raise ValueError(f"tables of {header.get('n')} {header.get('n_bits')}-bit codes "
                                 f"for {self.n} {n_bits}-bit codes")
            tables = MultiIndexHash.from_arrays(n_bits, self.n, np.asarray(header["subs"]),
                                                **arrays)
        except IndexFileError as exc:
            log.warning("%s", exc)
            return None
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("%s: MIH tables that do not fit the index (%s); they are rebuilt from "
                        "the index", fmt.tables_path(self.path), exc)
            return None
        self.state = "ok" if header["verified"] else "unverified"
        self._opened = None if header["verified"] else (header, arrays)
        return tables

    def save(self, tables: MultiIndexHash) -> None:
        """Keep freshly built tables for the next start, when that is possible now: under the
        writer lock if it is free and the index file is still this one (a writer replacing it
        writes its own). A read-only folder or a busy writer only costs the next start a
        build."""
        try:
            with writing(self.path, timeout=0):
                if fmt.read_header(self.path)["token"] == self.token:
                    write_tables(self.path, self.token, tables)
        except (OSError, AhclError) as exc:
            log.debug("%s: MIH tables not saved (%s)", self.path, exc)
        self.state, self._opened = "ok", None

    def check(self) -> bool:
        """Check the CRCs of tables opened without them, once. Damaged tables are reported (one
        warning line) and marked, so the next search drops and rebuilds them. Returns whether
        the tables are sound (or were never opened)."""
        opened = self._opened
        if self.state == "unverified" and opened is not None:
            try:
                fmt.verify_tables(self.path, *opened)
                self.state = "ok"
            except IndexFileError as exc:
                log.warning("%s", exc)
                self.state = "damaged"
            self._opened = None
        return self.state != "damaged"
