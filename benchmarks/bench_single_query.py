"""One query at a time, as a server searches: wall time and CPU per search of
:meth:`ahcl.index.HammingIndex.search` (one thread per block of queries, ``kernels.query_threads``)
against the same scan launched on every thread (the reference: what a search did before).

    python benchmarks/bench_single_query.py [--n 1000000] [--bits 64] [--searches 400] [--json]

Random codes, k = 10, the index on every core numba has. Blocks of ``--searches`` single-query
searches alternate between the two ways, 3 blocks each; per way the p50 of the searches' wall
times and the process's CPU time per search over its blocks (every thread, so a thread that only
waits for the one that works, spinning under GNU OpenMP, counts). Prints the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numba
import numpy as np

from ahcl.index import HammingIndex, kernels

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_encode import cpu_info  # noqa: E402

BLOCKS = 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--searches", type=int, default=400)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cpu = cpu_info()
    print(f"CPU: {cpu['model']} ({cpu['cores']} cores), flags {cpu['flags']}", file=sys.stderr)
    rng = np.random.default_rng(0)
    threads = numba.config.NUMBA_NUM_THREADS
    index = HammingIndex(args.bits, threads=threads)
    index.add(rng.integers(0, 256, (args.n, args.bits // 8), dtype=np.uint8))
    queries = rng.integers(0, 256, (args.searches, args.bits // 8), dtype=np.uint8)

    def every_thread(q: np.ndarray) -> None:
        with kernels.thread_limit(threads):  # no query cap: the scan launched on every thread
            index._flat(index._queries(q), 10)

    ways = {"one_thread_per_block": lambda q: index.search(q, 10), "every_thread": every_thread}
    walls: dict[str, list[float]] = {w: [] for w in ways}
    cpus: dict[str, float] = {w: 0.0 for w in ways}
    for way, search in ways.items():  # warm: compiled kernels, the index's caches
        for q in queries[:20]:
            search(q[None])
        np.testing.assert_array_equal(index.search(queries[:5], 10)[1],
                                      np.concatenate([index.search(q[None], 10)[1]
                                                      for q in queries[:5]]))
    for _ in range(BLOCKS):
        for way, search in ways.items():
            cpu0 = time.process_time()
            for q in queries:
                t0 = time.perf_counter()
                search(q[None])
                walls[way].append(time.perf_counter() - t0)
            cpus[way] += time.process_time() - cpu0
    n = BLOCKS * args.searches
    result = {"cpu": cpu, "n": args.n, "bits": args.bits, "threads": threads, "k": 10,
              "searches_per_way": n,
              **{way: {"wall_p50_ms": round(float(np.median(walls[way])) * 1e3, 3),
                       "cpu_ms_per_search": round(cpus[way] / n * 1e3, 3)} for way in ways}}
    for way in ways:
        print(f"{way:>22}: wall p50 {result[way]['wall_p50_ms']:.3f} ms, CPU "
              f"{result[way]['cpu_ms_per_search']:.3f} ms per search ({args.n:,} codes, "
              f"{args.bits} bits, {threads} threads)", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
