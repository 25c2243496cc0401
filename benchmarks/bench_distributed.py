"""Scaling of the two distributed paths: 1 process vs 2 processes (torchrun, gloo, 127.0.0.1).

1. The database-code step (one sweep) for n = 4,000,000 items, 64 bits, K = 45 classes,
   |Ω| = 2,000: one process on all rows vs two ranks, each on its contiguous half of the rows,
   with ``UᵀU`` and ``R`` all-reduced (:func:`ahcl.methods.solver.code_step_shard`). The time
   counts the step and its all-reduce (barrier before and after), not the set-up.
2. Encoding throughput of new archive images with a trained run (``ahcl index build RUN
   --images DIR``): one process vs ``torchrun --nproc_per_node 2``, each with a fresh feature
   cache, wall time of the whole command (start-up, hashing, decoding, backbone, merge, save).

Thread settings are part of the result: ``1p×2t`` is one process with ``torch.set_num_threads(2)``
and ``OMP/MKL/OPENBLAS_NUM_THREADS=2``; ``1p×1t`` one process with one thread; ``2p×1t`` two
processes with one thread each. On a 2-core machine 2p×1t can at best halve the 1p×1t time, and
1p×2t is the fair single-process reference. The machine may be shared: compare ratios measured
in the same run, not absolute seconds across runs.

Usage::

    .venv/bin/python benchmarks/bench_distributed.py             # both parts (a few minutes)
    .venv/bin/python benchmarks/bench_distributed.py --quick     # n = 400,000, 96 images
    .venv/bin/python benchmarks/bench_distributed.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PY = sys.executable


def _env(threads: int, **extra: str) -> dict[str, str]:
    n = str(threads)
    return {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "NUMBA_NUM_THREADS": n, "AHCL_PROGRESS": "0", **extra}


def _torchrun(nproc: int) -> list[str]:
    return [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]


# ---------------------------------------------------------------------- code step worker
def code_step_worker(n: int, n_bits: int, n_classes: int, m: int, threads: int) -> None:
    """Time one sweep of the code step on this rank's rows; rank 0 prints JSON."""
    import torch

    from ahcl import distributed as dist
    from ahcl.methods.ahcl import initial_codes
    from ahcl.methods.solver import code_step_shard

    torch.set_num_threads(threads)
    dist.init_from_env()
    rows = dist.shard_slice(n)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, n_classes, n)  # the same on every rank (int64 n: 32 MB at 4M)
    omega = np.sort(rng.choice(n, m, replace=False))
    U = np.tanh(rng.standard_normal((m, n_bits))).astype(np.float32)
    V = initial_codes(n, n_bits, seed=0, rows=rows)  # only this rank's rows
    lo, hi = np.searchsorted(omega, [rows.start, rows.stop])
    reduce = dist.all_reduce_numpy if dist.is_distributed() else None
    dist.barrier()
    tic = time.perf_counter()
    code_step_shard(V, rows.start, U[lo:hi], omega[lo:hi], labels[rows], n_classes, 0.1, 200.0,
                    reduce)
    dist.barrier()
    seconds = time.perf_counter() - tic
    checksum = dist.all_reduce_numpy(np.array([int(np.count_nonzero(V > 0))], np.int64))
    if dist.rank() == 0:
        print(json.dumps({"seconds": seconds, "plus_bits": int(checksum[0]),
                          "rows_per_rank": rows.stop - rows.start}))


def _last_json(proc: subprocess.CompletedProcess) -> dict:
    if proc.returncode != 0:
        raise SystemExit(f"worker failed:\n{proc.stderr[-3000:]}")
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


SETTINGS = ("1p×1t", "1p×2t", "2p×1t")


def bench_code_step(n: int, n_bits: int, n_classes: int, m: int,
                    settings: tuple[str, ...] = SETTINGS) -> dict:
    script = [str(Path(__file__).resolve())]
    out = {}
    for name, cmd, threads in (("1p×1t", [PY] + script, 1), ("1p×2t", [PY] + script, 2),
                               ("2p×1t", _torchrun(2) + script, 1)):
        if name not in settings:
            continue
        # Worker settings go by environment: torchrun would take "--n..." as its own options.
        spec = json.dumps({"n": n, "n_bits": n_bits, "n_classes": n_classes, "m": m,
                           "threads": threads})
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env=_env(threads, AHCL_BENCH_WORKER=spec))
        out[name] = _last_json(proc)
        print(f"code step {name}: {out[name]['seconds']:.2f} s", file=sys.stderr)
    bits = {v["plus_bits"] for v in out.values()}
    if len(bits) > 1:  # float32 sums in another order may flip an exact tie; say so
        print(f"note: +1 bit counts differ across settings: {sorted(bits)}", file=sys.stderr)
    return out


