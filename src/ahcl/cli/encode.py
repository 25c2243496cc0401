"""``ahcl encode``: network codes of images."""

from __future__ import annotations

import argparse

import numpy as np

from ahcl.cli._common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="hash codes of images with a trained run",
                       description="Encode images with a run's network: sign(u), packed bits.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--out", metavar="FILE.npy", help="save packed uint8 codes (n, n_bits/8)")
    p.add_argument("--json", action="store_true", help="print codes as JSON (hex strings)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ahcl._io import atomic_write
    from ahcl.run import load_run

    r = load_run(args.run)
    codes = r.encode(args.images)
    if args.out:
        with atomic_write(args.out) as f:
            np.save(f, codes, allow_pickle=False)
    rows = [{"image": img, "code": row.tobytes().hex()} for img, row in zip(args.images, codes)]
    if args.json:
        print_json({"n_bits": r.n_bits, "codes": rows})
    else:
        for row in rows:
            print(f"{row['code']}  {row['image']}")
    return 0
