"""``ahcl search``: nearest archive images of query images, or of a place in a scene, from a run
or an index."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ahcl.cli._common import add_device_args, print_json, run_options
from ahcl.errors import AhclError
from ahcl._io import atomic_write_json
from ahcl.index import HammingIndex, Hit, search_results
from ahcl.index.hits import hits_feature_collection
from ahcl.run import Run, load_run

PLACE_FLAGS = "--scene FILE --window COL ROW W H, or --lonlat LON LAT (with or without --scene)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="find the archive images nearest to query images or places",
                       description="Rank a run's database (or an index built from it) for each "
                                   "query image by Hamming distance: semantic distance first, "
                                   "then instance distance (d=, inst=) for runs with instance "
                                   "bits. Instead of images, a place can be the query: a "
                                   "pixel window of a GeoTIFF scene, or the tile (of the "
                                   "index's tile size) around a lon/lat point.")
    p.add_argument("source", metavar="RUN_OR_INDEX")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("-k", type=int, default=10,
                   help="hits per query (default 10; more than the archive holds gives them all)")
    p.add_argument("--run", metavar="RUN", help="the run that encodes queries (for an index)")
    p.add_argument("--scene", metavar="FILE",
                   help="query by place: the GeoTIFF scene of --window or --lonlat")
    p.add_argument("--window", nargs=4, type=int, metavar=("COL", "ROW", "W", "H"),
                   help="query by place: this pixel window of --scene")
    p.add_argument("--lonlat", nargs=2, type=float, metavar=("LON", "LAT"),
                   help="query by place: the tile around this point (EPSG:4326 degrees), in "
                        "--scene or else in whichever scene of the index contains it")
    p.add_argument("--bands", metavar="B,B,B",
                   help="1-based bands read as RGB for a place query (default: those the "
                        "index's items of that scene were read with)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--geojson", metavar="FILE",
                   help="also write the hits that have footprints (GeoTIFF tiles) as a GeoJSON "
                        "FeatureCollection in EPSG:4326 (opens in QGIS); a place query's own "
                        "footprint is in it too, with property role=query")
    add_device_args(p)
    p.set_defaults(func=run)
    p.__class__ = _ImagesAfterOptions


class _ImagesAfterOptions(argparse.ArgumentParser):
    """The parser of ``ahcl search``: query images may follow the options
    (``ahcl search INDEX --run RUN IMAGE``). argparse fills an optional (``*``) positional at
    its first chance, right after ``RUN_OR_INDEX``, and leaves later plain words unrecognised;
    those are the images."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        namespace, extras = super().parse_known_args(args, namespace)
        namespace.images = list(namespace.images or []) + [e for e in extras
                                                           if not e.startswith("-")]
        return namespace, [e for e in extras if e.startswith("-")]


def run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise AhclError("-k must be >= 1")
    place = _place(args)
    the_run, index = _open(args, "the place" if place else "the query images")
    places: list[dict[str, Any] | None] | None = None
    if place is not None:
        tile, hits = the_run.search_place(index, k=args.k, **place)
        names, results, places = [f"{tile.scene} window {list(tile.window)}"], [hits], [tile.meta]
    elif index is None:
        names, results = list(args.images), the_run.search(args.images, args.k)
    else:
        # k is clamped to the archive's size: the answer is the same and nothing is sized by k.
        names = list(args.images)
        results = search_results(index, the_run.encode(args.images),
                                 min(args.k, max(len(index), 1)), classes=the_run.classes)
    if args.geojson:
        atomic_write_json(args.geojson, hits_feature_collection(results, names, places))
    if args.json:
        heads = places if places is not None else [{"image": name} for name in names]
        print_json({"queries": [{**head, "hits": [h.to_dict() for h in hits]}
                                for head, hits in zip(heads, results)]})
        return 0
    for name, hits in zip(names, results):
        _print_hits(name, hits)
    return 0


def _place(args: argparse.Namespace) -> dict[str, Any] | None:
    """The place query the flags ask for (``search_place`` keywords), None for image queries."""
    if args.window is not None and args.lonlat is not None:
        raise AhclError("--window and --lonlat are two ways to give a place: use one")
    if args.window is None and args.lonlat is None:
        if args.scene is not None or args.bands is not None:
            raise AhclError(f"--scene and --bands need a place: {PLACE_FLAGS}")
        if not args.images:
            raise AhclError(f"give query images, or a place to search from: {PLACE_FLAGS}")
        return None
    if args.images:
        raise AhclError(f"a place query takes no query images (got {len(args.images)}): search "
                        "by images or by a place, one at a time")
    if args.window is not None and args.scene is None:
        raise AhclError("--window needs --scene FILE, the scene it is a window of")
    return {"scene": args.scene, "window": args.window, "lonlat": args.lonlat,
            "bands": _bands(args.bands)}


def _bands(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise AhclError(f"--bands must be comma-separated band numbers, got {text!r}") from None


def _open(args: argparse.Namespace, what: str) -> tuple[Run, HammingIndex | None]:
    """The run that encodes queries and the index searched (None: the run's own database)."""
    source = Path(args.source)
    if source.is_dir():
        return load_run(source, **run_options(args)), None
    if not args.run:
        raise AhclError(f"searching an index needs --run RUN to encode {what}")
    index = HammingIndex.load(source)
    the_run = load_run(args.run, **run_options(args))
    the_run.check_index(index, source)
    return the_run, index


def _print_hits(name: str, hits: list[Hit]) -> None:
    print(f"# {name}")
    for rank, h in enumerate(hits, 1):
        label = h.class_name if h.class_name is not None else h.label
        dist = f"d={h.distance:<3d}" if h.instance_distance is None else \
            f"d={h.distance:<3d} inst={h.instance_distance:<3d}"
        # A tile of a scene has no file of its own: show where in which scene it lies.
        where = h.path or (f"{h.meta['scene']} window {h.meta.get('window')}"
                           if "scene" in h.meta else "")
        print(f"{rank:3d}  {dist} {label!s:<16} {where}")
