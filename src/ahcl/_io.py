"""File helpers: atomic writes (a reader sees the old file or the new one, never half of one)
and the one chunked file hasher every module uses."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import IO, Any, Iterator

from ahcl.errors import DiskFullError

_FULL = (errno.ENOSPC, errno.EDQUOT)
# What torch.save's C++ writer says when a write fails (it loses the errno on the way).
_TORCH_WRITE_FAILED = ("file write failed", "failed writing file")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *,
                 sync_folder: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    ``sync_folder=False`` leaves the folder's fsync (which makes the rename durable) to the
    caller, who may write several files and call :func:`fsync_folder` once.

    On an exception the temporary file is removed and ``path`` is left untouched. A full disk
    (``ENOSPC``/``EDQUOT``, or torch.save's "file write failed") becomes one
    :class:`~ahcl.errors.DiskFullError` naming the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = _create_temp(path)
    except OSError as exc:  # read-only, no permission: name the file asked for, not the temp
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with contextlib.suppress(OSError):  # a replaced file keeps its mode
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if is_disk_full(exc):
            raise disk_full_error(path) from None
        raise
    if sync_folder:
        _fsync_dir(path.parent)


def _create_temp(path: Path) -> tuple[int, str]:
    """A new, exclusive temporary file ``.NAME.RANDOM.tmp`` beside ``path``, created with mode
    0666 so that the kernel applies the umask, as ``open()`` would (``mkstemp`` makes 0600 files,
    and reading the umask costs a /proc read per write). Returns ``(fd, name)``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def fsync_folder(directory: str | os.PathLike) -> None:
    """Make the renames done in ``directory`` durable (best effort where folders cannot be
    opened)."""
    _fsync_dir(Path(directory))


def disk_full_error(path: str | os.PathLike,
                    kept: str = "the previous file, if any, is unchanged") -> DiskFullError:
    """The one error a write that ran out of space gives (``kept``: what is still intact)."""
    return DiskFullError(f"cannot write {path}: no space left on the device ({kept}); free some "
                         "space and run again", path=str(path))


def is_disk_full(exc: BaseException | None) -> bool:
    """ENOSPC/EDQUOT anywhere in the exception's chain (torch.save re-raises a failed write as a
    RuntimeError while closing its archive), or torch's own write-failure message."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return True
        if isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITE_FAILED):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, sync_folder: bool = True
                       ) -> None:
    """Write ``data`` to ``path`` atomically (``sync_folder``: as in :func:`atomic_write`)."""
    with atomic_write(path, "wb", sync_folder=sync_folder) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest (any :mod:`hashlib` name, ``"sha256"`` by default) of a file's bytes, read in
    ``chunk``-byte blocks so a file of any size hashes in constant memory.

    Raises:
        OSError: the file cannot be read (callers turn it into their own error).
    """
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
