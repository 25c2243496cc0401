"""Benchmark of :class:`ahcl.index.HammingIndex` against faiss, measured side by side in one process.

    .venv/bin/python benchmarks/bench_index.py            # full sizes (several minutes)
    .venv/bin/python benchmarks/bench_index.py --quick    # smaller sizes
    .venv/bin/python benchmarks/bench_index.py --json     # machine-readable results

Sections: exact top-k vs ``faiss.IndexBinaryFlat`` (64-bit, 1 thread, k=100; 256-bit, 2 threads,
k=10 and k=1000) with result checks; multi-index hashing vs the flat scan on clustered codes;
appending to a saved index and saving again. Each time is the best of ``--repeat`` runs (the
machine may be shared). faiss is only imported here, never by the library.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ahcl.index import HammingIndex


def best_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def read_bandwidth(rng: np.random.Generator) -> float:
    """Single-thread streaming read bandwidth (bytes/s), numpy sum over 256 MB."""
    a = rng.integers(0, 2**62, size=32 * 2**20, dtype=np.uint64)
    t, _ = best_time(lambda: np.bitwise_xor.reduce(a), 2)
    return a.nbytes / t


def check_against_faiss(d: np.ndarray, i: np.ndarray, fd: np.ndarray, fi: np.ndarray) -> dict:
    """Distances equal; ids below the k-th distance equal as sets; ours sorted by (d, id)."""
    same_d = bool(np.array_equal(d, fd))
    same_ids = True
    for r in range(d.shape[0]):
        kth = d[r, -1]
        same_ids &= set(i[r][d[r] < kth].tolist()) == set(fi[r][fd[r] < kth].tolist())
    ordered = bool(np.all((np.diff(d, axis=1) > 0) | ((np.diff(d, axis=1) == 0)
                                                        & (np.diff(i, axis=1) > 0))))
    return {"distances_equal": same_d, "ids_below_kth_equal": bool(same_ids),
            "ours_ordered_by_distance_id": ordered}


def flat_vs_faiss(n: int, nq: int, n_bits: int, ks: list[int], threads: int, repeat: int,
                  rng: np.random.Generator) -> list[dict]:
    import faiss

    db = rng.integers(0, 256, size=(n, n_bits // 8), dtype=np.uint8)
    queries = rng.integers(0, 256, size=(nq, n_bits // 8), dtype=np.uint8)
    index = HammingIndex(n_bits, threads=threads)
    index.add(db)
    index.search(queries[:2], 2)  # compile / load the kernels outside the timing
    faiss.omp_set_num_threads(threads)
    reference = faiss.IndexBinaryFlat(n_bits)
    reference.add(db)
    rows = []
    for k in ks:
        ours_s, (d, i) = best_time(lambda: index.search(queries, k), repeat)
        faiss_s, (fd, fi) = best_time(lambda: reference.search(queries, k), repeat)
        words = (n_bits + 63) // 64
        rows.append({
            "case": f"flat n={n} nq={nq} n_bits={n_bits} k={k} threads={threads}",
            "ours_s": ours_s, "faiss_s": faiss_s, "speedup_vs_faiss": faiss_s / ours_s,
            "ours_queries_per_s": nq / ours_s, "faiss_queries_per_s": nq / faiss_s,
            "codes_scanned_per_s": n * nq / ours_s,
            "code_bytes_per_s": n * nq * n_bits / 8 / ours_s,
            "popcounts_per_s": n * nq * words / ours_s,
            **check_against_faiss(d, i, fd, fi),
        })
    return rows


def clustered_codes(n: int, n_bits: int, n_centres: int, flip: float,
                    rng: np.random.Generator) -> np.ndarray:
    """``uint8 (n, n_bits/8)`` codes: random centres with each bit flipped with prob ``flip``."""
    centres = rng.integers(0, 256, size=(n_centres, n_bits // 8), dtype=np.uint8)
    out = np.empty((n, n_bits // 8), dtype=np.uint8)
    for lo in range(0, n, 1_000_000):
        hi = min(n, lo + 1_000_000)
        noise = np.packbits(rng.random((hi - lo, n_bits)) < flip, axis=1, bitorder="little")
        out[lo:hi] = centres[rng.integers(0, n_centres, size=hi - lo)] ^ noise
    return out


def mih_vs_flat(n: int, nq: int, k: int, repeat: int, rng: np.random.Generator) -> dict:
    db = clustered_codes(n, 64, 1000, 0.05, rng)
    # queries: archive items with fresh bit flips (p = 0.05), so near a centre like the archive
    noise = np.packbits(rng.random((nq, 64)) < 0.05, axis=1, bitorder="little")
    queries = db[rng.integers(0, n, size=nq)] ^ noise
    flat = HammingIndex(64)
    flat.add(db)
    flat.search(queries[:2], k)
    nq_flat = min(nq, 100)
    flat_s, (fd, fi) = best_time(lambda: flat.search(queries[:nq_flat], k), repeat)
    mih = HammingIndex(64, mih=True)
    mih.add(db)
    build_s, _ = best_time(lambda: mih.build_mih(), 1)
    mih.search(queries[:2], k)
    mih_s, (md, mi) = best_time(lambda: mih.search(queries, k), repeat)
    per_flat, per_mih = flat_s / nq_flat, mih_s / nq
    return {
        "case": f"mih n={n} clustered (1000 centres, p=0.05) n_bits=64 k={k} nq={nq}",
        "flat_ms_per_query": 1e3 * per_flat, "mih_ms_per_query": 1e3 * per_mih,
        "speedup_vs_flat": per_flat / per_mih, "mih_build_s": build_s,
        "mih_memory_added_bytes": mih.mih_nbytes, "codes_bytes": db.nbytes,
        "identical_to_flat": bool(np.array_equal(fd, md[:nq_flat])
                                  and np.array_equal(fi, mi[:nq_flat])),
    }


def append_and_resave(base: int, extra: int, rng: np.random.Generator) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "archive.ahix"
        index = HammingIndex(64)
        index.add(rng.integers(0, 256, size=(base, 8), dtype=np.uint8),
                  labels=rng.integers(0, 10, size=base))
        index.save(path)
        new = rng.integers(0, 256, size=(extra, 8), dtype=np.uint8)
        labels = rng.integers(0, 10, size=extra)
        t = time.perf_counter()
        loaded = HammingIndex.load(path, mmap=True)
        loaded.add(new, labels=labels)
        loaded.save(path)
        seconds = time.perf_counter() - t
        ok = len(HammingIndex.load(path, verify=True)) == base + extra
    return {"case": f"load (mmap) + add {extra} + save, base {base} codes, 64-bit",
            "seconds": seconds, "codes_added_per_s": extra / seconds, "reloaded_ok": ok}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    n, nq = (200_000, 300) if args.quick else (1_000_000, 1000)
    results: dict[str, Any] = {"read_bandwidth_bytes_per_s_1thread": read_bandwidth(rng)}
    results["flat"] = flat_vs_faiss(n, nq, 64, [100], 1, args.repeat, rng)
    results["flat"] += flat_vs_faiss(n, nq, 256, [10, 1000], 2, args.repeat, rng)
    results["mih"] = mih_vs_flat(1_000_000 if args.quick else 10_000_000, 1000, 10,
                                 args.repeat, rng)
    results["append"] = append_and_resave(n, 1_000_000, rng)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return 0
    bw = results["read_bandwidth_bytes_per_s_1thread"]
    print(f"single-thread read bandwidth (numpy reduce): {bw / 1e9:.1f} GB/s")
    for r in results["flat"]:
        print(f"{r['case']}: ours {r['ours_s']:.3f} s, faiss {r['faiss_s']:.3f} s, "
              f"x{r['speedup_vs_faiss']:.2f} faiss | {r['codes_scanned_per_s'] / 1e9:.2f} G codes/s"
              f" = {r['code_bytes_per_s'] / 1e9:.1f} GB/s of codes"
              f" ({r['code_bytes_per_s'] / bw:.1f}x one thread's read bandwidth: tiles are reused"
              f" from cache, so popcounts bound it: {r['popcounts_per_s'] / 1e9:.2f} G popcounts/s)"
              f" | D equal {r['distances_equal']}, ids<kth equal {r['ids_below_kth_equal']},"
              f" (d,id) order {r['ours_ordered_by_distance_id']}")
    m = results["mih"]
    print(f"{m['case']}: flat {m['flat_ms_per_query']:.2f} ms/query, MIH "
          f"{m['mih_ms_per_query']:.3f} ms/query, x{m['speedup_vs_flat']:.1f}, identical "
          f"{m['identical_to_flat']}, build {m['mih_build_s']:.1f} s, memory added "
          f"{m['mih_memory_added_bytes'] / 1e6:.0f} MB (codes {m['codes_bytes'] / 1e6:.0f} MB)")
    a = results["append"]
    print(f"{a['case']}: {a['seconds']:.2f} s = {a['codes_added_per_s'] / 1e6:.2f} M codes/s, "
          f"reload ok {a['reloaded_ok']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
