"""How AHCL's two steps scale with the database size n, against the dense formulation.

Synthetic labels (K = 45), 64 bits, |Ω| = m = 2000 sampled rows, random ±1 codes and tanh
outputs. Measures:

* the database-code step (one sweep over all bits) at n = 1,000,000: time and peak memory of the
  scalable form (per-class sums, row chunks; no m×n matrix);
* the network step's time per sample (loss + backward on a mini-batch of 64) for n = 10k, 100k, 1M,
  and the once-per-iteration statistics (VᵀV, per-class sums);
* the same for the dense formulation of the authors' code (S as an m×n matrix, u·Vᵀ per batch)
  where it fits in memory, and the ratio.

Peak memory is tracemalloc's peak of numpy/torch-CPU allocations made inside the measured call
(numpy reports to tracemalloc; torch's CPU allocator does not, so torch tensors are small here).

    python benchmarks/bench_scale.py [--n 1000000] [--bits 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc

import numpy as np
import torch

from ahcl.methods.solver import code_step, database_stats, dissimilar_weight, pairwise_loss

K = 45
M_SAMPLES = 2000
BATCH = 64


def problem(n: int, c: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    V = np.where(rng.random((n, c), dtype=np.float32) < 0.5, -1, 1).astype(np.int8)
    omega = np.sort(rng.choice(n, M_SAMPLES, replace=False))
    U = np.tanh(rng.normal(size=(M_SAMPLES, c)).astype(np.float32))
    return labels, V, omega, U


def measure(fn):
    tracemalloc.start()
    tic = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - tic
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak / 2**20


def dense_code_step(V, U, omega, labels, r, lam):
    """The authors' form: S is a dense m×n matrix and Q = −2c SᵀU − 2λŪ is n×c."""
    n, c = V.shape
    S = np.where(labels[omega][:, None] == labels[None, :], 1.0, -r).astype(np.float32)
    ubar = np.zeros((n, c), np.float32)
    ubar[omega] = U
    Q = -2 * c * (S.T @ U) - 2 * lam * ubar
    B = V.astype(np.float32)
    M = U.T @ U
    for k in range(c):
        x = Q[:, k] + 2 * (B @ M[:, k] - B[:, k] * M[k, k])
        B[:, k] = np.where(x >= 0, -1.0, 1.0)
    return B.astype(np.int8)


def network_step_time(V, labels, omega, r, c, dense: bool, batches: int = 20) -> float:
    """Seconds per sample of loss + backward on mini-batches (statistics excluded)."""
    rng = np.random.default_rng(1)
    stats = None if dense else database_stats(V, labels, K)
    Vt = torch.from_numpy(V.astype(np.float32)) if dense else None
    lab_t = torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(1)
    tic = 0.0
    for i in range(batches + 3):  # the first 3 batches warm up and are not timed
        if i == 3:
            tic = time.perf_counter()
        idx = rng.choice(omega, BATCH, replace=False)
        u = torch.tanh(torch.randn(BATCH, c, generator=gen, requires_grad=True))
        y = torch.from_numpy(labels[idx])
        if dense:
            S = torch.where(y[:, None] == lab_t[None, :], 1.0, -r)
            loss = ((u @ Vt.T - c * S) ** 2).sum()
        else:
            loss = pairwise_loss(u, y, stats, r, c)
        loss.backward()
    return (time.perf_counter() - tic) / (batches * BATCH)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--dense-max-n", type=int, default=100_000,
                    help="largest n for the dense formulation (memory)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    c = args.bits
    result: dict = {"bits": c, "K": K, "m": M_SAMPLES, "torch_threads": torch.get_num_threads()}

    labels, V, omega, U = problem(args.n, c)
    r = dissimilar_weight(labels[omega], np.bincount(labels, minlength=K), "soft")
    head = omega < 10000
    code_step(V[:10000].copy(), U[head], omega[head], labels[:10000], K, r, 200.0)  # warm-up
    _, sec, peak = measure(lambda: code_step(V, U, omega, labels, K, r, 200.0))
    result["code_step"] = {"n": args.n, "seconds": sec, "peak_mb": peak,
                           "codes_mb": V.nbytes / 2**20}
    print(f"code step, n={args.n:,}, {c} bits: {sec:.2f} s, peak {peak:.0f} MB "
          f"(V itself {V.nbytes / 2**20:.0f} MB)", file=sys.stderr)

    rows = []
    for n in (10_000, 100_000, args.n):
        lab, Vn, om, Un = problem(n, c, seed=2)
        rn = dissimilar_weight(lab[om], np.bincount(lab, minlength=K), "soft")
        _, stats_s, _ = measure(lambda: database_stats(Vn, lab, K))
        row = {"n": n, "fast_per_sample_us": network_step_time(Vn, lab, om, rn, c, False) * 1e6,
               "stats_s": stats_s}
        if n <= args.dense_max_n:
            row["dense_per_sample_us"] = network_step_time(Vn, lab, om, rn, c, True) * 1e6
            _, row["dense_code_step_s"], row["dense_code_step_peak_mb"] = measure(
                lambda: dense_code_step(Vn.copy(), Un, om, lab, rn, 200.0))
            _, row["fast_code_step_s"], row["fast_code_step_peak_mb"] = measure(
                lambda: code_step(Vn.copy(), Un, om, lab, K, rn, 200.0))
        rows.append(row)
        msg = (f"n={n:>9,}: network step {row['fast_per_sample_us']:.1f} us/sample "
               f"(+ {row['stats_s'] * 1e3:.0f} ms statistics per iteration)")
        if "dense_per_sample_us" in row:
            msg += (f"; dense {row['dense_per_sample_us']:.1f} us/sample "
                    f"({row['dense_per_sample_us'] / row['fast_per_sample_us']:.0f}x); code step "
                    f"fast {row['fast_code_step_s']:.2f} s / {row['fast_code_step_peak_mb']:.0f} MB"
                    f" vs dense {row['dense_code_step_s']:.2f} s / "
                    f"{row['dense_code_step_peak_mb']:.0f} MB")
        print(msg, file=sys.stderr)
    result["network_step"] = rows
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
