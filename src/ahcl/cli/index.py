"""``ahcl index``: build, extend and inspect Hamming index files."""

from __future__ import annotations

import argparse
import shutil
import warnings
from pathlib import Path

import numpy as np

from ahcl import distributed as dist
from ahcl.cli._common import add_device_args, check_output_file, print_json, run_options
from ahcl.data.folder import list_image_files
from ahcl.data.images import ImageReadError
from ahcl.errors import AhclError, UnknownNameError
from ahcl.index import HammingIndex
from ahcl.index import format as fmt
from ahcl.index.lock import writing
from ahcl.index.format import read_header
from ahcl.index.store import IndexStore
from ahcl.run import Run, load_run
from ahcl.sharded import encode_files_sharded, encode_scenes_sharded


MIH_HELP = ("also write multi-index hashing tables of the file beside it (INDEX.mih; several "
            "times the codes' size, 410 MB for 10M 64-bit codes): searches with mih=True map "
            "them at start instead of building them (plain indexes only)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build, extend and inspect Hamming index files",
                       description="Hamming index files: one checksummed file of packed codes, "
                                   "ids, labels and per-item metadata, plus a write-ahead log "
                                   "(INDEX.wal) of the additions and removals made since; "
                                   "`compact` folds the log into the file. With --mih, "
                                   "multi-index hashing tables of the file are kept beside it "
                                   "(INDEX.mih), so a start maps them instead of building them.")
    verbs = p.add_subparsers(dest="index_verb", metavar="SUBCOMMAND")

    info = verbs.add_parser("info", help="describe an index file")
    info.add_argument("index", metavar="INDEX")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=info_cmd)

    build = verbs.add_parser(
        "build", help="index a run's database codes, or a folder of new images",
        description="Index a run's learned database codes, or (--images) the network codes of "
                    "every image under a folder, or (--scenes) the tiles of GeoTIFF scenes. With "
                    "--images or --scenes it runs under torchrun too: each process encodes its "
                    "share into INDEX.shards/ (a rerun after a crash skips the finished parts) "
                    "and rank 0 writes the index.")
    build.add_argument("run", metavar="RUN")
    build.add_argument("--out", required=True, metavar="INDEX")
    src = build.add_mutually_exclusive_group()
    src.add_argument("--images", metavar="DIR",
                     help="index the images under DIR (unlabelled, network codes) instead")
    src.add_argument("--scenes", nargs="+", metavar="FILE_OR_DIR",
                     help="index tiles cut from GeoTIFF scenes (files, or folders searched for "
                          "*.tif/*.tiff) instead; each item keeps scene, window, crs and its "
                          "footprint as GeoJSON in EPSG:4326")
    build.add_argument("--tile", type=int, default=256, help="tile side in pixels (--scenes)")
    build.add_argument("--stride", type=int, default=256, help="tile step in pixels (--scenes)")
    build.add_argument("--bands", metavar="B,B,B",
                       help="1-based bands to read as RGB (--scenes; default 1,2,3)")
    build.add_argument("--min-valid", type=float, default=0.9,
                       help="skip tiles with a smaller share of valid pixels (--scenes)")
    build.add_argument("--strict", action="store_true",
                       help="--images: stop at an unreadable image instead of skipping it")
    build.add_argument("--part-size", type=int, default=4096, metavar="N",
                       help="images (--images) or scene windows (--scenes) per unit of work "
                            "and of crash recovery (default 4096)")
    build.add_argument("--mih", action="store_true", help=MIH_HELP)
    build.add_argument("--json", action="store_true")
    add_device_args(build)
    build.set_defaults(func=build_cmd)

    add = verbs.add_parser("add", help="encode images with a run and add them to an index")
    add.add_argument("index", metavar="INDEX")
    add.add_argument("images", nargs="+", metavar="IMAGE")
    add.add_argument("--run", required=True, metavar="RUN", help="the run that encodes the images")
    add.add_argument("--label", metavar="NAME",
                     help="class of the images: uses the run's database-code step for them "
                          "(without it they get network codes and label -1)")
    add.add_argument("--json", action="store_true")
    add_device_args(add)
    add.set_defaults(func=add_cmd)

    for name, func, summary, description in (
            ("compact", compact_cmd, "fold an index's log into its file",
             "Rewrite INDEX (atomically) to hold everything its log added or removed, and empty "
             "the log. A file opened without its checksums is checked first. Multi-index "
             "hashing tables (INDEX.mih) are rebuilt for the new file when there were some, or "
             "with --mih."),
            ("verify", verify_cmd, "check every checksum of an index file and its log",
             "Read the whole index file and its log and check every CRC; exit 1 with one line "
             "naming the damage, 0 when all is well.")):
        verb = verbs.add_parser(name, help=summary, description=description)
        verb.add_argument("index", metavar="INDEX")
        if name == "compact":
            verb.add_argument("--mih", action="store_true", help=MIH_HELP)
        verb.add_argument("--json", action="store_true")
        verb.set_defaults(func=func)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def info_cmd(args: argparse.Namespace) -> int:
    header = read_header(args.index)
    store = IndexStore(args.index, mmap=True, verify=True)
    index, log = store.index, store.info()
    labels = np.asarray(index.labels)
    known = labels[labels >= 0]
    summary = {
        "path": str(Path(args.index).resolve()),
        "format_version": header["version"],
        "n_bits": index.n_bits,
        "semantic_bits": index.semantic_bits,
        "instance_bits": index.instance_bits,
        "n": len(index),
        "next_id": index._next_id,
        "file_bytes": header["file_size"],
        "log_records": log["log_records"],
        "log_bytes": log["log_bytes"],
        "labelled": int(known.shape[0]),
        "classes": int(np.unique(known).shape[0]),
        "with_meta": header["sections"]["meta_blob"]["nbytes"] > 0,
    }
    if args.json:
        print_json(summary)
    else:
        for key, value in summary.items():
            print(f"{key:15s} {value}")
    return 0


