"""An index on disk that grows: the file, its write-ahead log, one writer at a time, snapshots.

:class:`IndexStore` is what every writer of an index file uses (``ahcl index add``/``compact``,
the service): an addition or removal is one log record (:mod:`ahcl.index.wal`), appended and
fsynced under the writer lock (:mod:`ahcl.index.lock`) before it is acknowledged, so its cost
grows with the batch, not the archive. The index file itself is only rewritten by
:meth:`IndexStore.compact` (and by ``ahcl index build``), atomically.

Guarantees:

- **Durable when acknowledged.** ``add``/``remove`` return after the record's fsync; a crash
  (even ``kill -9`` or a power cut after the fsync) keeps it. A record cut short by a crash was
  never acknowledged and is dropped at the next read (its bytes are cut off by the next writer).
- **One writer at a time**, across threads and processes; each writer first catches up with what
  others appended, so ids are never handed out twice and nothing is lost.
- **Snapshots.** :attr:`IndexStore.index` is an immutable snapshot: a change builds the next one
  from a copy (:meth:`ahcl.index.HammingIndex.copy`, O(segments)) and publishes it when its
  record is durable, so a search on the current snapshot never waits for an encode, an fsync or
  a compaction.
- **Integrity.** The file's sections are checked by CRC when opened (a memory-mapped file over
  :data:`ahcl.index.format.VERIFY_LIMIT` is checked before it is first rewritten, so flipped
  bytes are reported, never re-saved with fresh CRCs); every log record is CRC-checked when read;
  :meth:`IndexStore.verify` checks everything. Temporary files of crashed saves are removed when
  a writer next takes the lock, or at open when no writer holds it.
- **MIH tables** (``mih=True``) of the file are kept beside it (``X.index.mih``, see
  :mod:`ahcl.index.mih`): :meth:`IndexStore.compact` writes the new file's, additions and
  removals never rebuild them. They are derived data: stale ones (of an earlier file) are ignored
  and replaced, damaged ones are reported in one warning line and rebuilt; large mapped ones are
  checked by :meth:`IndexStore.check_file` as the file is (and dropped if damaged).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ahcl.errors import IndexFileError
from ahcl.index import format as fmt
from ahcl.index import wal
from ahcl.index.index import HammingIndex, _file_identity
from ahcl.index.lock import IndexLockedError, writing

#: A log past this many bytes (and past half the index file) asks for a compaction.
COMPACT_MIN_BYTES = 64 * 2**20


class IndexStore:
    """An index file and its log, kept current (thread-safe).

    Args:
        path: the index file (written by ``ahcl index build``, :meth:`HammingIndex.save` or
            :meth:`create`).
        mmap, verify, mih, threads: as in :meth:`HammingIndex.load`.

    Raises:
        IndexFileError: the file or its log is missing, damaged or of another version.
    """

    def __init__(self, path: str | os.PathLike, *, mmap: bool = True, verify: bool | None = None,
                 mih: bool = False, threads: int | None = None) -> None:
        self.path = Path(path)
        # plain strings for the two stats of every read (is_current): no Path arithmetic there
        self._stat_paths = (os.fspath(self.path), os.fspath(wal.log_path(self.path)))
        self._options = {"mmap": mmap, "mih": mih, "threads": threads}
        self._lock = threading.RLock()  # this process's writers (and refreshes)
        self._holds_file = False  # whether the thread holding _lock holds the file's lock too
        self._check_lock = threading.Lock()
        self._damage: Exception | None = None
        #: Bumped whenever catching up brought in changes made by another process.
        self.external_changes = 0
        #: Called as ``on_external(before, after, records)`` whenever catching up brings in
        #: another process's changes: the snapshots before and after, and the log records that
        #: led from one to the other (``None`` when the file was rewritten and reopened). Runs
        #: under this store's lock, on the thread that caught up.
        self.on_external: Callable[[HammingIndex, HammingIndex, list[wal.Record] | None],
                                   None] | None = None
        with contextlib.suppress(IndexLockedError):  # no writer now: clean crashed saves
            with writing(self.path, timeout=0):
                pass
        self._open(verify)

    @classmethod
    def create(cls, path: str | os.PathLike, index: HammingIndex, **options: Any
               ) -> "IndexStore":
        """Save ``index`` as a new file at ``path`` (replacing any, under the writer lock; its
        log goes too) and open it."""
        with writing(path):
            index.save(path)
        return cls(path, verify=False, **options)

    def _open(self, verify: bool | None) -> None:
        index, header, log = HammingIndex._open(self.path, verify=verify, **self._options)
        self._index = index
        self._header = header
        self._file = _file_identity(self.path)
        self._log_end = 0 if log.stale else log.end
        self._log_size = log.size  # the log's size when last read or written: see is_current
        self._log_records = len(log.records)
        self._verified = bool(verify) or not self._options["mmap"] \
            or header["file_size"] <= fmt.VERIFY_LIMIT
        self._damage = None

    # ------------------------------------------------------------------ reading
    @property
    def index(self) -> HammingIndex:
        """The current snapshot. Never changed in place: keep the object for a consistent view
        (later changes publish a new one)."""
        return self._index

    def __len__(self) -> int:
        return len(self._index)

    def is_current(self) -> bool:
        """Whether no other process changed the index since this one last looked: two stats
        (the file's identity, the log's size), no read. A writer of another process appends
        and fsyncs its record before it acknowledges it, so once it has answered, this is
        False until :meth:`refresh` (read-your-writes across processes, for microseconds)."""
        index_file, log_file = self._stat_paths
        try:
            size = os.stat(log_file).st_size
        except FileNotFoundError:
            size = 0
        return size == self._log_size and _file_identity(index_file) == self._file

    def refresh(self) -> bool:
        """Catch up with what other processes wrote (new log records: read and applied in
        O(their size); a rewritten file: reopened). Returns whether anything changed."""
        with self._lock:
            return self._catch_up()

    def _catch_up(self) -> bool:
        changed = self._catch_up_once()
        self.external_changes += changed
        return changed

    def _catch_up_once(self) -> bool:
        before = self._index
        if _file_identity(self.path) != self._file:
            self._open(verify=None)
            self._tell(before, None)
            return True
        log = wal.read_log(self.path, self._header["token"], self._header["n_bits"],
                           self._header["semantic_bits"], start=self._log_end)
        self._log_size = log.size
        if log.stale:
            if self._log_end:  # our log is gone but the file is the same: start over from it
                self._open(verify=None)
                self._tell(before, None)
                return True
            return False
        if not log.records:
            return False
        index = self._index.copy()
        index._replay(log.records, self.path)
        self._index, self._log_end = index, log.end
        self._log_records += len(log.records)
        self._tell(before, log.records)
        return True

    def _tell(self, before: HammingIndex, records: list[wal.Record] | None) -> None:
        if self.on_external is not None:
            self.on_external(before, self._index, records)

    # ------------------------------------------------------------------ writing
    def add(self, codes: np.ndarray, ids: Sequence[int] | np.ndarray | None = None,
            labels: Sequence[int] | np.ndarray | None = None,
            meta: Sequence[dict | None] | None = None) -> np.ndarray:
        """:meth:`HammingIndex.add`, durable when it returns (one log record).

        Raises:
            HammingIndexError: as :meth:`HammingIndex.add` (nothing is written).
            IndexLockedError: another writer held the index past the lock timeout.
            DiskFullError: no space for the record (nothing is kept).
        """
        meta = None if meta is None else list(meta)
        with self._writing():
            index = self._index.copy()
            packed = index._check_codes(codes)
            new_ids = index.add(packed, ids=ids, labels=labels, meta=meta)
            if new_ids.shape[0]:
                lab = np.full(new_ids.shape[0], -1, dtype=np.int64) if labels is None \
                    else np.asarray(labels, dtype=np.int64).reshape(-1)
                self._commit(index, wal.encode_add(packed, new_ids, lab, meta))
            return new_ids

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """:meth:`HammingIndex.remove`, durable when it returns; unknown ids are ignored (a
        call that removes nothing writes nothing). Returns how many went."""
        with self._writing():
            want = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
            index = self._index.copy()
            removed = index.remove(want)
            if removed:  # replaying the record ignores its unknown ids just the same
                self._commit(index, wal.encode_remove(want))
            return removed

    @contextlib.contextmanager
    def holding(self) -> Any:
        """Hold the writer locks (this process's, then the file's), caught up with every other
        writer: no change by anyone else until the block ends (this thread's :meth:`add`,
        :meth:`remove` and :meth:`compact` still work in it). Yields the current snapshot."""
        with self._file_lock():
            self._catch_up()
            yield self._index

    @contextlib.contextmanager
    def _file_lock(self) -> Any:
        """This process's writer lock, then the file's, re-entrant for the thread holding them
        (a flock is not: a second one in the same process would wait for the first), so that
        :meth:`add`, :meth:`remove` and :meth:`compact` also work inside :meth:`holding`."""
        with self._lock:
            if self._holds_file:
                yield
                return
            with writing(self.path):
                self._holds_file = True
                try:
                    yield
                finally:
                    self._holds_file = False

    @contextlib.contextmanager
    def _writing(self) -> Any:
        """This process's writer lock, then the file's; caught up with other writers, and with
        a log for the current file to append to."""
        self.check_file()
        with self._file_lock():
            self._catch_up()
            self.check_file()  # the file may have been replaced meanwhile
            if not self._log_end:
                wal.start_log(self.path, self._header["token"], self._header["n_bits"],
                              self._header["semantic_bits"])
                self._log_end, self._log_records = wal.HEADER_SIZE, 0
                self._log_size = wal.HEADER_SIZE
            yield

    def _commit(self, index: HammingIndex, record: bytes) -> None:
        """Make ``record`` durable, then publish ``index`` (the state it leads to)."""
        self._log_end = self._log_size = wal.append(self.path, self._log_end, record)
        self._log_records += 1
        self._index = index

    def compact(self) -> dict[str, int]:
        """Rewrite the file to hold everything (the log is emptied), atomically.

        A file that was opened without checking its CRCs is checked first, so damage is
        reported, never re-saved. Returns ``{"items", "records", "bytes"}``: what it holds and
        how many log records and bytes it folded in.

        Raises:
            IndexFileError: the file is damaged (nothing is rewritten).
        """
        with self._file_lock():
            self._catch_up()
            self.check_file()
            folded = {"items": len(self._index), "records": self._log_records,
                      "bytes": max(self._log_end - wal.HEADER_SIZE, 0)}
            self._index.save(self.path)
            self._open(verify=False)  # just written from memory and the checked file
            self._verified = True
            return folded

    def check_file(self) -> None:
        """Check the file's CRCs once, if it was opened without (a large memory-mapped file):
        the first write calls it, or a background thread may call it right after opening. A
        damaged file refuses every write from then on, so the damage is reported, never
        folded into a rewrite.

        Raises:
            IndexFileError: the file is damaged.
        """
        with self._check_lock:
            if self._damage is not None:
                raise self._damage
            self._index._check_mih_file()  # damaged tables are dropped, never refuse writes
            if self._verified:
                return
            file = self._file
            try:
                fmt.read_index(self.path, mmap=True, verify=True)
            except IndexFileError as exc:
                if _file_identity(self.path) == file:
                    self._damage = exc
                raise
            self._verified = self._verified or _file_identity(self.path) == file

    def needs_compaction(self) -> bool:
        """Whether the log has grown past :data:`COMPACT_MIN_BYTES` and half the file."""
        return self._log_end > max(COMPACT_MIN_BYTES, self._header["file_size"] // 2)

    # ------------------------------------------------------------------ checks
    def verify(self) -> dict[str, Any]:
        """Check every CRC of the file and every record of its log.

        Returns:
            ``{"items", "log_records", "log_bytes", "torn_bytes", "stale_log", "mih_tables"}``:
            ``torn_bytes`` counts an interrupted (never acknowledged) last record, dropped at
            the next write; ``stale_log`` a log left from an earlier file, ignored and removed
            at the next write; ``mih_tables`` is ``"none"``, ``"ok"``, ``"stale"`` (of an
            earlier file) or ``"damaged"`` (the MIH tables file: derived data, rebuilt at the
            next MIH search in either of the last two cases, so not an error).

        Raises:
            IndexFileError: damage anywhere in the file or its log.
        """
        with self._lock:
            index, header, log = HammingIndex._open(self.path, mmap=True, verify=True)
            return {"items": len(index),
                    "log_records": len(log.records),
                    "log_bytes": 0 if log.stale else log.end,
                    "torn_bytes": log.size - log.end if log.torn else 0,
                    "stale_log": bool(log.stale and log.size),
                    "mih_tables": _tables_state(self.path, header["token"])}

    def info(self) -> dict[str, Any]:
        """``{"items", "file_bytes", "log_records", "log_bytes"}`` of the current state."""
        return {"items": len(self._index), "file_bytes": self._header["file_size"],
                "log_records": self._log_records, "log_bytes": self._log_end}


def _tables_state(path: Path, token: str) -> str:
    """``"none"``, ``"ok"``, ``"stale"`` or ``"damaged"``: the MIH tables file beside ``path``,
    every CRC checked."""
    if not fmt.tables_path(path).exists():
        return "none"
    try:
        return "stale" if fmt.read_tables(path, token, mmap=True, verify=True) is None else "ok"
    except IndexFileError:
        return "damaged"
