"""``ahcl search``: nearest archive images of query images, from a run or an index."""

from __future__ import annotations

import argparse
from pathlib import Path

from ahcl.cli._common import add_device_args, print_json, run_options
from ahcl.errors import AhclError
from ahcl._io import atomic_write_json
from ahcl.index import HammingIndex, search_results
from ahcl.index.hits import hits_feature_collection
from ahcl.run import load_run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="find the archive images nearest to query images",
                       description="Rank a run's database (or an index built from it) for each "
                                   "query image by Hamming distance: semantic distance first, "
                                   "then instance distance (d=, inst=) for runs with instance "
                                   "bits.")
    p.add_argument("source", metavar="RUN_OR_INDEX")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-k", type=int, default=10,
                   help="hits per query (default 10; more than the archive holds gives them all)")
    p.add_argument("--run", metavar="RUN", help="the run that encodes queries (for an index)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--geojson", metavar="FILE",
                   help="also write the hits that have footprints (GeoTIFF tiles) as a GeoJSON "
                        "FeatureCollection in EPSG:4326 (opens in QGIS)")
    add_device_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise AhclError("-k must be >= 1")
    source = Path(args.source)
    if source.is_dir():
        results = load_run(source, **run_options(args)).search(args.images, args.k)
    else:
        if not args.run:
            raise AhclError("searching an index needs --run RUN to encode the query images")
        index = HammingIndex.load(source)
        run = load_run(args.run, **run_options(args))
        run.check_index(index, source)
        # k is clamped to the archive's size: the answer is the same and nothing is sized by k.
        results = search_results(index, run.encode(args.images), min(args.k, max(len(index), 1)),
                                 classes=run.classes)
    if args.geojson:
        atomic_write_json(args.geojson, hits_feature_collection(results, list(args.images)))
    if args.json:
        print_json({"queries": [{"image": img, "hits": [h.to_dict() for h in hits]}
                                for img, hits in zip(args.images, results)]})
        return 0
    for img, hits in zip(args.images, results):
        print(f"# {img}")
        for rank, h in enumerate(hits, 1):
            label = h.class_name if h.class_name is not None else h.label
            dist = f"d={h.distance:<3d}" if h.instance_distance is None else \
                f"d={h.distance:<3d} inst={h.instance_distance:<3d}"
            print(f"{rank:3d}  {dist} {label!s:<16} {h.path or ''}")
    return 0
