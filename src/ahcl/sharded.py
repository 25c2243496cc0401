"""Sharded, resumable encoding with a trained run, under torchrun: of many image files, or of
the tiles of GeoTIFF scenes.

The work (the sorted file list, or every scene's grid windows in order) is cut into parts of
``part_size`` units; part ``i`` goes to rank ``i mod world_size``, so one huge scene is shared
too. Each finished part is written atomically to ``<shard_dir>/<work hash>/part-<start>-<stop>.npz``,
so a rerun after a crash (with any number of processes) skips the parts already on disk, and
rank 0 merges them in order: the result equals a single process's.

A rank that meets bad input (an unreadable image, a damaged scene block) does not leave the
others waiting: every rank learns of it before the merge, and all raise the same one-line error
(for images, naming the unreadable files of every rank, so all drop the same ones).
The collectives come from :mod:`ahcl.distributed`; listing the files is
:func:`ahcl.data.folder.list_image_files`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ahcl import distributed as dist
from ahcl._io import atomic_write, file_digest
from ahcl._progress import progress, progress_bar
from ahcl.data.images import ImageReadError
from ahcl.data.scenes import SceneTiles, scene_tiles
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


def _load_part(path: Path, start: int, stop: int,
               content: np.ndarray | None = None) -> dict[str, np.ndarray] | None:
    """The arrays of a finished part, or ``None`` when it is missing, unusable, or (with
    ``content``) made from other inputs."""
    try:
        with np.load(path, allow_pickle=False) as z:
            part = {key: z[key] for key in z.files}
        ok = (int(part["format"]) == SHARD_FORMAT and int(part["start"]) == start
              and int(part["stop"]) == stop and part["codes"].dtype == np.uint8)
        if content is not None:
            ok = ok and np.array_equal(part["content"], content)
    except (OSError, ValueError, KeyError):
        return None
    return part if ok else None


def _read_part(path: Path, start: int, stop: int, width: int,
               content: np.ndarray | None = None) -> np.ndarray | None:
    """The codes of a finished part of image files (one row per file), or ``None``."""
    part = _load_part(path, start, stop, content)
    if part is None or part["codes"].shape != (stop - start, width):
        return None
    return part["codes"]


def _write_part(folder: Path, start: int, stop: int, content: np.ndarray,
                **arrays: np.ndarray) -> None:
    with atomic_write(_part_path(folder, start, stop)) as f:
        np.savez(f, start=np.int64(start), stop=np.int64(stop), format=np.int64(SHARD_FORMAT),
                 content=content, **arrays)


def _salt(run: Run, **work: Any) -> str:
    """What a part depends on besides its own inputs: the run, the format, how work is cut."""
    return json.dumps({"run": str(Path(run.path).resolve()),
                       "db_codes_sha256": run.info.get("db_codes_sha256"),
                       "format": SHARD_FORMAT, **work}, sort_keys=True)


def _shares(n: int, part_size: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """All parts ``(start, stop)`` of ``n`` units, and this rank's (every ``world``-th)."""
    if part_size < 1:
        raise AhclError(f"part_size must be >= 1, got {part_size}")
    bounds = [(s, min(s + part_size, n)) for s in range(0, n, part_size)]
    return bounds, [b for i, b in enumerate(bounds) if i % dist.world_size() == dist.rank()]


