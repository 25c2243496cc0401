"""AHCL accuracy on real aerial scenes: RSSCN7, frozen ImageNet MobileNetV2, default settings.

Trains ``ahcl train`` (the library call behind it, default config) at each code length and seed,
20% of each class as queries, database = the rest with learned codes, and reports mAP over the
whole database (mean and spread over seeds) plus mAP@100 and P@10. The first run starts from an
empty feature cache, so its wall time is the whole job, feature extraction included.

    python benchmarks/bench_rsscn7.py [--data ../shared/data/rsscn7] [--bits 16,32,64]
        [--seeds 0,1,2] [--json] [--out benchmarks/results/rsscn7_ahcl.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ahcl._io import atomic_write_json
from ahcl.config import config_from_dict
from ahcl.training import train_run

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "rsscn7"))
    ap.add_argument("--bits", default="16,32,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--method", default="ahcl")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "rsscn7_ahcl.json"))
    args = ap.parse_args()
    if not Path(args.data).is_dir():
        print(f"bench_rsscn7: {args.data} not found (pass --data)", file=sys.stderr)
        return 1
    bits = [int(b) for b in args.bits.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "features"  # cold cache: the first run extracts every feature
        order = sorted(((b, s) for b in bits for s in seeds), key=lambda bs: (bs[0] != 32, bs))
        for n_bits, seed in order:
            config = config_from_dict({"data": args.data, "method": args.method,
                                       "n_bits": n_bits, "seed": seed,
                                       "feature_cache": str(cache)})
            tic = time.perf_counter()
            run = train_run(config, Path(tmp) / f"run-{n_bits}-{seed}")
            report = run.evaluate(topk=(10, 100))
            wall = time.perf_counter() - tic
            rows.append({"n_bits": n_bits, "seed": seed, "map": report.map,
                         "map_tie_aware": report.map_tie_aware, "map_at_100": report.map_at[100],
                         "p_at_10": report.precision_at[10], "wall_s": wall,
                         "cold_cache": not rows})
            print(f"{n_bits:3d} bits seed {seed}: mAP {report.map:.4f}  mAP@100 "
                  f"{report.map_at[100]:.4f}  P@10 {report.precision_at[10]:.4f}  "
                  f"{wall:.1f}s{'  (cold cache: whole run)' if len(rows) == 1 else ''}",
                  file=sys.stderr, flush=True)
    summary = {}
    for n_bits in bits:
        maps = np.array([r["map"] for r in rows if r["n_bits"] == n_bits])
        summary[n_bits] = {"mean": float(maps.mean()), "std": float(maps.std(ddof=0)),
                           "min": float(maps.min()), "max": float(maps.max())}
    result = {"data": args.data, "method": args.method, "backbone": "mobilenet_v2 (ImageNet)",
              "mode": "frozen", "query_fraction": 0.2, "rows": rows, "summary": summary,
              "whole_run_cold_s": rows[0]["wall_s"],
              "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "platform": platform.platform(), "torch": torch.__version__}}
    atomic_write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("| bits | mAP mean | std | min | max |\n|---:|---:|---:|---:|---:|")
        for n_bits in bits:
            s = summary[n_bits]
            print(f"| {n_bits} | {s['mean']:.4f} | {s['std']:.4f} | {s['min']:.4f} | "
                  f"{s['max']:.4f} |")
        print(f"whole run at 32 bits from a cold feature cache: {rows[0]['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
