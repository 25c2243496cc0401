"""The archive a server searches: a :class:`~ahcl.index.HammingIndex`, the run that encodes
queries, and a folder of uploaded images (checked by :mod:`ahcl.serve.uploads`), changed only
under one lock and persisted atomically.

Layout on disk::

    RUN/archive.index        the index (written on the first change; until then the run's
                             database codes are indexed in memory)
    RUN/archive.images/      uploaded images, named by the sha256 of their bytes

or, serving an index file ``X.index`` built by ``ahcl index build``, ``X.index`` itself and
``X.images/`` beside it (the run that encodes queries is then given separately).

Every item carries meta ``{"path": absolute path}``; uploads add ``"sha256"``. Item ids are the
index's int64 ids and are never reused, so a thumbnail cached by id never goes stale.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ahcl._io import atomic_write_bytes
from ahcl.data.images import ImageReadError, load_rgb
from ahcl.errors import AhclError
from ahcl.index import HammingIndex, Hit, search_results
from ahcl.index import format as index_format
from ahcl.index.hits import hits_from_rows
from ahcl.index.lock import writing
from ahcl.run import Run, load_run
from ahcl.serve.uploads import Upload

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


class Archive:
    """A searchable, writable image archive (thread-safe).

    Args:
        run: the run whose network encodes queries and uploads.
        index: the index of archive codes (meta ``{"path"}`` per item).
        index_path: where changes are saved (atomically).
        images_dir: where uploaded images are stored.
        thumb_size: longest side of thumbnails, pixels.
        thumb_cache: thumbnails kept in memory (least recently used dropped first).
    """

    def __init__(self, run: Run, index: HammingIndex, index_path: Path, images_dir: Path, *,
                 thumb_size: int = 160, thumb_cache: int = 4096,
                 index_loaded_from_file: bool | None = None) -> None:
        run.check_index(index, index_path)
        if index_loaded_from_file is None:
            index_loaded_from_file = Path(index_path).is_file()
        self.run = run
        self.index = index
        self.index_path = Path(index_path)
        self.images_dir = Path(images_dir)
        self.thumb_size = int(thumb_size)
        self.revision = 0  # bumped on every change this process makes
        self._lock = threading.RLock()
        self._encode_lock = threading.Lock()  # one forward pass at a time: no CPU oversubscription
        self._thumbs: OrderedDict[int, bytes] = OrderedDict()
        self._thumb_cap = int(thumb_cache)
        self._thumb_lock = threading.Lock()
        self.run.encoder()  # build now: the first query should not pay for it
        # What the index file looked like when this archive read it (None: not read from one).
        self._on_disk = _file_state(self.index_path) if index_loaded_from_file else None
        # A file opened memory-mapped over VERIFY_LIMIT skipped its CRCs: it is verified before
        # this archive first re-saves it, so flipped bytes are reported, never made permanent.
        self._verified = not (index_loaded_from_file and self.index_path.stat().st_size
                              > index_format.VERIFY_LIMIT)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, source: str | Path, run: str | Path | None = None, *,
             run_options: dict[str, Any] | None = None, **kwargs: Any) -> "Archive":
        """Open a run folder or an index file (which needs ``run``) as an archive.

        ``run_options`` go to :func:`ahcl.run.load_run` (``device``, ``precision``, ...).

        Raises:
            AhclError: missing run for an index, unreadable files, or mismatched code lengths.
        """
        source = Path(source)
        run_options = run_options or {}
        if source.is_dir():
            the_run = load_run(run if run is not None else source, **run_options)
            index_path = source / ARCHIVE_INDEX
            if index_path.is_file():
                index = HammingIndex.load(index_path)
            else:
                index = the_run.new_index()
                index.add(the_run.db_codes, labels=the_run.db_labels,
                          meta=[{"path": p} for p in the_run.db_paths])
            return cls(the_run, index, index_path, source / "archive.images", **kwargs)
        if not source.is_file():
            raise AhclError(f"{source} is neither a run folder nor an index file")
        if run is None:
            raise AhclError(f"serving the index {source} needs --run RUN, the run that encodes "
                            "queries (or serve the run folder itself)")
        return cls(load_run(run, **run_options), HammingIndex.load(source), source,
                   source.with_suffix(".images"), **kwargs)

    # ------------------------------------------------------------------ reading
    @property
    def classes(self) -> list[str]:
        return self.run.classes

    def __len__(self) -> int:
        with self._lock:
            return len(self.index)

    def class_name(self, label: int) -> str | None:
        return self.classes[label] if 0 <= label < len(self.classes) else None

    def item(self, item_id: int) -> dict[str, Any]:
        """``{"id", "label", "class", "uploaded"}`` of one item (no file path).

        Raises:
            UnknownItemError: no such id.
        """
        with self._lock:
            label, meta = self._lookup(item_id)
        return self._record(item_id, label, meta)

    def _lookup(self, item_id: int) -> tuple[int, dict]:
        try:
            label = int(self.index.labels_of([item_id])[0])
            meta = self.index.meta_of([item_id])[0] or {}
        except (ValueError, OverflowError):
            raise UnknownItemError(item_id) from None
        return label, meta

    def _record(self, item_id: int, label: int, meta: dict | None) -> dict[str, Any]:
        return {"id": int(item_id), "label": int(label), "class": self.class_name(int(label)),
                "uploaded": "sha256" in (meta or {})}

    def items(self, label: int | None = None, offset: int = 0, limit: int = 60
              ) -> tuple[int, list[dict[str, Any]]]:
        """Items in id order, optionally of one label: ``(total matching, page of records)``."""
        with self._lock:
            ids, labels = np.asarray(self.index.ids), np.asarray(self.index.labels)
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
        with self._lock:
            labels = np.asarray(self.index.labels)
        counts = np.bincount(labels[labels >= 0], minlength=len(self.classes))
        return [int(c) for c in counts[:len(self.classes)]], int(np.sum(labels < 0))

    def code_of(self, item_id: int) -> np.ndarray:
        """The stored packed code of one item: ``uint8 (1, n_bits/8)``.

        Raises:
            UnknownItemError: no such id.
        """
        with self._lock:
            try:
                return self.index.codes_of([item_id])
            except (ValueError, OverflowError):
                raise UnknownItemError(item_id) from None

    # ------------------------------------------------------------------ search
    def encode(self, images: list[Image.Image]) -> np.ndarray:
        """Network codes of RGB images: packed ``uint8 (n, n_bits/8)``."""
        with self._encode_lock:
            return self.run.encode_images(images)

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
        with self._lock:
            if radius is None:
                hits = search_results(self.index, code, want, classes=self.classes)[0]
            else:
                _, dist, inst, ids = self.index.range_search_split(code, radius)
                ids, dist, inst = ids[:want], dist[:want], inst[:want]
                labels = self.index.labels_of(ids) if ids.shape[0] else ids
                hits = hits_from_rows(ids, dist, labels, classes=self.classes,
                                      instance_distances=inst if self.index.split else None)
        return [h for h in hits if h.id != exclude][:k]

    # ------------------------------------------------------------------ writing
    def add(self, uploads: list[Upload], label: int | None = None) -> list[dict[str, Any]]:
        """Store uploaded images and index them; all or nothing.

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
        # The file lock first, then this process's lock: searches wait only for the save
        # itself, never for another process's write.
        with writing(self.index_path), self._lock:
            created: list[Path] = []
            ids = None
            try:
                for u, path in zip(uploads, paths):
                    if not path.exists():  # content-addressed: the same bytes are stored once
                        atomic_write_bytes(path, u.data)
                        created.append(path)
                self._reload_if_changed()
                ids = self.index.add(codes, labels=labels, meta=[
                    {"path": str(p), "sha256": u.sha256} for u, p in zip(uploads, paths)])
                self._persist()
            except BaseException:
                if ids is not None:
                    self.index.remove(ids)
                for path in created:
                    path.unlink(missing_ok=True)
                raise
            self.revision += 1
            for i, u in zip(ids, uploads):
                self._upload_ids().setdefault(u.sha256, set()).add(int(i))
        return [self._record(int(i), int(lab), {"sha256": ""}) for i, lab in zip(ids, labels)]

    def delete(self, item_id: int) -> None:
        """Remove an item from the index (persisted) and its uploaded file if no other item
        shares it.

        Raises:
            UnknownItemError: no such id.
        """
        with writing(self.index_path), self._lock:
            self._reload_if_changed()
            label, meta = self._lookup(item_id)
            code = self.code_of(item_id)
            self.index.remove([item_id])
            try:
                self._persist()
            except BaseException:
                self.index.add(code, ids=[item_id], labels=[label], meta=[meta])
                raise
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

    def _persist(self) -> None:
        """Save (the caller holds the writer lock) and reopen what was written."""
        self.index.save(self.index_path)
        # Reopen the file just written (memory-mapped, one segment) so that many small adds
        # do not leave the scan walking many small segments.
        self.index = HammingIndex.load(self.index_path, verify=False)
        self._on_disk = _file_state(self.index_path)
        self._verified = True  # written from memory just now

    def _reload_if_changed(self) -> None:
        """Under the writer lock: if another process (``ahcl index add``, another server) has
        saved the file since this one read or wrote it, start from that file (verified), so no
        id is handed out twice and nothing it added is lost."""
        state = _file_state(self.index_path)
        if state is not None and state == self._on_disk and not self._verified:
            HammingIndex.load(self.index_path, verify=True)  # raises IndexFileError if damaged
            self._verified = True
        if state is None or state == self._on_disk:
            return
        index = HammingIndex.load(self.index_path, verify=True)
        self.run.check_index(index, self.index_path)
        self.index = index
        self._on_disk, self._verified = state, True
        self._uploads = None
        self.revision += 1
        with self._thumb_lock:
            self._thumbs.clear()

    def _upload_ids(self) -> dict[str, set[int]]:
        """sha256 → ids of uploaded items with those bytes (built on first use: one meta pass)."""
        table = getattr(self, "_uploads", None)
        if table is None:
            table = {}
            ids = np.asarray(self.index.ids)
            for i, meta in zip(ids, self.index.meta_of(ids) if ids.shape[0] else []):
                if meta and meta.get("sha256"):
                    table.setdefault(meta["sha256"], set()).add(int(i))
            self._uploads = table
        return table

    # ------------------------------------------------------------------ thumbnails
    def thumbnail(self, item_id: int) -> bytes:
        """JPEG thumbnail (longest side ``thumb_size``) of an item's image, cached by id.

        Raises:
            UnknownItemError: no such id, or its image file is gone or unreadable.
        """
        with self._thumb_lock:
            hit = self._thumbs.get(item_id)
            if hit is not None:
                self._thumbs.move_to_end(item_id)
                return hit
        with self._lock:
            _, meta = self._lookup(item_id)
        path = meta.get("path")
        try:
            if not path:
                raise ImageReadError("no image")
            image = load_rgb(path)
        except (ImageReadError, Image.DecompressionBombError):
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
                          "persisted": self.index_path.is_file()}}


def _file_state(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime ns, size) of a file, ``None`` when it does not exist: saves are renames,
    so any save by any process changes it."""
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
