"""Benchmark ``ahcl.eval.evaluate`` against the evaluation copied across deep-hashing repos.

Data: NWPU-RESISC45 scale by default (9,450 queries x 22,050 database items, 64 bits, 45
classes), seeded. Each class has a random centre code and every bit of an item's code is flipped
with probability ``--flip``, so codes are correlated with labels and the metrics are non-trivial.

Reference (the habit of DPSH/HashNet/DeepHash-style ``CalcMap``/``CalcTopMap``/``pr_curve``):
per query, Hamming distances as ``0.5 * (B - q @ D.T)`` in float32 from ±1 codes, relevance from
one-hot labels by a dot product, a full ``np.argsort`` (quicksort) per query, AP and AP@k by
cumsum, and the PR curve from per-query distance counts (``np.bincount``), so the reference
computes the same report (mAP, mAP@k, PR curve, precision within radius 2). It and ours are
timed in the same process, alternating (``--repeat`` runs of ours, ``--ref-repeat`` of it).

Agreement checks, all in the same run on the same data:

* The reference's quicksort orders items at equal distance arbitrarily, so its mAP differs from
  any fixed tie rule. Run with ``kind="stable"`` on the first ``--check`` queries, the same
  reference code must equal our ``map`` (ties by database index) to 1e-9: that is the exact check.
* On all queries we print |reference mAP - our map| and |reference mAP - our map_tie_aware|;
  the tie-aware value is the expectation over random tie orders, so it is the fair target for an
  arbitrary-tie reference (the gap is a few 1e-4 at 64 bits, larger at fewer bits).
* The reference PR curve uses our conventions (empty retrieval has precision 0, every query
  counts), so it must match ours to 1e-9.

Memory: ``our_peak_mb`` is the tracemalloc peak during one ``evaluate`` call (numpy registers its
array allocations with tracemalloc, so this is the numpy + Python working memory of the call, not
counting the inputs); ``our_rss_delta_mb`` is the growth of the process's peak RSS (ru_maxrss)
across our first timed run, after a warm-up call (so loading the compiled kernels is not
counted) and before the reference runs; it includes the numba kernels' scratch.

Usage::

    .venv/bin/python benchmarks/bench_eval.py            # full size, human-readable
    .venv/bin/python benchmarks/bench_eval.py --json     # same figures as JSON
    .venv/bin/python benchmarks/bench_eval.py --quick    # 1,000 x 4,000, a few seconds
    .venv/bin/python benchmarks/bench_eval.py --isa avx2 # as on a CPU without AVX-512

``--isa avx2`` re-runs the script with numba compiling for a CPU without AVX-512, as
``benchmarks/bench_index.py --isa avx2`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc

import numba
import numpy as np

from ahcl.eval import evaluate
from ahcl.index import simd
from bench_index import avx2_environment


def make_data(nq: int, n: int, n_bits: int, n_classes: int, flip: float,
              seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """±1 ``int8`` codes near a per-class centre, and integer labels, for queries and database."""
    rng = np.random.default_rng(seed)
    centres = rng.choice(np.array([-1, 1], dtype=np.int8), size=(n_classes, n_bits))
    labels = rng.integers(0, n_classes, nq + n)
    flips = rng.random((nq + n, n_bits)) < flip
    codes = np.where(flips, -centres[labels], centres[labels]).astype(np.int8)
    return codes[:nq], labels[:nq], codes[nq:], labels[nq:]


def reference(q_pm1: np.ndarray, db_pm1: np.ndarray, q_onehot: np.ndarray,
              db_onehot: np.ndarray, topk: int, kind: str = "quicksort"
              ) -> tuple[float, float, np.ndarray, np.ndarray]:
    """mAP, mAP@topk and the PR curve the way deep-hashing repos compute them: per query, a
    float32 inner product for the distances, one ``argsort`` for the ranking."""
    n_bits = q_pm1.shape[1]
    qb, db = q_pm1.astype(np.float32), db_pm1.astype(np.float32)
    total = total_top = 0.0
    precision, recall = np.zeros(n_bits + 1), np.zeros(n_bits + 1)
    ranks = np.arange(1, db.shape[0] + 1)
    for i in range(len(qb)):
        gnd = (q_onehot[i] @ db_onehot.T > 0).astype(np.float32)
        hamm = 0.5 * (n_bits - qb[i] @ db.T)
        tsum = gnd.sum()
        # PR curve: items and relevant items within each radius (empty retrieval: precision 0)
        level = np.rint(hamm).astype(np.int64)
        n_ret = np.cumsum(np.bincount(level, minlength=n_bits + 1))
        hits = np.cumsum(np.bincount(level, weights=gnd, minlength=n_bits + 1))
        precision += np.where(n_ret > 0, hits / np.maximum(n_ret, 1), 0.0)
        recall += hits / max(tsum, 1.0)
        if tsum == 0:
            continue
        gnd = gnd[np.argsort(hamm, kind=kind)]
        prec = np.cumsum(gnd) / ranks
        total += float(np.sum(prec * gnd) / tsum)
        top = gnd[:topk]
        if top.sum() > 0:
            total_top += float(np.sum(prec[:topk] * top) / top.sum())
    nq = len(qb)
    return total / nq, total_top / nq, precision / nq, recall / nq


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run(args: argparse.Namespace) -> dict:
    q, ql, db, dl = make_data(args.nq, args.n, args.bits, args.classes, args.flip, args.seed)
    eye = np.eye(args.classes, dtype=np.float32)
    q_hot, db_hot = eye[ql], eye[dl]
    evaluate(q[:8], ql[:8], db, dl, topk=(args.topk,))  # load the compiled kernels
    rss_before = peak_rss_mb()
    times, ref_times = [], []
    for r in range(max(args.repeat, args.ref_repeat)):  # ours and the reference, alternating
        if r < args.repeat:
            t0 = time.perf_counter()
            report = evaluate(q, ql, db, dl, topk=(args.topk,))
            times.append(time.perf_counter() - t0)
        if r == 0:
            rss_delta = peak_rss_mb() - rss_before
            tracemalloc.start()
            evaluate(q, ql, db, dl, topk=(args.topk,))
            peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        if r < args.ref_repeat:
            t0 = time.perf_counter()
            ref_map, ref_map_top, ref_p, ref_r = reference(q, db, q_hot, db_hot, args.topk)
            ref_times.append(time.perf_counter() - t0)

    m = min(args.check, args.nq)
    stable_map, stable_top, _, _ = reference(q[:m], db, q_hot[:m], db_hot, args.topk, "stable")
    sub = evaluate(q[:m], ql[:m], db, dl, topk=(args.topk,))
    ours, ref_time = min(times), min(ref_times)
    return {
        "cpu": simd.cpu_summary(), "threads": numba.get_num_threads(),
        "n_queries": args.nq, "n_db": args.n, "n_bits": args.bits, "n_classes": args.classes,
        "our_time_s": ours, "our_times_s": times, "our_median_s": statistics.median(times),
        "our_peak_mb": peak_mb, "our_rss_delta_mb": rss_delta,
        "reference": "per-query float32 matmul + argsort (+ bincount PR curve)",
        "reference_time_s": ref_time, "reference_times_s": ref_times,
        "reference_median_s": statistics.median(ref_times), "speedup": ref_time / ours,
        "speedup_median": statistics.median(ref_times) / statistics.median(times),
        "map": report.map, "map_tie_aware": report.map_tie_aware,
        f"map_at_{args.topk}": report.map_at[args.topk],
        "reference_map_quicksort": ref_map, f"reference_map_at_{args.topk}": ref_map_top,
        "abs_diff_ref_vs_map": abs(ref_map - report.map),
        "abs_diff_ref_vs_tie_aware": abs(ref_map - report.map_tie_aware),
        "abs_diff_ref_vs_map_at": abs(ref_map_top - report.map_at[args.topk]),
        "stable_check_queries": m,
        "stable_check_map_diff": abs(stable_map - sub.map),
        "stable_check_map_at_diff": abs(stable_top - sub.map_at[args.topk]),
        "pr_curve_max_diff": float(max(np.abs(ref_p - report.pr_curve.precision).max(),
                                       np.abs(ref_r - report.pr_curve.recall).max())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 queries x 4,000 items")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--nq", type=int, default=9450)
    parser.add_argument("--n", type=int, default=22050)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--classes", type=int, default=45)
    parser.add_argument("--flip", type=float, default=0.2)
    parser.add_argument("--topk", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of ours")
    parser.add_argument("--ref-repeat", type=int, default=2, help="timed runs of the reference")
    parser.add_argument("--check", type=int, default=300, help="queries for the exact check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--isa", choices=["native", "avx2"], default="native",
                        help="avx2: run as on a CPU without AVX-512 (a child process)")
    args = parser.parse_args(argv)
    if args.isa == "avx2":
        child = [a for a in (argv if argv is not None else sys.argv[1:])
                 if a not in ("--isa", "avx2", "--isa=avx2")]
        return subprocess.run([sys.executable, __file__, *child],
                              env=avx2_environment()).returncode
    if args.quick:
        args.nq, args.n = 1000, 4000
    res = run(args)
    ok = (res["stable_check_map_diff"] < 1e-9 and res["stable_check_map_at_diff"] < 1e-9
          and res["pr_curve_max_diff"] < 1e-9)
    res["agreement_ok"] = ok
    if args.json:
        print(json.dumps(res, indent=2))
        return 0 if ok else 1
    cpu = res["cpu"]
    print(f"cpu: {cpu['model']} ({os.cpu_count()} CPUs, numba target {cpu['target_cpu']}, "
          f"SIMD {' '.join(cpu['simd'])}), {res['threads']} threads")
    print(f"data: {res['n_queries']} queries x {res['n_db']} db, {res['n_bits']} bits, "
          f"{res['n_classes']} classes")
    print(f"ours:      {res['our_time_s']:.3f} s (best of {len(res['our_times_s'])}, median "
          f"{res['our_median_s']:.3f} s), peak {res['our_peak_mb']:.1f} MB (tracemalloc), "
          f"peak RSS +{res['our_rss_delta_mb']:.1f} MB")
    print(f"reference ({res['reference']}): {res['reference_time_s']:.3f} s (best of "
          f"{len(res['reference_times_s'])}, median {res['reference_median_s']:.3f} s)   ratio: "
          f"{res['speedup']:.1f}x faster (medians: {res['speedup_median']:.1f}x)")
    print(f"mAP ours {res['map']:.6f}  tie-aware {res['map_tie_aware']:.6f}  reference "
          f"(quicksort ties) {res['reference_map_quicksort']:.6f}")
    print(f"|ref - map| {res['abs_diff_ref_vs_map']:.2e}  |ref - tie-aware| "
          f"{res['abs_diff_ref_vs_tie_aware']:.2e}  |ref - map@{args.topk}| "
          f"{res['abs_diff_ref_vs_map_at']:.2e}")
    print(f"exact check on {res['stable_check_queries']} queries (reference with a stable sort): "
          f"map diff {res['stable_check_map_diff']:.1e}, map@{args.topk} diff "
          f"{res['stable_check_map_at_diff']:.1e}; PR curve max diff "
          f"{res['pr_curve_max_diff']:.1e}")
    print("agreement:", "OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
