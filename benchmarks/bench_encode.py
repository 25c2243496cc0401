"""CPU encoding throughput: ahcl's feature path against a plain torchvision loop, in the same run.

(a) the reference: PIL decode + the backbone's transform in the main process, NCHW float32,
    batches of 32 under ``torch.no_grad``, the unmodified torchvision network (MobileNetV2:
    ``features`` → global average pool; its classifier is an identity);
(b) ahcl: :func:`ahcl.models.extract_features` with its defaults (decoding workers, the inference
    form: BN folded, channels_last, chunked CPU forward) into an empty temporary cache, so
    every image is computed (hashing and the cache appends are timed too);
(c) with ``--compile``: the same with a ``torch.compile``-d inference form, built and compiled
    once before timing (as an Encoder holds it).

Each is warmed up first, then they alternate (a, b, [c], a, b, [c], ...) ``--repeats`` times and
the median img/s is reported with the ratio (b)/(a). (b)'s features must equal (a)'s within
``--tolerance`` relative to the largest feature of (a). Exit status 1 if they do not.

    python benchmarks/bench_encode.py [--images 300] [--repeats 2] [--compile] [--json]
    python benchmarks/bench_encode.py --smoke       # tiny_cnn on 8 images, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ahcl.device import default_workers
from ahcl.models import create_backbone, extract_features, inference_model, weights_available

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "rsscn7"
REFERENCE_BATCH = 32
SIMD_FLAGS = ("avx2", "avx512f", "avx512_vpopcntdq", "popcnt")


def cpu_info() -> dict[str, Any]:
    """Model name and the SIMD flags we care about, from /proc/cpuinfo (``None`` elsewhere)."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {"model": model, "cores": cores,
            "flags": {name: name in flags for name in SIMD_FLAGS} if flags else None}


def pick_images(data: Path, n: int) -> list[Path]:
    """``n`` images spread evenly over the sorted listing (so every class is in)."""
    paths = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png",
                                                                       ".tif", ".tiff"))
    if len(paths) < n:
        raise SystemExit(f"{data} has {len(paths)} images, fewer than --images {n}")
    return [paths[i] for i in np.linspace(0, len(paths) - 1, n).round().astype(int)]