def _agree(failure: AhclError | None) -> None:
    """Raise on every rank when any rank failed, so none is left waiting at a collective.

    Every rank decides from what all ranks report, so all decide alike. When some failure is
    not an unreadable image, every rank stops: a rank raises its own such error, the others an
    :class:`AhclError` with the first such line. When all are unreadable images, every rank
    raises :class:`ImageReadError` with ``paths`` = the unreadable files of all ranks (the
    caller drops them all and tries again; a sole failing rank raises its own error).
    """
    if not dist.is_distributed():
        if failure is not None:
            raise failure
        return
    mine = None if failure is None else {
        "message": str(failure), "image": isinstance(failure, ImageReadError),
        "paths": list(getattr(failure, "paths", None) or [getattr(failure, "path", None)])}
    failed = [r for r in dist.all_gather_object(mine) if r is not None]
    if not failed:
        return
    others = [r for r in failed if not r["image"]]
    if others:  # every rank stops (none retries): its own error if it has one of these
        if failure is not None and not isinstance(failure, ImageReadError):
            raise failure
        raise AhclError(others[0]["message"])
    if failure is not None and len(failed) == 1:
        raise failure
    paths = sorted({p for r in failed for p in r["paths"] if p is not None})
    raise ImageReadError(failed[0]["message"], paths=paths)


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

    Raises:
        ImageReadError: an image cannot be read, on any rank (``paths``: the unreadable files
            every rank met).
    """
    paths = [os.fspath(p) for p in paths]
    width = run.n_bits // 8
    bounds, mine = _shares(len(paths), part_size)
    # Made by the first part written (atomic_write makes the folders), so a list that fails
    # before any part is encoded (an unreadable image) leaves no empty folders behind.
    folder = Path(shard_dir) / list_hash(paths, _salt(run))
    contents = {b: _content(paths[b[0]:b[1]]) for b in mine}
    todo = [b for b in mine
            if _read_part(_part_path(folder, *b), *b, width, contents[b]) is None]
    failure = None
    try:
        for start, stop in progress(todo, total=len(todo),
                                    desc=f"encoding (rank {dist.rank()})", unit="part"):
            _write_part(folder, start, stop, contents[(start, stop)],
                        codes=run.encode(paths[start:stop]))
    except AhclError as exc:
        failure = exc
    _agree(failure)
    dist.barrier()
    if dist.rank() != 0:
        return None
    out = np.zeros((len(paths), width), np.uint8)
    for start, stop in bounds:
        codes = _read_part(_part_path(folder, start, stop), start, stop, width)
        if codes is None:
            raise _missing(folder, start, stop)
        out[start:stop] = codes
    return out


def _missing(folder: Path, start: int, stop: int) -> AhclError:
    return AhclError(f"part {start}-{stop} of {folder} is missing after all ranks finished; "
                     "rerun the same command to encode it")


def _scene_key(scenes: Sequence[SceneTiles]) -> np.ndarray:
    """sha256 over each scene's path, size and modification time: uint8 (32,). Weaker than the
    image parts' content hashes (a scene rewritten in place within the same nanosecond with
    the same size would be taken as unchanged), but it costs no read of the scene."""
    h = hashlib.sha256()
    for scene in scenes:
        st = os.stat(scene.path)
        h.update(f"{os.path.abspath(scene.path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return np.frombuffer(h.digest(), np.uint8)


def encode_scenes_sharded(run: Run, scenes: Sequence[str | os.PathLike],
                          shard_dir: str | os.PathLike, *, tile: int = 256, stride: int = 256,
                          bands: Sequence[int] | None = None, min_valid: float = 0.9,
                          part_size: int = 4096
                          ) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, int]] | None:
    """The tiles of GeoTIFF scenes encoded by all ranks, merged on rank 0 into exactly what
    :meth:`ahcl.run.Run.encode_scenes` returns in one process.

    Every rank opens and checks every scene first (headers only; a bad scene fails every rank
    with the same :class:`~ahcl.data.scenes.SceneError`, nothing encoded). The scenes' grid
    windows, in order, are cut into parts of ``part_size`` windows; the rank that owns a part
    reads its windows, skips those mostly nodata, and encodes the rest. A part is reused on a
    rerun while its scenes keep their size and modification time (see :func:`_scene_key`).
    The parts stay on disk: remove ``shard_dir`` once the result is saved.

    Returns:
        On rank 0: codes ``uint8 (n, n_bits/8)``, one meta per tile (``scene``, ``window``,
        ``crs``, ``geometry``, ``bands``) and counts (``scenes``, ``tiles``, ``nodata_skipped``,
        ``edge_skipped``); ``None`` elsewhere.
    """
    with warnings.catch_warnings():
        if dist.rank() != 0:  # "no georeferencing" and the like: said once, by rank 0
            warnings.simplefilter("ignore")
        opened = [scene_tiles(p, tile=tile, stride=stride, bands=bands, min_valid=min_valid)
                  for p in scenes]
    units = [(s, w) for s, scene in enumerate(opened) for w in range(len(scene.positions))]
    bounds, mine = _shares(len(units), part_size)
    width = run.n_bits // 8
    work = {"scenes": [os.path.abspath(s.path) for s in opened], "tile": tile,
            "stride": stride, "bands": [list(s.bands) for s in opened], "min_valid": min_valid}
    folder = Path(shard_dir) / list_hash([], _salt(run, **work))
    contents = {b: _scene_key([opened[s] for s in sorted({s for s, _ in units[b[0]:b[1]]})])
                for b in mine}
    todo = [b for b in mine if _load_part(_part_path(folder, *b), *b, contents[b]) is None]
    bar = progress_bar(sum(b - a for a, b in todo), desc=f"scene tiles (rank {dist.rank()})",
                       unit="tile")
    failure = None
    try:
        for start, stop in todo:
            kept, codes, metas = run.encode_windows(opened, units[start:stop], bar)
            _write_part(folder, start, stop, contents[(start, stop)], codes=codes,
                        kept=np.asarray(kept, np.int64) + start, meta=np.array(json.dumps(metas)))
    except AhclError as exc:
        failure = exc
    finally:
        bar.close()
    _agree(failure)
    dist.barrier()
    if dist.rank() != 0:
        return None
    codes, metas, kept = [], [], 0
    for start, stop in bounds:
        part = _load_part(_part_path(folder, start, stop), start, stop)
        if part is None or part["codes"].shape[1:] != (width,):
            raise _missing(folder, start, stop)
        codes.append(part["codes"])
        metas += json.loads(str(part["meta"]))
        kept += int(part["kept"].shape[0])
    counts = {"scenes": len(opened), "tiles": kept, "nodata_skipped": len(units) - kept,
              "edge_skipped": sum(s.edge_skipped for s in opened)}
    out = np.concatenate(codes) if codes else np.zeros((0, width), np.uint8)
    return out, metas, counts

