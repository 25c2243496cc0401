"""``ahcl datasets``: list, download, make synthetic scenes, and inspect a dataset folder."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

from ahcl.cli._common import print_json
from ahcl.data.folder import read_image_folder
from ahcl.data.registry import default_root, ensure_dataset, list_datasets, local_path
from ahcl.data.synthetic import write_synthetic_dataset


def register(subparsers: Any) -> None:
    """Add the ``datasets`` verb and its sub-commands."""
    parser = subparsers.add_parser("datasets", help="list, download, synthesise or inspect "
                                   "scene datasets",
                                   description="Scene datasets: the registry, downloads, "
                                   "synthetic scenes and folder checks.")
    sub = parser.add_subparsers(dest="datasets_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    p = sub.add_parser("list", help="registered datasets and whether they are present")
    p.add_argument("--root", type=Path, default=None,
                   help="data root (default $AHCL_DATA or ~/.cache/ahcl/datasets)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_list)

    p = sub.add_parser("download", help="download, verify and extract a registered dataset")
    p.add_argument("name", help="registered name (see `ahcl datasets list`)")
    p.add_argument("--root", type=Path, default=None, help="data root")
    p.add_argument("--url", default=None, help="download from this URL (a mirror) instead")
    p.set_defaults(func=_download)

    p = sub.add_parser("synthetic", help="write a seeded synthetic scene dataset")
    p.add_argument("--out", type=Path, required=True, help="folder to create")
    p.add_argument("--per-class", type=int, default=50, help="images per class (default 50)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--classes", default=None,
                   help="comma-separated subset of the synthetic classes (default all)")
    p.set_defaults(func=_synthetic)

    p = sub.add_parser("info", help="read a folder-per-class dataset and report it")
    p.add_argument("folder", type=Path, help="folder holding one sub-folder per class")
    p.add_argument("--strict", action="store_true",
                   help="fail on an unreadable or duplicate file instead of skipping it")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_info)


def _list(args: argparse.Namespace) -> int:
    root = args.root if args.root is not None else default_root()
    rows = [{"name": d.name, "title": d.title, "classes": len(d.classes),
             "images": d.n_images, "size": d.image_size, "license": d.license,
             "present": local_path(d, root) is not None, "url": d.url,
             "checksum": "sha256" if d.sha256 else "md5" if d.md5 else None} for d in
            list_datasets()]
    if args.json:
        print_json({"root": str(root), "datasets": rows})
        return 0
    header = ("name", "classes", "images", "size", "present", "license")
    table = [header] + [(r["name"], str(r["classes"]), f"{r['images']:,}",
                         f"{r['size']}px", "yes" if r["present"] else "no", r["license"])
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    print(f"(data root: {root})")
    return 0


def _download(args: argparse.Namespace) -> int:
    print(ensure_dataset(args.name, root=args.root, download=True, url=args.url))
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    out = write_synthetic_dataset(args.out, per_class=args.per_class, size=args.size,
                                  seed=args.seed, classes=classes)
    print(out)
    return 0


def _info(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped files are part of the report below
        folder = read_image_folder(args.folder, strict=args.strict)
    counts = folder.class_counts()
    if args.json:
        print_json({"root": str(folder.root), "n_images": len(folder),
                    "n_classes": len(folder.classes), "classes": counts,
                    "skipped": [{"path": p, "reason": r} for p, r in folder.skipped]})
        return 0
    print(f"{folder.root}: {len(folder)} images in {len(folder.classes)} classes")
    width = max(len(c) for c in folder.classes)
    for cls, n in counts.items():
        print(f"  {cls.ljust(width)}  {n}")
    if folder.skipped:
        print(f"skipped {len(folder.skipped)} file(s):")
        for path, reason in folder.skipped:
            print(f"  {path}: {reason}")
    return 0