def synthetic_images(folder: Path, n: int) -> list[Path]:
    """Seeded random 256 px JPEGs, for --smoke where the real scenes are absent."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"scene_{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def reference(paths: list[Path], backbone: Any) -> np.ndarray:
    """(a): the plain loop, everything in this process."""
    out = []
    with torch.no_grad():
        for start in range(0, len(paths), REFERENCE_BATCH):
            x = torch.stack([backbone.transform(Image.open(p).convert("RGB"))
                             for p in paths[start:start + REFERENCE_BATCH]])
            out.append(backbone.body(x).flatten(1).numpy())
    return np.concatenate(out)


def timed(fn: Callable[[], np.ndarray], n: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = fn()
    return n / (time.perf_counter() - start), result


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)  # a script, not the library: it may set this
    with tempfile.TemporaryDirectory(prefix="bench-encode-") as tmp:
        root = Path(tmp)
        data = Path(args.data)
        if data.is_dir():
            paths = pick_images(data, args.images)
        elif args.smoke:
            paths = synthetic_images(root / "images", args.images)
        else:
            raise SystemExit(f"{data} not found; pass --data DIR (a folder of images)")
        pretrained = weights_available(args.backbone)
        plain = create_backbone(args.backbone, pretrained=pretrained).eval()
        ours = create_backbone(args.backbone, pretrained=pretrained)  # a separate, equal copy
        n_cache = iter(range(10**6))

        def ahcl_path(model: Any, subset: list[Path] = paths) -> np.ndarray:
            # A fresh, empty cache every time: everything is computed.
            return extract_features(subset, model, cache_dir=root / f"cache{next(n_cache)}",
                                    batch_size=args.batch_size, num_workers=args.workers)

        cases: dict[str, Callable[[], np.ndarray]] = {
            "reference": lambda: reference(paths, plain),
            "ahcl": lambda: ahcl_path(ours),
        }
        compiled = None
        if args.compile:
            compiled = inference_model(ours, compile=True)
            cases["ahcl_compile"] = lambda: ahcl_path(compiled)
        warm = paths[:min(len(paths), 2 * args.batch_size)]
        reference(warm, plain)
        ahcl_path(ours, warm)
        if compiled is not None:
            compile_s = time.perf_counter()
            ahcl_path(compiled, warm)  # compiles (every chunk shape it meets)
            compile_s = time.perf_counter() - compile_s
        rates: dict[str, list[float]] = {name: [] for name in cases}
        feats: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):
            for name, fn in cases.items():
                rate, feats[name] = timed(fn, len(paths))
                rates[name].append(rate)
    scale = float(np.abs(feats["reference"]).max()) or 1.0
    diffs = {name: float(np.abs(feats[name] - feats["reference"]).max()) / scale
             for name in cases if name != "reference"}
    median = {name: statistics.median(r) for name, r in rates.items()}
    result: dict[str, Any] = {
        "cpu": cpu_info(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "workers": default_workers() if args.workers is None else args.workers,
        "backbone": args.backbone, "weights": plain.weights_id, "images": len(paths),
        "batch_size": args.batch_size, "repeats": args.repeats,
        "img_s": {name: round(v, 1) for name, v in median.items()},
        "img_s_runs": {name: [round(v, 1) for v in r] for name, r in rates.items()},
        "ratio": round(median["ahcl"] / median["reference"], 2),
        "max_rel_diff": diffs, "tolerance": args.tolerance,
        "features_match": all(d <= args.tolerance for d in diffs.values()),
    }
    if compiled is not None:
        result["ratio_compile"] = round(median["ahcl_compile"] / median["reference"], 2)
        result["compile_s"] = round(compile_s, 1)
    return result


def report(r: dict[str, Any]) -> str:
    cpu = r["cpu"]
    flags = (" ".join(f"{k}={'yes' if v else 'no'}" for k, v in cpu["flags"].items())
             if cpu["flags"] else "flags unknown")
    lines = [
        f"cpu: {cpu['model'] or 'unknown'} ({cpu['cores']} cores usable) | {flags}",
        f"torch {r['torch']}: {r['torch_threads']} intra-op threads, {r['interop_threads']} "
        f"inter-op; ahcl decoding workers: up to {r['workers']} (1 thread each)",
        f"{r['images']} images, {r['backbone']} ({r['weights']}), batch {r['batch_size']}, "
        f"median of {r['repeats']} alternating runs",
        f"(a) plain torchvision loop  {r['img_s']['reference']:8.1f} img/s  "
        f"runs {r['img_s_runs']['reference']}",
        f"(b) ahcl extract_features   {r['img_s']['ahcl']:8.1f} img/s  "
        f"runs {r['img_s_runs']['ahcl']}",
    ]
    if "ahcl_compile" in r["img_s"]:
        lines.append(f"(c) ahcl --compile          {r['img_s']['ahcl_compile']:8.1f} img/s  "
                     f"runs {r['img_s_runs']['ahcl_compile']} (compiled in {r['compile_s']} s)")
    lines.append(f"ratio (b)/(a) = {r['ratio']:.2f}x" + (
        f", (c)/(a) = {r['ratio_compile']:.2f}x" if "ratio_compile" in r else ""))
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in r["max_rel_diff"].items())
    lines.append(f"features vs (a): max |diff| / max |a| = {diffs} (tolerance {r['tolerance']:g}): "
                 + ("match" if r["features_match"] else "MISMATCH"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="folder of images (RSSCN7)")
    ap.add_argument("--images", type=int, default=None, help="how many (default 300; smoke 8)")
    ap.add_argument("--repeats", type=int, default=None, help="alternating runs (default 2)")
    ap.add_argument("--backbone", default=None, help="default mobilenet_v2 (smoke: tiny_cnn)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="ahcl's batch (default 32; smoke 4, so a decoding worker starts)")
    ap.add_argument("--workers", type=int, default=None,
                    help="ahcl's decoding workers (default: ahcl's default_workers())")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads for both (default: torch's own choice)")
    ap.add_argument("--compile", action="store_true", help="also time a torch.compile-d form")
    ap.add_argument("--tolerance", type=float, default=1e-4,
                    help="max |b - a| / max |a| accepted (default 1e-4)")
    ap.add_argument("--smoke", action="store_true", help="tiny_cnn on 8 images, 1 repeat")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args(argv)
    args.images = args.images or (8 if args.smoke else 300)
    args.repeats = args.repeats or (1 if args.smoke else 2)
    args.backbone = args.backbone or ("tiny_cnn" if args.smoke else "mobilenet_v2")
    args.batch_size = args.batch_size or (4 if args.smoke else REFERENCE_BATCH)
    result = run(args)
    print(json.dumps(result) if args.json else report(result))
    return 0 if result["features_match"] else 1


if __name__ == "__main__":
    sys.exit(main())
