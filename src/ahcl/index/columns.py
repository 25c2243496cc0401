"""Append-only int64 columns shared by an index and its copies.

:class:`ahcl.index.HammingIndex` keeps its ids and labels in storage order as one array each (the
kernels read them by storage position). Rebuilding those arrays after every small addition would
copy the whole archive each time; a :class:`Column` instead has spare capacity and is extended in
place when the index that extends it is the one that filled it last. An index copied before the
addition (:meth:`HammingIndex.copy`, the snapshot a search runs on) keeps reading its own first
``n`` entries, which never change; a second index extending the same column from an older length
gets a fresh copy. Growth is geometric, so ``m`` single additions cost O(m) copies in all.
"""

from __future__ import annotations

import threading

import numpy as np

GROWTH = 1.25
MIN_ROOM = 1024


class Column:
    """The first ``filled`` entries of ``data`` (its length is the capacity)."""

    def __init__(self, data: np.ndarray, filled: int | None = None) -> None:
        self._data = data
        self._filled = data.shape[0] if filled is None else int(filled)
        self._lock = threading.Lock()

    def view(self, n: int) -> np.ndarray:
        """The first ``n`` entries (``n`` at most what was filled)."""
        return self._data[:n]

    def extended(self, n: int, values: np.ndarray) -> "Column":
        """A column holding ``view(n)`` then ``values``: this one, extended in place, when it was
        last filled to exactly ``n`` and has room; otherwise a new one with spare room."""
        m = values.shape[0]
        with self._lock:
            if self._filled == n and n + m <= self._data.shape[0] and self._data.flags.writeable:
                self._data[n:n + m] = values
                self._filled = n + m
                return self
        data = np.empty(max(n + m + MIN_ROOM, int((n + m) * GROWTH)), dtype=self._data.dtype)
        data[:n] = self._data[:n]
        data[n:n + m] = values
        return Column(data, n + m)
