"""Query / database splits (and a validation split carved from the database), stratified by class.

The retrieval protocol: a few images of every class are held out as **queries**; the rest form
the **database** that is trained on and searched. Splits are seeded and saved as JSON together
with the relative image paths, so a later run can check it is looking at the same folder.

Per-class counts: with ``query_per_class=k`` every class gives ``k`` queries; with
``query_fraction=f`` a class of ``n`` images gives ``max(1, floor(f * n + 0.5))`` queries
(round half up, never zero while ``f > 0``). Every class must keep at least one database
image, else :class:`~ahcl.errors.DatasetError`. Classes are visited in increasing label order,
each drawing one permutation from a single ``np.random.default_rng(seed)``, so the split
depends on the seed and the labels only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ahcl._io import atomic_write_json
from ahcl.errors import DatasetError

_FORMAT = "ahcl-split"
_VERSION = 1


@dataclass(frozen=True)
class Split:
    """Indices of query and database items into a dataset's ``paths`` / ``labels``.

    Attributes:
        query: ``int64 (n_query,)`` sorted indices of the queries.
        db: ``int64 (n_db,)`` sorted indices of the database; disjoint from ``query``.
        seed: the seed the split was drawn with.
        query_fraction: the fraction asked for (None when ``query_per_class`` was used).
        query_per_class: the per-class count asked for, or None.
        n_items: length of the labels the split was made for.
    """

    query: np.ndarray
    db: np.ndarray
    seed: int
    query_fraction: float | None
    query_per_class: int | None
    n_items: int

    def validation(self, labels: np.ndarray, fraction: float = 0.1,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Carve a validation set from the database: see :func:`carve_validation`."""
        return carve_validation(self.db, labels, fraction, seed)


