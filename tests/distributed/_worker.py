"""Run by the tests under torchrun (2 ranks, gloo): ``_worker.py TASK OUT [ARGS...]``.

Tasks:
    collectives OUT SCENES   all-reduce, gather, the sharded code step, the feature cache with two
                             writers, and ADSH training; results saved under OUT for the test.
    kill-encode RANK N ARGS  ``ahcl ARGS`` where rank RANK SIGKILLs itself when it starts its
                             (N+1)-th part of encoding (a crash mid-way).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np


def code_step_inputs(seed: int = 3):
    """Shared inputs of the sharded code step (the same on every rank and in the test).

    ``U`` holds multiples of 1/8, so every float sum in the step is exact and its order cannot
    change a bit: the sharded result must equal the serial one exactly.
    """
    rng = np.random.default_rng(seed)
    n, c, K, m = 1000, 16, 5, 300
    labels = rng.integers(0, K, n)
    V = np.where(rng.random((n, c)) < 0.5, -1, 1).astype(np.int8)
    omega = np.sort(rng.choice(n, m, replace=False))
    U = (rng.integers(-8, 9, (m, c)) / 8).astype(np.float32)
    return dict(V=V, U=U, omega=omega, labels=labels, K=K, r=0.25, lam=2.0)


def collectives(out: Path, scenes: str) -> None:
    import ahcl
    from ahcl import distributed as dist
    from ahcl.methods.solver import code_step_shard, database_stats
    from ahcl.models.features import extract_features

    assert dist.init_from_env() and dist.world_size() == 2
    me = dist.rank()
    summed = dist.all_reduce_numpy(np.arange(4, dtype=np.int64) * (me + 1))
    gathered = dist.gather_numpy(np.full((me + 1, 2), me, np.int32))
    if me == 0:
        np.save(out / "all_reduce.npy", summed)
        np.save(out / "gathered.npy", gathered)

    x = code_step_inputs()
    rows = dist.shard_slice(len(x["labels"]))
    lo, hi = np.searchsorted(x["omega"], [rows.start, rows.stop])
    for dtype in (np.float32, np.float64):
        V = x["V"][rows].copy()
        _, M, R = code_step_shard(V, rows.start, x["U"][lo:hi], x["omega"][lo:hi],
                                  x["labels"][rows], x["K"], x["r"], x["lam"],
                                  dist.all_reduce_numpy, sweeps=2, dtype=dtype)
        V_all = dist.gather_numpy(V)
        if me == 0:
            np.savez(out / f"code_step_{np.dtype(dtype).name}.npz", V=V_all, M=M, R=R)
    stats = database_stats(x["V"][rows], x["labels"][rows], x["K"], reduce=dist.all_reduce_numpy)
    if me == 0:
        np.savez(out / "db_stats.npz", gram=stats.gram, class_sums=stats.class_sums,
                 total=stats.total, class_counts=stats.class_counts)

    # Both ranks extract the same images into one cache at once (the same keys, two writers).
    paths = sorted(str(p) for p in Path(scenes).rglob("*.png"))
    feats = extract_features(paths, "tiny_cnn", pretrained=False, cache_dir=out / "cache",
                             batch_size=8)
    dist.barrier()
    np.save(out / f"features-{me}.npy", feats)

    ahcl.train(out / "adsh", data=scenes, method="adsh", backbone="tiny_cnn", n_bits=16,
               outer_iters=3, hidden=32, similarity="hard", num_samples=40, batch_size=12,
               dropout=0.0)


def kill_encode(victim: int, after: int, argv: list[str]) -> int:
    from ahcl.cli import main
    from ahcl.run import Run

    original = Run.encode
    calls = {"n": 0}

    def encode(self, paths):
        if int(os.environ["RANK"]) == victim and calls["n"] == after:
            os.kill(os.getpid(), signal.SIGKILL)
        calls["n"] += 1
        return original(self, paths)

    Run.encode = encode
    return main(argv)


if __name__ == "__main__":
    task = sys.argv[1]
    if task == "collectives":
        collectives(Path(sys.argv[2]), sys.argv[3])
    elif task == "kill-encode":
        sys.exit(kill_encode(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]))
    else:
        sys.exit(f"unknown task {task}")
