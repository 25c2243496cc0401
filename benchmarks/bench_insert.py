"""Retrieval quality for archive images added after training (issue: inserted images).

RSSCN7, frozen ImageNet MobileNetV2 features, AHCL defaults. Per class: 20% queries; the other 80%
is the archive. Three archives, the same queries:

* ``all trained``: the whole archive is the training set (its codes learned: the usual protocol);
* ``inserted, no label``: AHCL trains on half of the archive (per class); the other half is
  added with the network's codes ``sign(u)``;
* ``inserted, labelled``: the same, but the added half gets codes from the database-code step for
  those rows alone (their labels, the saved statistics; no retraining).

    python benchmarks/bench_insert.py [--data ../shared/data/rsscn7] [--bits 32] [--seeds 0,1,2]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ahcl._io import atomic_write_json
from ahcl.data.splits import carve_validation, make_split
from ahcl.eval.metrics import evaluate
from ahcl.methods.ahcl import AHCL

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rsscn7 import features, parser  # noqa: E402



def main() -> int:
    
    ap = parser(__doc__, "insert.json")
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    X, y = features(args.data)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        split = make_split(y, query_fraction=0.2, seed=seed)
        q = split.query
        trained, inserted = carve_validation(split.db, y, 0.5, seed)  # half of each class
        full = AHCL(n_bits=args.bits, seed=seed).fit(X[split.db], y[split.db])
        half = AHCL(n_bits=args.bits, seed=seed).fit(X[trained], y[trained])
        db_labels = np.concatenate([y[trained], y[inserted]])
        variants = {
            "all trained": (full.encode(X[q]), full.db_codes_, y[split.db]),
            "inserted, no label": (half.encode(X[q]),
                                   np.concatenate([half.db_codes_, half.encode(X[inserted])]),
                                   db_labels),
            "inserted, labelled": (half.encode(X[q]),
                                   np.concatenate([half.db_codes_,
                                                   half.codes_for_labels(y[inserted])]),
                                   db_labels),
        }
        for name, (qc, dc, dl) in variants.items():
            m = evaluate(qc, y[q], dc, dl).map
            rows.append({"seed": seed, "variant": name, "map": m})
            print(f"seed {seed}  {name:20s} mAP {m:.4f}", file=sys.stderr, flush=True)
    summary = {}
    for name in ("all trained", "inserted, no label", "inserted, labelled"):
        maps = np.array([r["map"] for r in rows if r["variant"] == name])
        summary[name] = {"mean": float(maps.mean()), "std": float(maps.std())}
    atomic_write_json(args.out, {"data": args.data, "bits": args.bits, "rows": rows,
                                 "summary": summary})
    print("| archive | mAP mean | std |\n|---|---:|---:|")
    for name, s in summary.items():
        print(f"| {name} | {s['mean']:.4f} | {s['std']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
