"""One writer at a time per index file, across processes (issue #14, first part).

Every writer of an index file (``ahcl index build``/``add``, the service's additions and
deletions) holds an exclusive ``flock`` on a sidecar file ``<index>.lock`` while it reads the
current file, changes it and saves it. A second writer waits for the lock, up to a timeout
(:data:`DEFAULT_TIMEOUT`, or ``$AHCL_LOCK_TIMEOUT`` seconds), then stops with one clear line;
it never works from a stale copy, so two writers never hand out the same id and neither loses
the other's items. Readers take no lock: saves are atomic renames.

Under the lock no other writer can be between its temporary file and its rename, so temporary
files left by a writer that was killed mid-save (``.<name>.*.tmp`` beside the index) are removed
when the next writer takes the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

from ahcl.errors import AhclError

DEFAULT_TIMEOUT = 30.0
_POLL = 0.05


class IndexLockedError(AhclError):
    """Another writer held the index longer than the timeout. Fields: ``path``, ``timeout``."""


def lock_timeout() -> float:
    """Seconds a writer waits: ``$AHCL_LOCK_TIMEOUT`` or :data:`DEFAULT_TIMEOUT`."""
    raw = os.environ.get("AHCL_LOCK_TIMEOUT")
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise AhclError(f"AHCL_LOCK_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if not value >= 0:
        raise AhclError(f"AHCL_LOCK_TIMEOUT must be >= 0 seconds, got {raw!r}")
    return value


def lock_path(index_path: str | os.PathLike) -> Path:
    """The sidecar lock file of an index file."""
    path = Path(index_path)
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def writing(index_path: str | os.PathLike, timeout: float | None = None) -> Iterator[None]:
    """Hold the index's writer lock for the block (and clean crashed saves' temporary files).

    Args:
        index_path: the index file (it need not exist yet).
        timeout: seconds to wait for another writer (``None``: :func:`lock_timeout`).

    Raises:
        IndexLockedError: the lock was not free within ``timeout``.
    """
    timeout = lock_timeout() if timeout is None else float(timeout)
    target = Path(index_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(target), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise IndexLockedError(
                        f"{target} is being written by another process (lock {lock_path(target)}"
                        f" held for over {timeout:g} s); try again when it is done, or raise "
                        "AHCL_LOCK_TIMEOUT", path=str(target), timeout=timeout) from None
                time.sleep(_POLL)
        remove_stale_temps(target)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_stale_temps(index_path: str | os.PathLike) -> list[Path]:
    """Remove temporary files of interrupted saves of ``index_path``; call it only while holding
    the writer lock. Returns what was removed."""
    target = Path(index_path)
    gone = []
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            gone.append(tmp)
    return gone
