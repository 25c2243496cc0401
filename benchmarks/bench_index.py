"""Benchmark of :class:`ahcl.index.HammingIndex` against faiss, measured side by side in one process.

    .venv/bin/python benchmarks/bench_index.py             # full sizes (several minutes)
    .venv/bin/python benchmarks/bench_index.py --quick     # smaller sizes
    .venv/bin/python benchmarks/bench_index.py --json      # machine-readable results
    .venv/bin/python benchmarks/bench_index.py --paths all # every kernel path, not only the chosen
    .venv/bin/python benchmarks/bench_index.py --isa avx2  # as on a CPU without AVX-512 (see below)

Prints the CPU (model, the SIMD features numba compiles for) and, per case, the kernel path that
ran (:mod:`ahcl.index.simd`). Sections: exact top-k vs ``faiss.IndexBinaryFlat`` over 1M random
codes (16, 32, 64, 128 bits, k = 100, 1 thread; 256 bits, k = 10 and 1000, 2 threads), with
result checks; range search (radius 0, 1, 2) vs faiss; a split index (64 bits: 16 semantic +
48 instance, ordered by (semantic, instance, id)) beside the plain 64-bit search and faiss on the
same codes; multi-index hashing vs the flat scan on clustered codes; appending to a saved index
and saving again. Ours and faiss alternate,
``--repeat`` times each; best and median are reported (the machine may be shared).

Throughput is set against a popcount limit measured here: XOR + popcount of 64-bit words held in
L1 by one thread, vectorised by LLVM for this CPU (VPOPCNTQ with AVX-512, a nibble lookup with
AVX2), in 64-bit words per second; a scan of ``W``-word codes can reach at most that over ``W``
codes per second and thread by popcounting (the ``avx2`` path does not popcount: it counts bit
planes, and can pass the limit on short codes).

``--isa avx2`` re-runs this script with numba compiling for a Zen 2 CPU without AVX-512
(``NUMBA_CPU_NAME=znver2``, ``NUMBA_CPU_FEATURES`` = this CPU's minus AVX-512) and faiss on its
AVX2 code (``FAISS_SIMD_LEVEL=AVX2``): both sides then run the instructions an AVX2-only CPU has,
on this CPU's cores. faiss is only imported here, never by the library.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numba
import numpy as np
from llvmlite import binding as llvm
from numba import njit

from ahcl.index import HammingIndex, simd
from ahcl.index.intrinsics import popcount64


def side_by_side(fns: dict[str, Callable[[], Any]], repeat: int) -> tuple[dict, dict]:
    """Run each function ``repeat`` times, alternating; returns ``({name: [seconds]}, {name:
    last result})``."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    out: dict[str, Any] = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - t)
    return times, out


@njit(nogil=True)
def _xor_popcount(words, q, rounds):
    s = np.uint64(0)
    for _ in range(rounds):
        for j in range(words.shape[0]):
            s += popcount64(words[j] ^ q)
        q += np.uint64(1)
    return s


def popcount_limit(rng: np.random.Generator) -> float:
    """64-bit words XORed and popcounted per second by one thread, on 16 KB in L1."""
    words = rng.integers(0, 2**63, size=2048, dtype=np.uint64)
    _xor_popcount(words, np.uint64(1), 1)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        _xor_popcount(words, np.uint64(1), 20000)
        best = min(best, time.perf_counter() - t)
    return words.shape[0] * 20000 / best


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


