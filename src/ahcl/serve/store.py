"""The archive a server searches: an index file with its write-ahead log
(:class:`~ahcl.index.store.IndexStore`), the run that encodes queries, and a folder of uploaded
images (checked by :mod:`ahcl.serve.uploads`). Searches read immutable snapshots; writes are
serialised and durable when acknowledged.

Layout on disk::

    RUN/archive.index        the index (written on the first change; until then the run's
                             database codes are indexed in memory)
    RUN/archive.index.wal    additions and removals since the file was written (folded into
                             it in the background once it grows past half the file)
    RUN/archive.images/      uploaded images, named by the sha256 of their bytes

or, serving an index file ``X.index`` built by ``ahcl index build``, ``X.index`` itself and
``X.images/`` beside it (the run that encodes queries is then given separately).

Every item carries meta ``{"path": absolute path}``; uploads add ``"sha256"``. Item ids are the
index's int64 ids and are never reused, so a thumbnail cached by id never goes stale.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from ahcl._io import atomic_write_bytes, fsync_folder
from ahcl.data.images import ImageReadError, load_rgb
from ahcl.data.scenes import SceneError, meta_bands, read_window
from ahcl.errors import AhclError, IndexFileError
from ahcl.index import HammingIndex, Hit, search_results
from ahcl.index import format as index_format
from ahcl.index.hits import hits_from_rows
from ahcl.index import wal
from ahcl.index.lock import writing
from ahcl.index.store import IndexStore
from ahcl.run import Run, load_run
from ahcl.serve.batching import Batcher
from ahcl.serve.forms import parse_add_form
from ahcl.serve.uploads import Upload, decode_uploads
from ahcl.serve.writer import WriterProcess

#: How old a file of the images folder that no item names must be before
#: :meth:`Archive.sweep_orphans` removes it: an addition writes its image before its log
#: record, so a younger one may be an addition in flight in another process.
ORPHAN_GRACE_S = 3600.0
#: An uploaded image's file name: its bytes' sha256, then its suffix.
_UPLOAD_NAME = re.compile(r"[0-9a-f]{64}(\.[A-Za-z0-9]{1,8})?")
#: The temporary file of an interrupted write of one (:func:`ahcl._io.atomic_write_bytes`).
_UPLOAD_TEMP = re.compile(r"\.[0-9a-f]{64}(\.[A-Za-z0-9]{1,8})?\.[0-9a-f]{12}\.tmp")
#: Name of the index file written inside a run folder on the first change.
ARCHIVE_INDEX = "archive.index"


class UnknownItemError(AhclError, KeyError):
    """No archive item has this id, or its image is not available.

    Attributes:
        item_id: the id asked for: an int, or the text from a URL that is not one.
    """

    def __init__(self, item_id: int | str, message: str | None = None) -> None:
        # Text from a URL is shown as given (at most 40 characters), never quoted half-way.
        shown = item_id[:40] if isinstance(item_id, str) else str(item_id)  # np.int64 too
        super().__init__(message or f"no archive item has id {shown}", item_id=item_id)


#: Most images one batched forward pass takes (:meth:`Archive.encode`), and one group commit.
ENCODE_BATCH = 64
COMMIT_BATCH = 256


def _split(rows: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    return np.split(rows, np.cumsum(counts)[:-1]) if counts else []


class Archive:
    """A searchable, writable image archive (thread-safe).

    Searches read the current snapshot of the index and take no lock: they never wait for an
    encode, a write's fsync or a compaction. Writes are serialised (in this process and, through
    the index's file lock, with every other writer) and are one write-ahead-log record each
    (:class:`ahcl.index.store.IndexStore`), so their cost grows with the batch, not the archive.
    Changes other processes make (``ahcl index add``, another worker of the same server) are
    seen by the next write, and by the next read after they are acknowledged unless that read
    overlaps a write of this process (:meth:`_current`), so several server processes can serve
    one archive.

    Args:
        run: the run whose network encodes queries and uploads.
        index: the index of archive codes (meta ``{"path"}`` per item): an
            :class:`~ahcl.index.store.IndexStore` of ``index_path``, or an in-memory
            :class:`~ahcl.index.HammingIndex` written to ``index_path`` on the first change.
        index_path: the index file.
        images_dir: where uploaded images are stored.
        thumb_size: longest side of thumbnails, pixels.
        thumb_cache: thumbnails kept in memory (least recently used dropped first).
    """

    def __init__(self, run: Run, index: IndexStore | HammingIndex, index_path: Path,
                 images_dir: Path, *, thumb_size: int = 160, thumb_cache: int = 4096) -> None:
        self._store = index if isinstance(index, IndexStore) else None
        self._memory = None if self._store is not None else index
        run.check_index(self.index, index_path)
        self.run = run
        self.index_path = Path(index_path)
        self.images_dir = Path(images_dir)
        self.thumb_size = int(thumb_size)
        self.revision = 0  # bumped on every change this archive makes or sees
        self._write_lock = threading.Lock()  # this process's writers, one at a time
        self._encode_lock = threading.Lock()  # one forward pass at a time: no CPU oversubscription
        self._encode_batch = Batcher(self._encode_step, self._encode_lock, len, ENCODE_BATCH)
        self._commit_batch = Batcher(self._commit_step, self._write_lock, lambda w: len(w[0]),
                                     COMMIT_BATCH)
        self._thumbs: OrderedDict[int, bytes] = OrderedDict()
        self._thumb_cap = int(thumb_cache)
        self._thumb_lock = threading.Lock()
        self._uploads: dict[str, set[int]] | None = None
        self._compacting: threading.Thread | None = None
        self._writer: WriterProcess | None = None
        self.run.encoder()  # build now: the first query should not pay for it
        self._watch()
        if self._store is not None:  # a large file opened without its CRCs: check it meanwhile
            threading.Thread(target=self._check_quietly, daemon=True,
                             name="ahcl-index-check").start()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, source: str | Path, run: str | Path | None = None, *,
             run_options: dict[str, Any] | None = None, writer: bool = False,
             **kwargs: Any) -> "Archive":
        """Open a run folder or an index file (which needs ``run``) as an archive.

        ``run_options`` go to :func:`ahcl.run.load_run` (``device``, ``precision``, ...). With
        ``writer``, :meth:`add_files` runs in a :class:`~ahcl.serve.writer.WriterProcess`
        (started here) at a lower CPU priority, so that searches keep their latency while
        others add; call :meth:`close` when done.

        Raises:
            AhclError: missing run for an index, unreadable files, or mismatched code lengths.
        """
        source = Path(source)
        run_options = run_options or {}
        if source.is_dir():
            the_run = load_run(run if run is not None else source, **run_options)
            index_path = source / ARCHIVE_INDEX
            if index_path.is_file():
                index: IndexStore | HammingIndex = IndexStore(index_path)
            else:
                index = the_run.new_index()
                index.add(the_run.db_codes, labels=the_run.db_labels,
                          meta=[{"path": p} for p in the_run.db_paths])
            archive = cls(the_run, index, index_path, source / "archive.images", **kwargs)
        else:
            if not source.is_file():
                raise AhclError(f"{source} is neither a run folder nor an index file")
            if run is None:
                raise AhclError(f"serving the index {source} needs --run RUN, the run that "
                                "encodes queries (or serve the run folder itself)")
            archive = cls(load_run(run, **run_options), IndexStore(source), source,
                          source.with_suffix(".images"), **kwargs)
        if writer:
            import torch

            archive._writer = WriterProcess(cls.open, source, run, run_options,
                                            torch_threads=torch.get_num_threads())
        return archive

    # ------------------------------------------------------------------ reading
    @property
    def index(self) -> HammingIndex:
        """The current snapshot of the index (replaced, never changed, by writes)."""
        return self._store.index if self._store is not None else self._memory

    @property
    def classes(self) -> list[str]:
        return self.run.classes

    def __len__(self) -> int:
        return len(self._current())

    def _current(self) -> HammingIndex:
        """The snapshot to read, caught up with every change another process (another server
        worker, ``ahcl index add``) acknowledged before this call: a stat of the index file
        and of its log per read, and a read of the new log bytes when they grew.

        A read never waits for a write: while this process is writing (its write catches up
        with the others' records first, under the file lock), the read takes the snapshot
        before that write, which may lack what another process acknowledged during it."""
        if self._store is None:
            if self.index_path.is_file() and self._write_lock.acquire(blocking=False):
                try:  # another process made the file: read it from now on
                    self._adopt_file()
                finally:
                    self._write_lock.release()
        elif not self._store.is_current() and self._write_lock.acquire(blocking=False):
            try:
                self._store.refresh()
            finally:
                self._write_lock.release()
        return self.index

    def _adopt_file(self) -> None:
        """Serve the index file another process wrote since this in-memory archive opened
        (the caller holds the write lock)."""
        if self._store is None and self.index_path.is_file():
            store = IndexStore(self.index_path, verify=True)
            self.run.check_index(store.index, self.index_path)
            self._store, self._memory = store, None
            self._uploads = None  # the file's items, not the ones it was built from
            self._watch()
            self.revision += 1

    def class_name(self, label: int) -> str | None:
        return self.classes[label] if 0 <= label < len(self.classes) else None

    def item(self, item_id: int) -> dict[str, Any]:
        """``{"id", "label", "class", "uploaded"}`` of one item (no file path).

        Raises:
            UnknownItemError: no such id.
        """
        label, meta = self._lookup(self._current(), item_id)
        return self._record(item_id, label, meta)

    @staticmethod
    def _lookup(index: HammingIndex, item_id: int) -> tuple[int, dict]:
        try:
            label = int(index.labels_of([item_id])[0])
            meta = index.meta_of([item_id])[0] or {}
        except (ValueError, OverflowError):
            raise UnknownItemError(item_id) from None
        return label, meta

    def _record(self, item_id: int, label: int, meta: dict | None) -> dict[str, Any]:
        return {"id": int(item_id), "label": int(label), "class": self.class_name(int(label)),
                "uploaded": "sha256" in (meta or {})}

    def items(self, label: int | None = None, offset: int = 0, limit: int = 60
              ) -> tuple[int, list[dict[str, Any]]]:
        """Items in id order, optionally of one label: ``(total matching, page of records)``."""
        index = self._current()
        ids, labels = np.asarray(index.ids), np.asarray(index.labels)
        if ids.shape[0] > 1 and not np.all(ids[1:] > ids[:-1]):  # usually already in order
            order = np.argsort(ids, kind="stable")
            ids, labels = ids[order], labels[order]
        if label is not None:
            keep = labels == label
            ids, labels = ids[keep], labels[keep]
        page = slice(offset, offset + limit)
        return int(ids.shape[0]), [{"id": int(i), "label": int(lab),
                                    "class": self.class_name(int(lab))}
                                   for i, lab in zip(ids[page], labels[page])]

    def class_counts(self) -> tuple[list[int], int]:
        """Items per class (in class order) and the number of unlabelled items."""
        labels = np.asarray(self._current().labels)
        counts = np.bincount(labels[labels >= 0], minlength=len(self.classes))
        return [int(c) for c in counts[:len(self.classes)]], int(np.sum(labels < 0))

    def code_of(self, item_id: int) -> np.ndarray:
        """The stored packed code of one item: ``uint8 (1, n_bits/8)``.

        Raises:
            UnknownItemError: no such id.
        """
        try:
            return self._current().codes_of([item_id])
        except (ValueError, OverflowError):
            raise UnknownItemError(item_id) from None

    # ------------------------------------------------------------------ search
    def encode(self, images: list[Image.Image]) -> np.ndarray:
        """Network codes of RGB images: packed ``uint8 (n, n_bits/8)``.

        Each image is turned into the network's input (resize, crop, normalise) on the
        calling thread, so the serialised step holds only the forward pass. Concurrent calls
        are batched (:mod:`ahcl.serve.batching`): requests that arrive while a forward pass runs
        are encoded together in the next one (up to :data:`ENCODE_BATCH` images); a lone
        request is encoded at once.
        """
        return self._encode_batch(self.run.image_inputs(list(images)))

    def _encode_step(self, works: list[list[Any]]) -> list[np.ndarray]:
        codes = self.run.encode_inputs([x for inputs in works for x in inputs])
        return _split(codes, [len(inputs) for inputs in works])

    def search(self, code: np.ndarray, k: int, radius: int | None = None,
               exclude: int | None = None) -> list[Hit]:
        """Hits for one packed query code ``uint8 (1, n_bits/8)``, in (distance, id) order —
        (semantic distance, instance distance, id) for a run with instance bits.

        Args:
            k: at most this many hits.
            radius: only hits within this Hamming distance (inclusive; of the semantic part
                for a run with instance bits).
            exclude: an id to leave out (the query item itself).

        Returns:
            up to ``k`` hits with their classes named (the service shows
            ``hit.to_dict(public=True)``: no server paths).
        """
        want = k + (exclude is not None)
        index = self._current()  # one snapshot for the whole search, no lock
        if radius is None:
            hits = search_results(index, code, want, classes=self.classes)[0]
        else:
            _, dist, inst, ids = index.range_search_split(code, radius)
            ids, dist, inst = ids[:want], dist[:want], inst[:want]
            labels = index.labels_of(ids) if ids.shape[0] else ids
            hits = hits_from_rows(ids, dist, labels, classes=self.classes,
                                  instance_distances=inst if index.split else None)
        return [h for h in hits if h.id != exclude][:k]

    # ------------------------------------------------------------------ writing
    def add(self, uploads: list[Upload], label: int | None = None) -> list[dict[str, Any]]:
        """Store uploaded images and index them; all or nothing, durable when it returns.

        With a ``label`` the codes come from the run's database-code step for that class
        (:meth:`ahcl.run.Run.codes_for_labelled`), else from the network (label ``-1``).

        Returns:
            the new items' records.
        """
        n = len(uploads)
        paths = [self.images_dir / f"{u.sha256}{u.suffix}" for u in uploads]
        if label is None:
            labels = np.full(n, -1, dtype=np.int64)
            codes = self.encode([u.image for u in uploads])
        else:
            labels = np.full(n, int(label), dtype=np.int64)
            with self._encode_lock:
                codes = self.run.codes_for_labelled([str(p) for p in paths], labels,
                                                    images=[u.image for u in uploads])
        # The images are written (and fsynced) here, concurrently with other requests; the
        # folder's fsync and the log record are shared by the batch (group commit).
        created: list[Path] = []
        made_folder = not self.images_dir.exists()
        try:
            for u, path in zip(uploads, paths):
                if not path.exists():  # content-addressed: the same bytes are stored once
                    atomic_write_bytes(path, u.data, sync_folder=False)
                    created.append(path)
            ids = self._commit_batch((uploads, paths, codes, labels, bool(created)))
        except BaseException:
            for path in created:
                path.unlink(missing_ok=True)
            if made_folder:
                with contextlib.suppress(OSError):
                    self.images_dir.rmdir()
            raise
        for u, path in zip(uploads, paths):  # reused, but removed meanwhile (another process's
            if path not in created and not path.exists():  # deletion, or an orphans' sweep)
                atomic_write_bytes(path, u.data)
        self._compact_if_needed()
        return [self._record(int(i), int(lab), {"sha256": ""}) for i, lab in zip(ids, labels)]

    def add_files(self, datas: list[bytes], max_pixels: int, label: int | None = None
                  ) -> list[dict[str, Any]]:
        """The service's addition: check and decode uploaded files
        (:func:`ahcl.serve.uploads.decode_uploads`), then :meth:`add` them; in the writer
        process if the archive has one (:meth:`open` with ``writer``), after which this
        process catches up, so that a read after the answer finds the items.

        Raises:
            UploadError: a file is refused.
            WriterError: the writer process failed or stopped during the addition.
        """
        if self._writer is None:
            return self.add(decode_uploads(datas, max_pixels), label)
        items = self._writer.add(datas, max_pixels, label)
        self._current()
        return items

    @property
    def has_writer(self) -> bool:
        """Whether additions run in a writer process (:meth:`open` with ``writer``)."""
        return self._writer is not None

    def add_form(self, content_type: str, body: bytes, max_pixels: int
                 ) -> tuple[list[dict[str, Any]], int]:
        """The service's addition from the raw body of a ``POST /api/items``
        (:func:`ahcl.serve.forms.parse_add_form`), parsed in the writer process if the archive
        has one: the new items' records and the archive's size after them.

        Raises:
            UploadError: the form or a file is refused.
            WriterError: the writer process failed or stopped during the addition.
        """
        if self._writer is None:
            datas, label = parse_add_form(content_type, body, self.classes)
            items = self.add_files(datas, max_pixels, label)
        else:
            items = self._writer.add_form(content_type, body, max_pixels)
            self._current()
        return items, len(self)

    def close(self) -> None:
        """Stop the writer process (after its additions in flight) and wait for a compaction
        in progress; the archive can still be read."""
        if self._writer is not None:
            self._writer.close()
        if self._compacting is not None:
            self._compacting.join()

    def _commit_step(self, works: list[tuple]) -> list[np.ndarray]:
        """Index the images of several additions in one log record: one fsync of the images'
        folder and one of the log for the whole batch (group commit); all or nothing."""
        uploads = [u for w in works for u in w[0]]
        paths = [p for w in works for p in w[1]]
        with self._writable() as store:
            if any(w[4] for w in works):  # new image files: make their renames durable
                fsync_folder(self.images_dir)
            ids = store.add(np.concatenate([w[2] for w in works]),
                            labels=np.concatenate([w[3] for w in works]),
                            meta=[{"path": str(p), "sha256": u.sha256}
                                  for u, p in zip(uploads, paths)])
            self.revision += 1
            if self._uploads is not None:  # else built from the index at the first deletion
                for i, u in zip(ids, uploads):
                    self._uploads.setdefault(u.sha256, set()).add(int(i))
        return _split(ids, [len(w[0]) for w in works])

    def delete(self, item_id: int) -> None:
        """Remove an item from the index (durable when it returns) and its uploaded file if no
        other item shares it.

        Raises:
            UnknownItemError: no such id.
        """
        # The file's lock is held until the image is gone: another process's addition of the
        # same bytes either came first (caught up with: an owner) or commits after, and then
        # finds the image missing and writes it again.
        with self._write_lock, self._writable() as store, store.holding() as index:
            _, meta = self._lookup(index, item_id)
            store.remove([item_id])
            self.revision += 1
            sha = meta.get("sha256")
            if sha:
                owners = self._upload_ids().get(sha, set())
                owners.discard(int(item_id))
                if not owners:
                    self._upload_ids().pop(sha, None)
                    Path(meta["path"]).unlink(missing_ok=True)
        with self._thumb_lock:
            self._thumbs.pop(int(item_id), None)
        self._compact_if_needed()

    @contextlib.contextmanager
    def _writable(self) -> Iterator[IndexStore]:
        """The index file's store for one change (caller holds the write lock). A run folder's
        archive writes its file at the first change (or opens the one another process wrote
        meanwhile); if that change fails, the file it wrote goes again."""
        if self._store is not None:
            yield self._store
            return
        created = False
        with writing(self.index_path):
            if not self.index_path.is_file():
                self._memory.save(self.index_path)
                created = True
        store = IndexStore(self.index_path, verify=True)
        try:
            self.run.check_index(store.index, self.index_path)
            yield store
        except BaseException:
            if created:
                with writing(self.index_path):
                    self.index_path.unlink(missing_ok=True)
                    wal.discard(self.index_path)
            raise
        self._store, self._memory = store, None
        self._uploads = None  # the file may be another process's (made meanwhile)
        self._watch()

    def _watch(self) -> None:
        if self._store is not None:
            self._store.on_external = self._external_change

    def _external_change(self, before: HammingIndex, after: HammingIndex,
                         records: list[wal.Record] | None) -> None:
        """What another process's changes (the store caught up with them) mean here: a new
        :attr:`revision`, and the table of uploads by content (if built) kept up to date in
        O(their size) from the log records. A rewritten file (compacted, or replaced by a new
        build) may hold anything under the same ids: the table is then dropped and built again
        at the next deletion (:meth:`_upload_ids`). Cached thumbnails stay: ids are never
        reused, and a thumbnail is only served for an id the current snapshot holds."""
        self.revision += 1
        table = self._uploads
        if table is None:
            return
        if records is None:
            self._uploads = None
            return
        added: dict[int, str] = {}  # sha256 of the ids these records add
        for record in records:
            if record.kind == "add":
                for i, meta in zip(record.ids, record.meta or [None] * len(record.ids)):
                    if meta and meta.get("sha256"):
                        added[int(i)] = meta["sha256"]
                        table.setdefault(meta["sha256"], set()).add(int(i))
                continue
            for i in (int(i) for i in record.ids):
                sha = added.pop(i, None)
                if sha is None:
                    try:
                        meta = before.meta_of([i])[0] or {}
                    except (ValueError, OverflowError):  # unknown: the record ignores it too
                        continue
                    sha = meta.get("sha256")
                owners = table.get(sha) if sha else None
                if owners is not None:
                    owners.discard(i)
                    if not owners:
                        del table[sha]

    def _check_quietly(self) -> None:
        with contextlib.suppress(IndexFileError):  # reported (and refused) at the next write
            self._store.check_file()

    def _compact_if_needed(self) -> None:
        """Fold a grown log into the file in a background thread (searches go on; writes wait)."""
        store = self._store
        if store is None or not store.needs_compaction() or \
                (self._compacting is not None and self._compacting.is_alive()):
            return

        def compact() -> None:
            with self._write_lock, contextlib.suppress(AhclError):
                store.compact()
            with contextlib.suppress(AhclError, OSError):
                self.sweep_orphans()

        self._compacting = threading.Thread(target=compact, daemon=True,
                                            name="ahcl-index-compact")
        self._compacting.start()

    def sweep_orphans(self, older_than_s: float = ORPHAN_GRACE_S) -> list[Path]:
        """Remove what no item names in the images folder, older than ``older_than_s``: image
        files left by an addition whose process died between writing its image and its log
        record, and temporary files of interrupted image writes. Under the index's writer lock,
        caught up with every other process first; files younger than the grace may belong to
        an addition in flight (an image is written before its record). Returns what it removed
        (nothing for an archive that has no index file yet).
        """
        if self._store is None or not self.images_dir.is_dir():
            return []
        removed = []
        with self._write_lock, self._store.holding():
            owned = self._upload_ids()
            cutoff = time.time() - older_than_s
            for path in self.images_dir.iterdir():
                name = path.name
                if not _UPLOAD_TEMP.fullmatch(name) and (not _UPLOAD_NAME.fullmatch(name)
                                                         or name[:64] in owned):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if path.is_file() and path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed.append(path)
        return removed

    def _upload_ids(self) -> dict[str, set[int]]:
        """sha256 → ids of uploaded items with those bytes (built at the first deletion from the
        items whose metadata has a ``sha256``: one search of the metadata's bytes, a JSON read of
        the uploads' only; then kept up to date by every change)."""
        table = self._uploads
        if table is None:
            table = {}
            for i, meta in zip(*self.index.meta_with_key("sha256")):
                if meta.get("sha256"):
                    table.setdefault(meta["sha256"], set()).add(int(i))
            self._uploads = table
        return table

    # ------------------------------------------------------------------ thumbnails
    def thumbnail(self, item_id: int) -> bytes:
        """JPEG thumbnail (longest side ``thumb_size``) of an item's image, cached by id.

        Raises:
            UnknownItemError: no such id, or its image file is gone or unreadable.
        """
        index = self._current()
        with self._thumb_lock:
            hit = self._thumbs.get(item_id)
            if hit is not None:
                self._thumbs.move_to_end(item_id)
        if hit is not None:
            try:
                index.labels_of([item_id])  # removed meanwhile: not served
            except (ValueError, OverflowError):
                raise UnknownItemError(item_id) from None
            return hit
        _, meta = self._lookup(index, item_id)
        try:
            image = _item_image(meta)
        except (ImageReadError, SceneError, Image.DecompressionBombError):
            raise UnknownItemError(item_id, f"the image of item {item_id} is not available"
                                   ) from None
        image.thumbnail((self.thumb_size, self.thumb_size), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=85)
        data = buf.getvalue()
        with self._thumb_lock:
            self._thumbs[item_id] = data
            while len(self._thumbs) > self._thumb_cap:
                self._thumbs.popitem(last=False)
        return data

    # ------------------------------------------------------------------ description
    def info(self) -> dict[str, Any]:
        """Sizes, model and index version (no file paths)."""
        cfg = self.run.config
        return {"items": len(self), "n_bits": self.run.n_bits,
                "semantic_bits": self.run.semantic_bits, "instance_bits": self.run.instance_bits,
                "classes": list(self.classes),
                "model": {"method": self.run.method, "backbone": cfg.get("backbone"),
                          "mode": cfg.get("mode"), "run": self.run.path.name},
                "index": {"format_version": index_format.VERSION, "revision": self.revision,
                          "persisted": self._store is not None,
                          **({"log_records": self._store.info()["log_records"]}
                             if self._store is not None else {})}}


def _item_image(meta: dict[str, Any]) -> Image.Image:
    """An item's RGB image: its file, or for a tile of a scene (meta ``scene`` and ``window``)
    that window of the scene, read as it was indexed.

    Raises:
        ImageReadError, SceneError: neither can be read.
    """
    if meta.get("scene") and meta.get("window"):
        return read_window(meta["scene"], meta["window"], bands=meta_bands(meta)).image
    if not meta.get("path"):
        raise ImageReadError("no image")
    return load_rgb(meta["path"])
