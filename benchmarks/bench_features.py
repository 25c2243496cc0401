"""Feature cache timings, as ratios against references measured in the same run.

1. extract_features on N images: cold (computing) vs warm (served from the cache).
2. Loading a cache of M records (fresh FeatureCache.get_many: read + per-record crc32) vs
   ``np.fromfile`` of the same number of float32 values (the raw-read floor).

    python benchmarks/bench_features.py [--images 64] [--records 20000] [--backbone mobilenet_v2]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ahcl.models import FeatureCache, create_backbone, extract_features, weights_available


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--backbone", default="mobilenet_v2")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = []
        for i in range(args.images):
            paths.append(root / f"{i}.png")
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(paths[-1])
        backbone = create_backbone(args.backbone,
                                   pretrained=weights_available(args.backbone))
        cold, first = timed(lambda: extract_features(paths, backbone, cache_dir=root / "c"))
        warm, second = timed(lambda: extract_features(paths, backbone, cache_dir=root / "c"))
        assert np.array_equal(first, second)
        print(f"extract {args.images} images with {backbone.name} ({backbone.weights_id}): "
              f"cold {cold:.2f}s, warm {warm:.3f}s, cold/warm = {cold / warm:.0f}x")

        dim = 1280
        keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(args.records)]
        feats = rng.standard_normal((args.records, dim)).astype(np.float32)
        with FeatureCache(root / "big", "bench|w|t|1280", dim) as cache:
            for start in range(0, args.records, 1000):
                cache.put_many(keys[start:start + 1000], feats[start:start + 1000])
        load, (got, found) = timed(
            lambda: FeatureCache(root / "big", "bench|w|t|1280", dim).get_many(keys))
        assert found.all() and np.array_equal(got, feats)
        feats.tofile(root / "raw.f32")
        raw, _ = timed(lambda: np.fromfile(root / "raw.f32", dtype=np.float32))
        print(f"load {args.records} x {dim} cached features: {load:.2f}s; "
              f"np.fromfile of the same floats {raw:.3f}s; ratio {load / raw:.1f}x")


if __name__ == "__main__":
    main()
