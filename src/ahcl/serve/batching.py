"""Leader-follower batching for the service's serial steps (a forward pass, a log append).

Callers queue their work; whichever caller takes the step's lock next runs everything queued
(up to a bound) in one call, and each caller gets its own part of the result. A lone call runs
at once, alone, as it would without batching; under concurrency the fixed cost of the step (a
forward pass's overhead, an fsync) is paid once per batch instead of once per request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Ticket(Generic[T, R]):
    work: T
    result: R | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Batcher(Generic[T, R]):
    """Run ``step(works) -> results`` (one result per work, in order) over queued works.

    Args:
        step: the batched step; an exception fails every work of its batch.
        lock: held while ``step`` runs (the step's own lock, shared with other users of it).
        size: how much of the ``limit`` one work takes (images, say).
        limit: most total ``size`` per batch (a larger single work runs alone).
    """

    def __init__(self, step: Callable[[list[T]], list[R]], lock: Any,
                 size: Callable[[T], int], limit: int) -> None:
        self._step, self._lock, self._size, self._limit = step, lock, size, int(limit)
        self._queue: list[_Ticket[T, R]] = []
        self._queue_lock = threading.Lock()

    def __call__(self, work: T) -> R:
        mine: _Ticket[T, R] = _Ticket(work)
        with self._queue_lock:
            self._queue.append(mine)
        while not mine.done.is_set():
            with self._lock:
                if mine.done.is_set():
                    break
                batch = self._take()
                try:
                    results = self._step([t.work for t in batch])
                except BaseException as exc:
                    for t in batch:
                        t.error = exc
                        t.done.set()
                    if mine in batch:
                        raise
                    continue
                for t, r in zip(batch, results):
                    t.result = r
                    t.done.set()
        if mine.error is not None:
            raise mine.error
        return mine.result  # type: ignore[return-value]

    def _take(self) -> list[_Ticket[T, R]]:
        with self._queue_lock:
            batch, taken = [], 0
            while self._queue and (not batch or taken + self._size(self._queue[0].work)
                                   <= self._limit):
                batch.append(self._queue.pop(0))
                taken += self._size(batch[-1].work)
            return batch
