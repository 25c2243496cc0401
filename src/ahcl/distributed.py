"""Scale-out on ``torch.distributed``: process groups from torchrun and collectives on numpy arrays.

A low module (beside data, models, index and eval): methods call these collectives; the sharded
encoding of a run's images, which builds on them, is :mod:`ahcl.sharded`.

Launch any ``ahcl`` verb that supports it under torchrun; each process reads its place from the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``)::

    torchrun --nproc_per_node 2 -m ahcl train --data DIR --out RUN
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 \\
        --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m ahcl index build RUN --out INDEX --images DIR

Without those variables (or with ``WORLD_SIZE=1``) nothing is initialised and every helper here
acts as the identity of a one-process group, so library code calls them unconditionally.
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ahcl.errors import AhclError

__all__ = [
    "all_gather_object",
    "all_reduce_numpy",
    "barrier",
    "gather_numpy",
    "init_from_env",
    "is_distributed",
    "local_rank",
    "rank",
    "shard_slice",
    "world_size",
]


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
    if torch.cuda.is_available():  # each rank on its own GPU, whatever the backend
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AhclError("device 'cuda' asked for but no GPU is visible; use device 'cpu'")
        backend = "nccl"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    # Left to the interpreter's exit, gloo's worker threads can be torn down while still
    # joinable and the rank dies with SIGABRT ("terminate called without an active exception",
    # pytorch/pytorch#190489): leave the group while the interpreter is fully alive.
    atexit.register(_leave_group)
    return dist.get_world_size() > 1


def _leave_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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
