"""``ahcl encode``: network codes of images."""

from __future__ import annotations

import argparse
import shutil

import numpy as np

from ahcl import distributed as dist
from ahcl._io import atomic_write, atomic_write_text
from ahcl.cli._common import add_device_args, check_output_file, print_json, run_options
from ahcl.data.folder import list_image_files
from ahcl.errors import AhclError
from ahcl.run import load_run
from ahcl.sharded import encode_files_sharded


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="hash codes of images with a trained run",
                       description="Encode images with a run's network: sign(u), packed bits. "
                                   "Under torchrun the processes share the images (parts in "
                                   "FILE.npy.shards/, kept until rank 0 writes FILE.npy).")
    p.add_argument("run", metavar="RUN")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("--images", dest="folder", metavar="DIR",
                   help="encode every image under DIR (sorted; listed in FILE.paths.txt)")
    p.add_argument("--out", metavar="FILE.npy", help="save packed uint8 codes (n, n_bits/8)")
    p.add_argument("--part-size", type=int, default=4096, metavar="N",
                   help="images per unit of work under torchrun (default 4096)")
    p.add_argument("--json", action="store_true", help="print codes as JSON (hex strings)")
    add_device_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output_file(args.out, "--out")
    if bool(args.images) == bool(args.folder):
        raise AhclError("give either IMAGE files or --images DIR")
    images = args.images or list_image_files(args.folder)
    r = load_run(args.run, **run_options(args))
    if dist.init_from_env():
        if not args.out:
            raise AhclError("under torchrun pass --out FILE.npy (the shards live beside it)")
        shards = f"{args.out}.shards"
        codes = encode_files_sharded(r, images, shards, part_size=args.part_size)
        if codes is None:  # not rank 0
            return 0
    else:
        shards, codes = None, r.encode(images)
    if args.out:
        with atomic_write(args.out) as f:
            np.save(f, codes, allow_pickle=False)
        if args.folder:
            atomic_write_text(f"{args.out}.paths.txt", "".join(p + "\n" for p in images))
        if shards is not None:
            shutil.rmtree(shards, ignore_errors=True)
    rows = [{"image": img, "code": row.tobytes().hex()} for img, row in zip(images, codes)]
    if args.json:
        print_json({"n_bits": r.n_bits, "codes": rows})
    else:
        for row in rows:
            print(f"{row['code']}  {row['image']}")
    return 0
