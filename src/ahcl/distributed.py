"""Scale-out on ``torch.distributed``: process groups from torchrun, collectives on numpy arrays,
and sharded encoding of large image folders.

Launch any ``ahcl`` verb that supports it under torchrun; each process reads its place from the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``)::

    torchrun --nproc_per_node 2 -m ahcl train --data DIR --out RUN
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 \\
        --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m ahcl index build RUN --out INDEX --images DIR

Without those variables (or with ``WORLD_SIZE=1``) nothing is initialised and every helper here
acts as the identity of a one-process group, so library code calls them unconditionally.

Sharded encoding (:func:`encode_files_sharded`): the sorted file list is cut into parts of
``part_size`` files; part ``i`` goes to rank ``i mod world_size``. Each finished part is written
atomically to ``<shard_dir>/<list hash>/part-<start>-<stop>.npz``, so a rerun after a crash (with
any number of processes) skips the parts already on disk, and rank 0 merges them in file order.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

from ahcl._io import atomic_write
from ahcl._progress import progress
from ahcl.errors import AhclError

if TYPE_CHECKING:
    from ahcl.run import Run

__all__ = [
    "all_gather_object",
    "all_reduce_numpy",
    "barrier",
    "encode_files_sharded",
    "gather_numpy",
    "init_from_env",
    "is_distributed",
    "list_image_files",
    "local_rank",
    "rank",
    "shard_slice",
    "world_size",
]

SHARD_FORMAT = 1


def init_from_env(device: str = "cpu", timeout_s: float = 1800.0) -> bool:
    """Join the process group torchrun describes in the environment, once.

    Args:
        device: ``"cpu"`` uses the gloo backend; ``"cuda"`` uses NCCL and selects the GPU
            ``LOCAL_RANK``.
        timeout_s: how long a collective waits for the other ranks.

    Returns:
        Whether this process is part of a group of two or more.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise AhclError(f"WORLD_SIZE is set but {', '.join(missing)} is not: launch with "
                        "torchrun (or set all of RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)")
    backend = "gloo"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AhclError("device 'cuda' asked for but no GPU is visible; use device 'cpu'")
        torch.cuda.set_device(local_rank())
        backend = "nccl"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return dist.get_world_size() > 1


def is_distributed() -> bool:
    """Whether a process group of two or more processes is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """Rank on this node (``LOCAL_RANK``; 0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def shard_slice(n: int, rank_: int | None = None, world: int | None = None) -> slice:
    """The contiguous rows ``[start, stop)`` of ``n`` that rank ``rank_`` owns (balanced: the
    first ``n mod world`` ranks get one more)."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return slice(start, start + base + (r < extra))


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_numpy(array: np.ndarray) -> np.ndarray:
    """Elementwise sum of ``array`` over all ranks (a new array; the input itself when alone).

    Sums of integers (and of float64 values that are exact, such as integer counts) do not depend
    on the reduction order; other float sums may differ in the last bits from a serial sum.
    """
    array = np.ascontiguousarray(array)
    if not is_distributed():
        return array
    tensor = torch.from_numpy(array.copy()).to(_comm_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (pickled), in rank order; ``[obj]`` when not distributed."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_numpy(array: np.ndarray, dst: int = 0) -> np.ndarray | None:
    """Concatenate every rank's rows (rank order) on ``dst``; ``None`` on the other ranks."""
    if not is_distributed():
        return array
    parts: list[Any] | None = [None] * world_size() if rank() == dst else None
    dist.gather_object(np.ascontiguousarray(array), parts, dst=dst)
    return np.concatenate(parts) if parts is not None else None


# ---------------------------------------------------------------------- sharded encoding
def list_image_files(root: str | os.PathLike) -> list[str]:
    """Absolute paths of the image files anywhere under ``root``, sorted (hidden entries skipped).

    Raises:
        AhclError: ``root`` is not a folder or holds no images.
    """
    from ahcl.data.images import IMAGE_EXTENSIONS

    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise AhclError(f"{root} is not a folder: pass the folder of images to encode")
    exts = tuple(e.lower() for e in IMAGE_EXTENSIONS)
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(folder, f) for f in files
                  if not f.startswith(".") and f.lower().endswith(exts)]
    if not found:
        raise AhclError(f"no image files under {root} (extensions: {', '.join(exts)})")
    return sorted(found)


def list_hash(paths: Sequence[str], salt: str = "") -> str:
    """First 16 hex of sha256 over ``salt`` and the paths (one per line): names a shard folder."""
    h = hashlib.sha256(salt.encode())
    for p in paths:
        h.update(b"\n" + os.fsencode(p))
    return h.hexdigest()[:16]


def _part_path(folder: Path, start: int, stop: int) -> Path:
    return folder / f"part-{start:010d}-{stop:010d}.npz"


def _read_part(path: Path, start: int, stop: int, width: int) -> np.ndarray | None:
    """The codes of a finished part, or ``None`` when it is missing or unusable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            codes = z["codes"]
            ok = (int(z["format"]) == SHARD_FORMAT and int(z["start"]) == start
                  and int(z["stop"]) == stop)
    except (OSError, ValueError, KeyError):
        return None
    if not ok or codes.dtype != np.uint8 or codes.shape != (stop - start, width):
        return None
    return codes


def encode_files_sharded(run: "Run", paths: Sequence[str], shard_dir: str | os.PathLike,
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
    folder = Path(shard_dir) / list_hash(paths, salt)
    folder.mkdir(parents=True, exist_ok=True)
    bounds = [(s, min(s + part_size, len(paths))) for s in range(0, len(paths), part_size)]
    mine = [b for i, b in enumerate(bounds) if i % world_size() == rank()]
    todo = [b for b in mine if _read_part(_part_path(folder, *b), *b, width) is None]
    for start, stop in progress(todo, total=len(todo), desc=f"encoding (rank {rank()})",
                                unit="part"):
        codes = run.encode(paths[start:stop])
        with atomic_write(_part_path(folder, start, stop)) as f:
            np.savez(f, codes=codes, start=np.int64(start), stop=np.int64(stop),
                     format=np.int64(SHARD_FORMAT))
    barrier()
    if rank() != 0:
        return None
    out = np.zeros((len(paths), width), np.uint8)
    for start, stop in bounds:
        codes = _read_part(_part_path(folder, start, stop), start, stop, width)
        if codes is None:
            raise AhclError(f"part {start}-{stop} of {folder} is missing after all ranks "
                            "finished; rerun the same command to encode it")
        out[start:stop] = codes
    return out