# ---------------------------------------------------------------------- encoding
def bench_encoding(n_images: int, work: Path) -> dict:
    from ahcl.data.synthetic import write_synthetic_dataset

    train = write_synthetic_dataset(work / "train", per_class=6, size=64, seed=0,
                                    classes=["water", "forest", "farmland", "roads"])
    new = write_synthetic_dataset(work / "new", per_class=max(1, n_images // 4), size=64, seed=1,
                                  classes=["water", "forest", "farmland", "roads"])
    run = work / "run"
    # A random frozen MobileNetV2 (no download): backbone cost of a real archive per image.
    subprocess.run([PY, "-m", "ahcl", "train", "--data", str(train), "--out", str(run),
                    "--backbone", "mobilenet_v2", "--no-pretrained", "--bits", "64",
                    "--set", "outer_iters=1", "--set", "hidden=32",
                    "--set", "dropout=0"], check=True,
                   capture_output=True, env=_env(2, AHCL_CACHE=str(work / "cache-train")))
    n = sum(1 for _ in new.rglob("*.png"))
    out = {"images": n, "backbone": "mobilenet_v2 (random weights), 224 px input"}
    base = [str(run), "--images", str(new), "--part-size", "32"]
    for name, prefix, threads in (("1p×1t", [PY], 1), ("1p×2t", [PY], 2),
                                  ("2p×1t", _torchrun(2), 1)):
        cmd = prefix + ["-m", "ahcl", "index", "build", *base, "--out", str(work / f"{name}.idx")]
        env = _env(threads, AHCL_CACHE=str(work / f"cache-{name}"))  # no cache hits
        tic = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - tic
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        out[name] = {"seconds": seconds, "images_per_s": n / seconds}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 400,000 and 96 images")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--skip-encoding", action="store_true")
    parser.add_argument("--skip-code-step", action="store_true")
    parser.add_argument("--n", type=int, default=4_000_000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--classes", type=int, default=45)
    parser.add_argument("--m", type=int, default=2000)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--code-step-settings", default=",".join(SETTINGS),
                        help="which of 1p×1t,1p×2t,2p×1t to time for the code step "
                             "(1p×2t can be very slow on a busy machine: OpenBLAS threads spin)")
    if "AHCL_BENCH_WORKER" in os.environ:
        code_step_worker(**json.loads(os.environ["AHCL_BENCH_WORKER"]))
        return
    args = parser.parse_args()
    n = 400_000 if args.quick else args.n
    images = 96 if args.quick else args.images
    result = {"cpus": os.cpu_count(), "code_step": {"n": n, "n_bits": args.bits,
                                                    "classes": args.classes, "m": args.m}}
    settings = () if args.skip_code_step else tuple(args.code_step_settings.split(","))
    result["code_step"].update(bench_code_step(n, args.bits, args.classes, args.m, settings))
    if not args.skip_encoding:
        with tempfile.TemporaryDirectory() as tmp:
            result["encoding"] = bench_encoding(images, Path(tmp))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    cs = result["code_step"]
    ref = cs.get("1p×1t", {}).get("seconds", float("nan"))
    if settings:
        print(f"code step, one sweep: n={n:,} items, {args.bits} bits, K={args.classes}, "
              f"|Ω|={args.m}, {result['cpus']} CPUs")
    for name in (s for s in SETTINGS if s in cs):
        print(f"  {name}: {cs[name]['seconds']:8.2f} s   speed-up vs 1p×1t "
              f"{ref / cs[name]['seconds']:.2f}x")
    if "encoding" in result:
        enc = result["encoding"]
        print(f"encoding {enc['images']} new images, {enc['backbone']}, whole command:")
        for name in ("1p×1t", "1p×2t", "2p×1t"):
            print(f"  {name}: {enc[name]['seconds']:8.2f} s  {enc[name]['images_per_s']:7.1f} "
                  f"img/s   speed-up vs 1p×1t "
                  f"{enc['1p×1t']['seconds'] / enc[name]['seconds']:.2f}x")


if __name__ == "__main__":
    main()
