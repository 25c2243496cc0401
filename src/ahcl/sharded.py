"""Sharded, resumable encoding of many image files with a trained run, under torchrun.

The sorted file list is cut into parts of ``part_size`` files; part ``i`` goes to rank
``i mod world_size``. Each finished part is written atomically to
``<shard_dir>/<list hash>/part-<start>-<stop>.npz``, so a rerun after a crash (with any number of
processes) skips the parts already on disk, and rank 0 merges them in file order.
The collectives come from :mod:`ahcl.distributed`; listing the files is
:func:`ahcl.data.folder.list_image_files`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ahcl import distributed as dist
from ahcl._io import atomic_write, file_digest
from ahcl._progress import progress
from ahcl.errors import AhclError
from ahcl.run import Run

SHARD_FORMAT = 2  # 2: parts carry the digest of their files' contents


def list_hash(paths: Sequence[str], salt: str = "") -> str:
    """First 16 hex of sha256 over ``salt`` and the paths (one per line): names a shard folder."""
    h = hashlib.sha256(salt.encode())
    for p in paths:
        h.update(b"\n" + os.fsencode(p))
    return h.hexdigest()[:16]


def _part_path(folder: Path, start: int, stop: int) -> Path:
    return folder / f"part-{start:010d}-{stop:010d}.npz"


def _content(paths: Sequence[str]) -> np.ndarray:
    """sha256 over the sha256 of each file's bytes: uint8 (32,). A part is reused only for the
    same contents, so an image changed between a crash and the rerun is encoded again."""
    h = hashlib.sha256()
    for p in paths:
        try:
            h.update(bytes.fromhex(file_digest(p)))
        except OSError:
            h.update(b"unreadable:" + os.fsencode(p))  # encoding it will report the file
    return np.frombuffer(h.digest(), np.uint8)


def _read_part(path: Path, start: int, stop: int, width: int,
               content: np.ndarray | None = None) -> np.ndarray | None:
    """The codes of a finished part, or ``None`` when it is missing, unusable, or (with
    ``content``) made from other file contents."""
    try:
        with np.load(path, allow_pickle=False) as z:
            codes = z["codes"]
            ok = (int(z["format"]) == SHARD_FORMAT and int(z["start"]) == start
                  and int(z["stop"]) == stop)
            if content is not None:
                ok = ok and np.array_equal(z["content"], content)
    except (OSError, ValueError, KeyError):
        return None
    if not ok or codes.dtype != np.uint8 or codes.shape != (stop - start, width):
        return None
    return codes


def encode_files_sharded(run: Run, paths: Sequence[str], shard_dir: str | os.PathLike,
                         part_size: int = 4096) -> np.ndarray | None:
    """Network codes of many image files, encoded by all ranks and merged on rank 0.

    Every rank must call this with the same ``paths``. Finished parts survive a crash: a rerun
    (with the same run and file list, any number of processes) encodes only the missing parts.
    The parts stay on disk: remove ``shard_dir`` once the result is saved.

    Args:
        run: the trained run whose network encodes the images.
        paths: image files, in the order of the result.
        shard_dir: folder for the parts (a subfolder per run + file list).
        part_size: files per part (the unit of work and of crash recovery).

    Returns:
        On rank 0, packed uint8 (len(paths), n_bits/8) codes ``sign(u)``; ``None`` elsewhere.
    """
    if part_size < 1:
        raise AhclError(f"part_size must be >= 1, got {part_size}")
    paths = [os.fspath(p) for p in paths]
    width = run.n_bits // 8
    salt = json.dumps({"run": str(Path(run.path).resolve()),
                       "db_codes_sha256": run.info.get("db_codes_sha256"),
                       "format": SHARD_FORMAT})
    # Made by the first part written (atomic_write makes the folders), so a list that fails
    # before any part is encoded (an unreadable image) leaves no empty folders behind.
    folder = Path(shard_dir) / list_hash(paths, salt)
    bounds = [(s, min(s + part_size, len(paths))) for s in range(0, len(paths), part_size)]
    mine = [b for i, b in enumerate(bounds) if i % dist.world_size() == dist.rank()]
    contents = {b: _content(paths[b[0]:b[1]]) for b in mine}
    todo = [b for b in mine
            if _read_part(_part_path(folder, *b), *b, width, contents[b]) is None]
    for start, stop in progress(todo, total=len(todo), desc=f"encoding (rank {dist.rank()})",
                                unit="part"):
        codes = run.encode(paths[start:stop])
        with atomic_write(_part_path(folder, start, stop)) as f:
            np.savez(f, codes=codes, start=np.int64(start), stop=np.int64(stop),
                     format=np.int64(SHARD_FORMAT), content=contents[(start, stop)])
    dist.barrier()
    if dist.rank() != 0:
        return None
    out = np.zeros((len(paths), width), np.uint8)
    for start, stop in bounds:
        codes = _read_part(_part_path(folder, start, stop), start, stop, width)
        if codes is None:
            raise AhclError(f"part {start}-{stop} of {folder} is missing after all ranks "
                            "finished; rerun the same command to encode it")
        out[start:stop] = codes
    return out
