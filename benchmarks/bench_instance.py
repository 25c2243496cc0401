"""Instance-level ranking (issue #12): class mAP and near-duplicate recall, with and without
instance bits, at the same number of bits per item.

RSSCN7 (the dev copy under ../shared), frozen ImageNet MobileNetV2, default settings, 20% of
each class held out as queries. At each code length two runs are trained with the library call
behind ``ahcl train``:

* ``split``: the default, ``instance_bits auto`` (a quarter of the bits learned by AHCL, the rest
  the instance code), ranked by (semantic distance, instance distance, row);
* ``learned``: ``instance_bits 0``, all the bits learned by AHCL, ranked by (distance, row).

mAP is also given for each run ranked by its learned (semantic) codes alone, the first
``semantic_bits`` of each code, so the split can be compared with both: its own learned codes and
a run that spends every bit on them.

For each: class mAP (and tie-aware mAP) of the held-out queries over the whole database, and the
near-duplicate protocol of ``ahcl evaluate --near-duplicates N`` (N database images altered by a
seeded crop, quarter turn, brightness change and JPEG re-encoding; recall@1/10/100 of the source
and its mean rank). The same altered copies are also ranked by cosine similarity of the float32
features (5,120 bytes per item) as a reference. Memory per item: the code's bytes; no payload.

    python benchmarks/bench_instance.py [--bits 16,32,64,128] [--near-duplicates 500] [--json]
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _rsscn7 import parser
from ahcl._io import atomic_write_json
from ahcl.config import config_from_dict
from ahcl.data.alter import altered_copies, near_duplicate_rows
from ahcl.eval import evaluate
from ahcl.training import train_run
from bench_encode import cpu_info

TARGET_RECALL10 = 0.90  # at 64 bits per item


def cosine_reference(run, n: int, seed: int) -> dict:
    """Near-duplicate ranks of the same altered copies by cosine of float32 features."""
    enc = run.encoder()
    rows = near_duplicate_rows(len(run.db_paths), n, seed)
    q = enc.image_features(altered_copies(run.db_paths, rows, seed))
    db = enc.features(run.db_paths)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    sim = q @ db.T
    src = sim[np.arange(len(rows)), rows]
    # ties by row, as the codes' ranks
    ranks = 1 + (sim > src[:, None]).sum(1) + ((sim == src[:, None])
                                                & (np.arange(db.shape[0]) < rows[:, None])).sum(1)
    return {"recall_at": {str(k): float(np.mean(ranks <= k)) for k in (1, 10, 100)},
            "mean_rank": float(ranks.mean()), "bytes_per_item": int(db.shape[1] * 4)}


def main() -> int:
    ap = parser(__doc__, "instance.json")
    ap.add_argument("--bits", default="16,32,64,128")
    ap.add_argument("--near-duplicates", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cpu = cpu_info()
    flags = " ".join(k for k, v in (cpu["flags"] or {}).items() if v)
    print(f"CPU: {cpu['model']} ({cpu['cores']} cores)  flags: {flags}", file=sys.stderr)
    rows, cosine = [], None
    with tempfile.TemporaryDirectory(prefix="bench-instance-") as tmp:
        for bits in [int(b) for b in args.bits.split(",")]:
            for name, inst in (("split", "auto"), ("learned", 0)):
                tic = time.perf_counter()
                config = config_from_dict({"data": args.data, "n_bits": bits,
                                           "instance_bits": inst, "seed": args.seed})
                run = train_run(config, Path(tmp) / f"{name}-{bits}")
                paths, labels = run.queries()
                q = run.encode(paths)
                split = run.semantic_bits if run.instance_bits else None
                report = evaluate(q, labels, run.db_codes, run.db_labels, semantic_bits=split)
                cut = run.semantic_bits // 8  # the same run ranked by its learned codes alone
                learned_only = evaluate(np.ascontiguousarray(q[:, :cut]), labels,
                                        np.ascontiguousarray(run.db_codes[:, :cut]),
                                        run.db_labels)
                near = run.near_duplicates(args.near_duplicates, seed=args.seed)
                distinct = len(np.unique(run.db_codes[:, :run.semantic_bits // 8], axis=0))
                row = {"bits": bits, "ranking": name, "semantic_bits": run.semantic_bits,
                       "instance_bits": run.instance_bits, "bytes_per_item": bits // 8,
                       "payload_bytes_per_item": 0, "map": report.map,
                       "map_tie_aware": report.map_tie_aware,
                       "map_semantic_part_alone": learned_only.map,
                       "map_semantic_part_alone_tie_aware": learned_only.map_tie_aware,
                       "distinct_semantic_codes": int(distinct), **{
                           f"nd_{k}": v for k, v in near.to_dict().items()},
                       "seconds": time.perf_counter() - tic}
                rows.append(row)
                print(f"{bits:4d} bits {name:8s} ({run.semantic_bits}+{run.instance_bits}): "
                      f"mAP {report.map:.4f} (learned part alone {learned_only.map:.4f}), tie-aware "
                      f"{report.map_tie_aware:.4f} ({learned_only.map_tie_aware:.4f})  near-dup "
                      f"R@1 {near.recall_at[1]:.3f} R@10 {near.recall_at[10]:.3f} "
                      f"R@100 {near.recall_at[100]:.3f} mean rank {near.mean_rank:.1f}  "
                      f"[{row['seconds']:.0f} s]", file=sys.stderr, flush=True)
                if cosine is None:
                    cosine = cosine_reference(run, args.near_duplicates, args.seed)
                    print(f"reference: cosine of float32 features ({cosine['bytes_per_item']} B"
                          f"/item): R@1 {cosine['recall_at']['1']:.3f} R@10 "
                          f"{cosine['recall_at']['10']:.3f}", file=sys.stderr, flush=True)
    verdicts = {}
    for bits in sorted({r["bits"] for r in rows}):
        split = next(r for r in rows if r["bits"] == bits and r["ranking"] == "split")
        learned = next(r for r in rows if r["bits"] == bits and r["ranking"] == "learned")
        verdicts[bits] = {"nd_recall10": split["nd_recall_at"]["10"],
                          "map_split_minus_learned": split["map"] - learned["map"],
                          "map_split_minus_own_semantic_codes":
                              split["map"] - split["map_semantic_part_alone"],
                          "tie_aware_map_split_minus_own_semantic_codes":
                              split["map_tie_aware"] - split["map_semantic_part_alone_tie_aware"]}
    out = {"cpu": cpu, "python": platform.python_version(), "data": "../shared/data/rsscn7",
           "near_duplicates": args.near_duplicates, "seed": args.seed, "rows": rows,
           "cosine_reference": cosine, "verdicts": verdicts,
           "target": f"64 bits: near-duplicate recall@10 >= {TARGET_RECALL10} and split mAP >= "
                     "learned mAP"}
    atomic_write_json(args.out, out)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{'bits':>4} {'ranking':8} {'sem+inst':>8} {'mAP':>7} {'sem only':>8} "
              f"{'tie-aware':>9} "
              f"{'ND R@1':>7} {'R@10':>6} {'R@100':>6} {'mean rank':>9}")
        for r in rows:
            nd = r["nd_recall_at"]
            print(f"{r['bits']:4d} {r['ranking']:8} {r['semantic_bits']:>3}+{r['instance_bits']:<4}"
                  f" {r['map']:7.4f} {r['map_semantic_part_alone']:8.4f} "
                  f"{r['map_tie_aware']:9.4f} {nd['1']:7.3f} {nd['10']:6.3f} "
                  f"{nd['100']:6.3f} {r['nd_mean_rank']:9.1f}")
        v = verdicts.get(64)
        if v is not None:
            print(f"64 bits: near-dup R@10 {v['nd_recall10']:.3f} (target {TARGET_RECALL10}: "
                  f"{'met' if v['nd_recall10'] >= TARGET_RECALL10 else 'NOT met'}); mAP of the "
                  f"split ranking minus the same run's learned codes alone "
                  f"{v['map_split_minus_own_semantic_codes']:+.4f}, minus a run that learns all "
                  f"64 bits {v['map_split_minus_learned']:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