def build_cmd(args: argparse.Namespace) -> int:
    check_output_file(args.out, "--out")
    if args.images is not None:
        return _build_from_images(args)
    if args.scenes is not None:
        return _build_from_scenes(args)
    run = _build_run(args)
    index = run.new_index()
    ids = index.add(run.db_codes, labels=run.db_labels,
                    meta=[{"path": str(p)} for p in run.db_paths])
    _save(args, index)
    _report(args, {"index": str(args.out), "added": int(ids.shape[0]), "n": len(index)})
    return 0


def _build_run(args: argparse.Namespace) -> Run:
    """The run ``index build`` encodes with, checked against ``--mih`` before any encoding."""
    run = load_run(args.run, **run_options(args))
    index = run.new_index()
    if args.mih and index.split:
        raise AhclError(f"--mih: multi-index hashing does not apply to this run's split index "
                        f"({index.semantic_bits} semantic + {index.instance_bits} instance bits, "
                        "searched flat); leave --mih out")
    return run


def _save(args: argparse.Namespace, index: HammingIndex) -> None:
    """Save a built index under the writer lock (its MIH tables too with ``--mih``)."""
    with writing(args.out):
        index.save(args.out, mih=True if args.mih else None)


def _build_from_images(args: argparse.Namespace) -> int:
    dist.init_from_env()
    run = _build_run(args)
    paths = list_image_files(args.images)
    shards = Path(f"{args.out}.shards")
    skipped: list[str] = []
    while True:  # each pass drops the unreadable images found (frozen runs report them all)
        try:
            codes = encode_files_sharded(run, paths, shards, part_size=args.part_size)
            break
        except ImageReadError as exc:
            bad = set(getattr(exc, "paths", None) or [getattr(exc, "path", None)])
            kept = [p for p in paths if p not in bad]
            if args.strict or len(kept) == len(paths):  # nothing to drop: not a per-image error
                raise
            skipped += [p for p in paths if p in bad]
            paths = kept
            if not paths:
                raise AhclError(f"{args.images}: none of the images can be read "
                                f"({len(skipped)} unreadable, e.g. {skipped[0]})") from None
    if skipped:
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        warnings.warn(f"{args.images}: skipped {len(skipped)} unreadable image(s): "
                      f"{', '.join(skipped[:3])}{more} (--strict stops instead)", stacklevel=1)
    if codes is None:  # not rank 0
        return 0
    index = run.new_index()
    ids = index.add(codes, meta=[{"path": p} for p in paths])
    _save(args, index)
    shutil.rmtree(shards, ignore_errors=True)  # the index is saved: the parts are spent
    _report(args, {"index": str(args.out), "added": int(ids.shape[0]), "n": len(index),
                   "skipped": len(skipped), "processes": dist.world_size()})
    return 0


