"""What a start costs an index searched with multi-index hashing: open the file and run the first
MIH search, with the tables built at start (what every start paid before ``X.index.mih``) or
mapped from the tables file saved beside the index.

    .venv/bin/python benchmarks/bench_mih_open.py              # 10,000,000 random 64-bit codes
    .venv/bin/python benchmarks/bench_mih_open.py --n 2000000  # a smaller archive
    .venv/bin/python benchmarks/bench_mih_open.py --quick      # 200,000 codes, 1 start per case
    .venv/bin/python benchmarks/bench_mih_open.py --json       # machine-readable results

Cases, each ``--repeat`` times in this process (the kernels compiled beforehand by a small
search, the files in the page cache, so a case's time is the tables' own cost):

- ``rebuild``: no tables file, and saving one blocked (this process holds the writer lock):
  the tables are built at the first search, as at every start before;
- ``first start``: no tables file: built at the first search, then saved beside the index;
- ``mapped``: the tables file is there: mapped at the first search, its CRCs left to
  :meth:`ahcl.index.store.IndexStore.check_file` (over 256 MiB, as for the index file);
- ``mapped, verified``: the same with every CRC checked first (``verify=True``).

Each case's results are checked equal to the flat scan's. The queries are stored codes with two
bits flipped; with random codes most of a query's 10 neighbours are far, so the search itself
does real work (the ``later search`` column: the same queries again).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np

from ahcl.index import HammingIndex, simd
from ahcl.index import format as fmt
from ahcl.index.lock import writing

CASES = ("rebuild", "first start", "mapped", "mapped, verified")


def make_index(path: Path, n: int, rng: np.random.Generator) -> np.ndarray:
    """Save ``n`` random 64-bit codes (no tables) at ``path``; returns the codes."""
    codes = rng.integers(0, 256, size=(n, 8), dtype=np.uint8)
    index = HammingIndex(64)
    index.add(codes)
    index.save(path, mih=False)
    return codes


def queries_near(codes: np.ndarray, nq: int, rng: np.random.Generator) -> np.ndarray:
    """Stored codes with two of their bits flipped."""
    q = codes[rng.integers(0, len(codes), nq)].copy()
    for _ in range(2):
        q[np.arange(nq), rng.integers(0, 8, nq)] ^= (1 << rng.integers(0, 8, nq)).astype(np.uint8)
    return q


def restart(path: Path, queries: np.ndarray, k: int, case: str) -> tuple[dict, tuple]:
    """One start of ``case``: open, first search, a later search (seconds each)."""
    tables = fmt.tables_path(path)
    if case in ("rebuild", "first start"):
        tables.unlink(missing_ok=True)
    blocked = writing(path) if case == "rebuild" else contextlib.nullcontext()
    gc.collect()
    with blocked:
        tic = time.perf_counter()
        index = HammingIndex.load(path, mih=True, verify=True if case == "mapped, verified"
                                  else None)
        opened = time.perf_counter()
        found = index.search(queries, k)
        first = time.perf_counter()
        index.search(queries, k)
        later = time.perf_counter()
    if case == "rebuild" and tables.exists():
        raise RuntimeError("the tables were saved although the writer lock was held")
    return {"open_s": opened - tic, "first_search_s": first - opened,
            "restart_s": first - tic, "later_search_s": later - first}, found


def run(n: int, nq: int, k: int, repeat: int, seed: int, workdir: str | None) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        warm = Path(tmp) / "warm.index"  # the kernels, for built and for mapped tables
        q = queries_near(make_index(warm, 5000, rng), 8, rng)
        for _ in range(2):
            HammingIndex.load(warm, mih=True).search(q, k)
        path = Path(tmp) / "archive.index"
        codes = make_index(path, n, rng)
        queries = queries_near(codes, nq, rng)
        del codes
        flat = HammingIndex.load(path).search(queries, k)
        cases: dict[str, dict[str, Any]] = {}
        identical = True
        for case in CASES:
            runs = []
            for _ in range(repeat):
                times, found = restart(path, queries, k, case)
                identical &= all(np.array_equal(a, b) for a, b in zip(found, flat))
                runs.append(times)
            cases[case] = {key: [r[key] for r in runs] for key in runs[0]}
            best = min(range(repeat), key=lambda j: runs[j]["restart_s"])
            cases[case]["best"] = runs[best]
            cases[case]["median_restart_s"] = statistics.median(r["restart_s"] for r in runs)
        return {"cpu": simd.cpu_summary(), "numba_threads": numba.get_num_threads(),
                "n": n, "n_bits": 64, "codes": "random", "nq": nq, "k": k, "repeat": repeat,
                "file_bytes": path.stat().st_size,
                "tables_bytes": fmt.tables_path(path).stat().st_size,
                "identical_to_flat": bool(identical), "cases": cases,
                "speedup_mapped_vs_rebuild": cases["rebuild"]["best"]["restart_s"]
                / cases["mapped"]["best"]["restart_s"],
                "command": "python benchmarks/bench_mih_open.py " + " ".join(sys.argv[1:])}


def print_results(r: dict[str, Any]) -> None:
    cpu = r["cpu"]
    print(f"cpu: {cpu['model']} | numba target {cpu['target_cpu']} | simd "
          f"{' '.join(cpu['simd']) or 'none'} | path {cpu['best_path']} | "
          f"{r['numba_threads']} threads")
    print(f"{r['n']:,} random {r['n_bits']}-bit codes: index file {r['file_bytes'] / 1e6:.0f} MB, "
          f"MIH tables file {r['tables_bytes'] / 1e6:.0f} MB; {r['nq']} queries, k = {r['k']}, "
          f"best of {r['repeat']} (page cache warm)")
    print("| case | open | first search | restart (open + first search) | later search |")
    print("|---|---:|---:|---:|---:|")
    for case in CASES:
        b = r["cases"][case]["best"]
        print(f"| {case} | {b['open_s']:.3f} s | {b['first_search_s']:.3f} s | "
              f"**{b['restart_s']:.3f} s** | {b['later_search_s']:.3f} s |")
    print(f"restart: mapped tables {r['speedup_mapped_vs_rebuild']:.1f}x faster than a rebuild; "
          f"results identical to the flat scan: {r['identical_to_flat']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="codes in the index (default 10,000,000)")
    parser.add_argument("--nq", type=int, default=100, help="queries of each search")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeat", type=int, help="starts per case (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="defaults of 200,000 codes and 1 repeat")
    parser.add_argument("--workdir", help="folder for the temporary index (default: the system's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    n = args.n or (200_000 if args.quick else 10_000_000)
    repeat = args.repeat or (1 if args.quick else 3)
    results = run(n, args.nq, args.k, repeat, args.seed, args.workdir)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print_results(results)
    return 0 if results["identical_to_flat"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