def _labels_array(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise DatasetError(f"labels must be a 1-D integer array, got shape {array.shape} "
                           f"dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _n_held_out(n: int, fraction: float | None, per_class: int | None) -> int:
    if per_class is not None:
        return per_class
    assert fraction is not None
    if fraction == 0:
        return 0
    return max(1, int(np.floor(fraction * n + 0.5)))


def make_split(labels: Sequence[int] | np.ndarray, query_fraction: float | None = 0.2,
               query_per_class: int | None = None, seed: int = 0) -> Split:
    """Draw a stratified query/database split.

    Args:
        labels: ``int (n,)`` class label of each item.
        query_fraction: fraction of each class held out as queries (ignored when
            ``query_per_class`` is given); 0 puts everything in the database.
        query_per_class: exact number of queries per class.
        seed: seed of ``np.random.default_rng``.

    Returns:
        The :class:`Split`.

    Raises:
        DatasetError: bad arguments, or a class too small to give both queries and database
            items (named, with its size).
    """
    labels = _labels_array(labels)
    if query_per_class is not None:
        if int(query_per_class) != query_per_class or query_per_class < 0:
            raise DatasetError(f"query_per_class must be a non-negative integer, got "
                               f"{query_per_class}")
        query_per_class, query_fraction = int(query_per_class), None
    elif query_fraction is None or not 0 <= query_fraction < 1:
        raise DatasetError(f"query_fraction must be in [0, 1), got {query_fraction}")
    rng = np.random.default_rng(seed)
    query: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        k = _n_held_out(len(members), query_fraction, query_per_class)
        if k >= len(members) and k > 0:
            raise DatasetError(f"class {label} has {len(members)} item(s): too few for {k} "
                               "query item(s) plus at least 1 database item; lower the query "
                               "fraction / per-class count or drop the class")
        query.append(rng.permutation(members)[:k])
    query_idx = np.sort(np.concatenate(query)) if query else np.zeros(0, np.int64)
    db_idx = np.setdiff1d(np.arange(len(labels), dtype=np.int64), query_idx)
    return Split(query=query_idx.astype(np.int64), db=db_idx.astype(np.int64), seed=int(seed),
                 query_fraction=query_fraction, query_per_class=query_per_class,
                 n_items=len(labels))


def carve_validation(db_indices: np.ndarray, labels: Sequence[int] | np.ndarray,
                     fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split database (training) indices into ``(train, val)``, stratified, for model selection.

    Each class of ``n`` database items gives ``min(n - 1, floor(fraction * n + 0.5))``
    validation items: a class with a single item stays entirely in ``train`` (unlike
    :func:`make_split` this never fails, since validation is only a guide).

    Args:
        db_indices: ``int (m,)`` indices into ``labels`` (e.g. ``split.db``).
        labels: ``int (n,)`` labels of the whole dataset.
        fraction: share of each class moved to validation, in [0, 1).
        seed: seed of ``np.random.default_rng``.

    Returns:
        ``(train, val)``: sorted disjoint ``int64`` arrays whose union is ``db_indices``.
    """
    labels = _labels_array(labels)
    db_indices = np.asarray(db_indices, dtype=np.int64)
    if not 0 <= fraction < 1:
        raise DatasetError(f"validation fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    db_labels = labels[db_indices]
    val: list[np.ndarray] = []
    for label in np.unique(db_labels):
        members = db_indices[db_labels == label]
        k = min(len(members) - 1, int(np.floor(fraction * len(members) + 0.5)))
        val.append(rng.permutation(members)[:k])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train_idx = np.setdiff1d(db_indices, val_idx)
    return train_idx.astype(np.int64), val_idx.astype(np.int64)


def save_split(split: Split, path: str | os.PathLike, paths: Sequence[str] | None = None) -> None:
    """Write ``split`` as JSON (atomically), with the dataset's relative image paths if given.

    Raises:
        DatasetError: ``paths`` does not have ``split.n_items`` entries.
    """
    if paths is not None and len(paths) != split.n_items:
        raise DatasetError(f"split is for {split.n_items} items but {len(paths)} paths were given")
    obj: dict[str, Any] = {
        "format": _FORMAT, "version": _VERSION, "seed": split.seed,
        "query_fraction": split.query_fraction, "query_per_class": split.query_per_class,
        "n_items": split.n_items, "query": split.query.tolist(), "db": split.db.tolist(),
        "paths": list(paths) if paths is not None else None,
    }
    atomic_write_json(path, obj)


def load_split(path: str | os.PathLike, folder: Any = None) -> Split:
    """Read a split written by :func:`save_split`, checking it against ``folder`` if given.

    Args:
        path: the JSON file.
        folder: a :class:`~ahcl.data.folder.SceneFolder` (or a list of relative paths) the
            split must belong to.

    Raises:
        DatasetError: unreadable or malformed file, or the saved paths differ from the
            folder's (the first difference is named).
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read split file {path}: {exc}") from None
    if not isinstance(obj, dict) or obj.get("format") != _FORMAT:
        raise DatasetError(f"{path} is not an ahcl split file (no \"format\": \"{_FORMAT}\")")
    if obj.get("version") != _VERSION:
        raise DatasetError(f"{path}: split format version {obj.get('version')} is not supported "
                           f"(this ahcl reads version {_VERSION})")
    try:
        split = Split(query=np.asarray(obj["query"], dtype=np.int64),
                      db=np.asarray(obj["db"], dtype=np.int64), seed=int(obj["seed"]),
                      query_fraction=obj["query_fraction"],
                      query_per_class=obj["query_per_class"], n_items=int(obj["n_items"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: malformed split file ({exc})") from None
    _check_indices(split, path)
    if folder is not None:
        _check_paths(obj.get("paths"), folder, path)
    return split


def _check_indices(split: Split, path: Path) -> None:
    both = np.concatenate([split.query, split.db])
    if both.size and (both.min() < 0 or both.max() >= split.n_items):
        raise DatasetError(f"{path}: split indices out of range for {split.n_items} items")
    if np.intersect1d(split.query, split.db).size:
        raise DatasetError(f"{path}: query and database indices overlap")


def _check_paths(saved: Any, folder: Any, path: Path) -> None:
    current = list(folder.paths if hasattr(folder, "paths") else folder)
    if saved is None:
        raise DatasetError(f"{path} has no image paths, so it cannot be checked against the "
                           "folder: save it again with paths=folder.paths")
    if len(saved) != len(current):
        raise DatasetError(f"{path} was made for {len(saved)} images but the folder has "
                           f"{len(current)}: make a new split for this folder")
    for i, (a, b) in enumerate(zip(saved, current)):
        if a != b:
            raise DatasetError(f"{path} does not match the folder: item {i} is {a!r} in the "
                               f"split but {b!r} in the folder; make a new split")