def _scene_files(items: list[str]) -> list[str]:
    files: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*")
                           if p.suffix.lower() in (".tif", ".tiff") and p.is_file())
            if not found:
                raise AhclError(f"--scenes {item}: no .tif/.tiff files under this folder")
            files += found
        else:
            files.append(str(path))
    return files


def _build_from_scenes(args: argparse.Namespace) -> int:
    bands = None
    if args.bands:
        try:
            bands = tuple(int(b) for b in args.bands.split(","))
        except ValueError:
            raise AhclError(f"--bands must be comma-separated band numbers, got {args.bands!r}"
                            ) from None
    dist.init_from_env()
    run = _build_run(args)
    shards = Path(f"{args.out}.shards")
    merged = encode_scenes_sharded(run, _scene_files(args.scenes), shards, tile=args.tile,
                                   stride=args.stride, bands=bands, min_valid=args.min_valid,
                                   part_size=args.part_size)
    if merged is None:  # not rank 0
        return 0
    codes, metas, counts = merged
    index = run.new_index()
    ids = index.add(codes, meta=metas)
    _save(args, index)
    shutil.rmtree(shards, ignore_errors=True)  # the index is saved: the parts are spent
    _report(args, {"index": str(args.out), "added": int(ids.shape[0]), "n": len(index),
                   **counts, "processes": dist.world_size()})
    return 0


def add_cmd(args: argparse.Namespace) -> int:
    # A mismatch fails before encoding; the log catches up with other writers under the lock.
    store = IndexStore(args.index)
    run = load_run(args.run, **run_options(args))
    run.check_index(store.index, args.index)
    paths = [str(Path(p).resolve()) for p in args.images]
    if args.label is None:
        labels = np.full(len(paths), -1, dtype=np.int64)
        codes = run.encode(paths)
    else:
        if args.label not in run.classes:
            raise UnknownNameError("class", args.label, run.classes,
                                   context="for this run")
        labels = np.full(len(paths), run.classes.index(args.label), dtype=np.int64)
        codes = run.codes_for_labelled(paths, labels)
    # Encoding ran without the lock; the addition is one log record, appended and fsynced
    # under it after catching up with what other writers appended meanwhile.
    ids = store.add(codes, labels=labels, meta=[{"path": p} for p in paths])
    _report(args, {"index": str(args.index), "added": int(ids.shape[0]), "n": len(store),
                   "ids": [int(i) for i in ids]})
    return 0


def compact_cmd(args: argparse.Namespace) -> int:
    folded = IndexStore(args.index, mih=args.mih).compact()
    result = {"index": str(args.index), "n": folded["items"],
              "log_records": folded["records"], "log_bytes": folded["bytes"]}
    if args.json:
        print_json(result)
    else:
        print(f"{args.index}: {folded['records']} log records ({folded['bytes']} bytes) folded "
              f"in, {folded['items']} in the index")
    return 0


def verify_cmd(args: argparse.Namespace) -> int:
    report = IndexStore(args.index, verify=False).verify()
    if args.json:
        print_json({"index": str(args.index), "ok": True, **report})
    else:
        extra = ""
        if report["torn_bytes"]:
            extra += f"; an interrupted last record ({report['torn_bytes']} bytes, never " \
                     "acknowledged) is dropped at the next write"
        if report["stale_log"]:
            extra += "; a log left from an earlier file is ignored"
        if report["mih_tables"] in ("stale", "damaged"):
            extra += f"; the MIH tables {fmt.tables_path(args.index)} are " \
                     f"{report['mih_tables']}: they are " \
                     "rebuilt at the next search that uses them"
        print(f"{args.index}: ok, {report['items']} items, {report['log_records']} log records"
              f"{extra}")
    return 0


def _report(args: argparse.Namespace, result: dict) -> None:
    if args.json:
        print_json(result)
    else:
        print(f"{result['index']}: added {result['added']} codes, {result['n']} in the index")