def _timed(index: HammingIndex, path: str, fn: Callable[[HammingIndex], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with simd.use_path(path):
            return fn(index)
    return run


def flat_vs_faiss(n: int, nq: int, n_bits: int, ks: list[int], threads: int, paths: list[str],
                  repeat: int, limit: float, rng: np.random.Generator) -> list[dict]:
    import faiss

    db = rng.integers(0, 256, size=(n, n_bits // 8), dtype=np.uint8)
    queries = rng.integers(0, 256, size=(nq, n_bits // 8), dtype=np.uint8)
    index = HammingIndex(n_bits, threads=threads)
    index.add(db)
    chosen = simd.current_path(n_bits)
    paths = [chosen] if paths == ["chosen"] else paths
    faiss.omp_set_num_threads(threads)
    reference = faiss.IndexBinaryFlat(n_bits)
    reference.add(db)
    words = (n_bits + 63) // 64
    rows = []
    for k in ks:
        fns = {p: _timed(index, p, lambda ix: ix.search(queries, k)) for p in paths}
        fns["faiss"] = lambda: reference.search(queries, k)
        for fn in fns.values():  # compile / load the kernels, build the bit planes
            with simd.use_path(paths[0]):
                fn()
        times, out = side_by_side(fns, repeat)
        fd, fi = out["faiss"]
        faiss_s = min(times["faiss"])
        for p in paths:
            ours_s = min(times[p])
            d, i = out[p]
            rows.append({
                "case": f"flat n={n} nq={nq} n_bits={n_bits} k={k} threads={threads}",
                "path": p, "chosen_path": chosen, "ours_s": ours_s, "faiss_s": faiss_s,
                "ours_median_s": statistics.median(times[p]),
                "faiss_median_s": statistics.median(times["faiss"]),
                "speedup_vs_faiss": faiss_s / ours_s,
                "speedup_of_medians": statistics.median(times["faiss"])
                / statistics.median(times[p]),
                "codes_per_s_per_thread": n * nq / ours_s / threads,
                "popcount_limit_codes_per_s_per_thread": limit / words,
                "share_of_popcount_limit": n * nq / ours_s / threads / (limit / words),
                "faiss_simd_level": faiss.SIMDConfig.get_level_name(),
                **check_against_faiss(d, i, fd, fi),
            })
    return rows


def range_vs_faiss(n: int, nq: int, radii: list[int], repeat: int,
                   rng: np.random.Generator) -> list[dict]:
    """64-bit range search; queries are database codes with 0-2 bits flipped, so there are hits."""
    import faiss

    db = rng.integers(0, 256, size=(n, 8), dtype=np.uint8)
    flips = np.packbits(rng.random((nq, 64)) < 1.5 / 64, axis=1, bitorder="little")
    queries = db[rng.integers(0, n, size=nq)] ^ flips
    index = HammingIndex(64, threads=1)
    index.add(db)
    faiss.omp_set_num_threads(1)
    reference = faiss.IndexBinaryFlat(64)
    reference.add(db)
    path = simd.current_path(64)
    rows = []
    for radius in radii:
        fns = {"ours": lambda: index.range_search(queries, radius),
               # faiss counts distance < radius
               "faiss": lambda: reference.range_search(queries, radius + 1)}
        for fn in fns.values():
            fn()
        times, out = side_by_side(fns, repeat)
        (lims, d, i), (flims, fd, fi) = out["ours"], out["faiss"]
        same = bool(np.array_equal(lims, flims)) and all(
            sorted(zip(fd[a:b].tolist(), fi[a:b].tolist())) == list(zip(d[a:b].tolist(),
                                                                         i[a:b].tolist()))
            for a, b in zip(lims[:-1], lims[1:]))
        rows.append({"case": f"range n={n} nq={nq} n_bits=64 radius={radius} threads=1",
                     "path": path, "ours_s": min(times["ours"]), "faiss_s": min(times["faiss"]),
                     "speedup_vs_faiss": min(times["faiss"]) / min(times["ours"]),
                     "results": int(lims[-1]), "identical_to_faiss": same})
    return rows


def lexicographic_vs_plain(n: int, nq: int, k: int, repeat: int,
                           rng: np.random.Generator) -> dict:
    """Split 64-bit codes (16 semantic bits from 10 class codes, so ties are huge, then 48 random
    instance bits) searched by (semantic, instance, id), beside the plain 64-bit search and faiss
    on the same codes (1 thread). Queries: a class code and fresh instance bits."""
    classes = rng.integers(0, 256, size=(10, 2), dtype=np.uint8)

    def codes(m: int) -> np.ndarray:
        return np.ascontiguousarray(np.concatenate(
            [classes[rng.integers(0, 10, size=m)],
             rng.integers(0, 256, size=(m, 6), dtype=np.uint8)], axis=1))

    db, queries = codes(n), codes(nq)
    split, plain = HammingIndex(64, semantic_bits=16, threads=1), HammingIndex(64, threads=1)
    split.add(db)
    plain.add(db)
    fns: dict[str, Callable[[], Any]] = {"split": lambda: split.search_split(queries, k),
                                         "plain": lambda: plain.search(queries, k)}
    faiss_level = None
    try:
        import faiss
    except ImportError:
        pass
    else:
        faiss.omp_set_num_threads(1)
        reference = faiss.IndexBinaryFlat(64)
        reference.add(db)
        fns["faiss"] = lambda: reference.search(queries, k)
        faiss_level = faiss.SIMDConfig.get_level_name()
    for fn in fns.values():
        fn()
    times, out = side_by_side(fns, repeat)
    best = {name: min(t) for name, t in times.items()}
    ds, di, i = out["split"]
    # check: a brute-force (semantic, instance, id) top-k of the first queries
    ok = True
    for r in range(min(nq, 5)):
        x = np.bitwise_count(queries[r] ^ db)
        s_d, i_d = x[:, :2].sum(axis=1), x[:, 2:].sum(axis=1)
        order = np.lexsort((np.arange(n), i_d, s_d))[:k]
        ok &= bool(np.array_equal(i[r], order) and np.array_equal(ds[r], s_d[order])
                   and np.array_equal(di[r], i_d[order]))
    row = {"case": f"split n={n} nq={nq} n_bits=64 (16 semantic + 48 instance, 10 class codes) "
                   f"k={k} threads=1", "path": simd.current_path(64),
           "split_s": best["split"], "plain_s": best["plain"],
           "split_time_over_plain": best["split"] / best["plain"], "exact_on_5_queries": ok}
    if "faiss" in best:
        row.update(faiss_s=best["faiss"], split_speedup_vs_faiss=best["faiss"] / best["split"],
                   plain_speedup_vs_faiss=best["faiss"] / best["plain"],
                   faiss_simd_level=faiss_level)
    return row


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
    mih = HammingIndex(64, mih=True)
    mih.add(db)
    t = time.perf_counter()
    mih.build_mih()
    build_s = time.perf_counter() - t
    mih.search(queries[:2], k)
    times, out = side_by_side({"flat": lambda: flat.search(queries[:nq_flat], k),
                               "mih": lambda: mih.search(queries, k)}, repeat)
    (fd, fi), (md, mi) = out["flat"], out["mih"]
    per_flat, per_mih = min(times["flat"]) / nq_flat, min(times["mih"]) / nq
    return {
        "case": f"mih n={n} clustered (1000 centres, p=0.05) n_bits=64 k={k} nq={nq}",
        "flat_path": simd.current_path(64),
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


def avx2_environment() -> dict[str, str]:
    """Environment for a child run as on an AVX2-only CPU (see the module docstring)."""
    features = llvm.get_host_cpu_features().flatten().split(",")
    off = ("avx512", "amx", "avx10", "avxvnni")
    masked = [("-" + f[1:]) if f.startswith("+") and (f[1:].startswith(off) or f[1:] in (
        "gfni", "vaes", "vpclmulqdq", "evex512")) else f for f in features]
    return {**os.environ, "NUMBA_CPU_NAME": "znver2", "NUMBA_CPU_FEATURES": ",".join(masked),
            "FAISS_SIMD_LEVEL": "AVX2"}


def print_results(results: dict[str, Any]) -> None:
    cpu = results["cpu"]
    print(f"cpu: {cpu['model']} ({os.cpu_count()} CPUs), numba target {cpu['target_cpu']}, SIMD "
          f"{' '.join(cpu['simd'])}; kernel path chosen: {cpu['best_path']} (codes of 32 bits or "
          f"fewer: {cpu['best_path_short']})")
    limit = results["popcount_limit_words_per_s_1thread"]
    print(f"popcount limit (XOR + popcount of 64-bit words in L1, one thread): "
          f"{limit / 1e9:.2f} G words/s")
    for r in results["flat"]:
        print(f"{r['case']} [{r['path']}{'' if r['path'] == r['chosen_path'] else ', forced'}]: "
              f"ours {r['ours_s']:.3f} s, faiss ({r['faiss_simd_level']}) {r['faiss_s']:.3f} s, "
              f"x{r['speedup_vs_faiss']:.2f} (medians x{r['speedup_of_medians']:.2f}) | "
              f"{r['codes_per_s_per_thread'] / 1e9:.2f} G codes/s/thread = "
              f"{r['share_of_popcount_limit']:.2f}x the popcount limit | D equal "
              f"{r['distances_equal']}, ids<kth equal {r['ids_below_kth_equal']}, (d,id) order "
              f"{r['ours_ordered_by_distance_id']}")
    for r in results["range"]:
        print(f"{r['case']} [{r['path']}]: ours {r['ours_s']:.3f} s, faiss {r['faiss_s']:.3f} s, "
              f"x{r['speedup_vs_faiss']:.2f}, {r['results']} results, identical "
              f"{r['identical_to_faiss']}")
    if "lexicographic" in results:
        r = results["lexicographic"]
        line = (f"{r['case']} [{r['path']}]: split (semantic, instance, id) {r['split_s']:.3f} s, "
                f"plain 64-bit {r['plain_s']:.3f} s (split takes x{r['split_time_over_plain']:.2f} "
                f"the time)")
        if "faiss_s" in r:
            line += (f", faiss ({r['faiss_simd_level']}) {r['faiss_s']:.3f} s: split "
                     f"x{r['split_speedup_vs_faiss']:.2f}, plain x{r['plain_speedup_vs_faiss']:.2f}"
                     f" faster")
        print(line + f" | exact on 5 queries {r['exact_on_5_queries']}")
    if "mih" in results:
        m = results["mih"]
        print(f"{m['case']}: flat [{m['flat_path']}] {m['flat_ms_per_query']:.3f} ms/query, MIH "
              f"{m['mih_ms_per_query']:.3f} ms/query, x{m['speedup_vs_flat']:.1f}, identical "
              f"{m['identical_to_flat']}, build {m['mih_build_s']:.1f} s, memory added "
              f"{m['mih_memory_added_bytes'] / 1e6:.0f} MB (codes {m['codes_bytes'] / 1e6:.0f} MB)")
    if "append" in results:
        a = results["append"]
        print(f"{a['case']}: {a['seconds']:.2f} s = {a['codes_added_per_s'] / 1e6:.2f} M codes/s, "
              f"reload ok {a['reloaded_ok']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paths", choices=["chosen", "all"], default="chosen",
                        help="time the path chosen for this CPU, or every path")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native",
                        help="avx2: run as on a CPU without AVX-512 (a child process)")
    parser.add_argument("--flat-only", action="store_true", help="skip MIH and append")
    args = parser.parse_args(argv)
    if args.isa == "avx2":
        child = [a for a in (argv if argv is not None else sys.argv[1:])
                 if a not in ("--isa", "avx2", "--isa=avx2")]
        return subprocess.run([sys.executable, __file__, *child],
                              env=avx2_environment()).returncode
    rng = np.random.default_rng(args.seed)
    n, nq = (200_000, 300) if args.quick else (1_000_000, 1000)
    paths = list(simd.PATHS) if args.paths == "all" else ["chosen"]
    limit = popcount_limit(rng)
    results: dict[str, Any] = {
        "cpu": {**simd.cpu_summary(), "best_path_short": simd.best_path(n_bits=32)},
        "numba_threads": numba.get_num_threads(), "popcount_limit_words_per_s_1thread": limit}
    results["flat"] = []
    for n_bits in (16, 32, 64, 128):
        results["flat"] += flat_vs_faiss(n, nq, n_bits, [100], 1, paths, args.repeat, limit, rng)
    results["flat"] += flat_vs_faiss(n, nq, 256, [10, 1000], 2, paths, args.repeat, limit, rng)
    results["range"] = range_vs_faiss(n, nq, [0, 1, 2], args.repeat, rng)
    results["lexicographic"] = lexicographic_vs_plain(n, nq, 100, args.repeat, rng)
    if not args.flat_only:
        results["mih"] = mih_vs_flat(1_000_000 if args.quick else 10_000_000, 1000, 10,
                                     args.repeat, rng)
        results["append"] = append_and_resave(n, 1_000_000, rng)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print_results(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
