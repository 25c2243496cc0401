"""Tiling and encoding a large GeoTIFF scene (issue #15, item 7): time, shares, peak memory.

Scenes: square RGB GeoTIFFs written by this script (tiled, 256-px blocks, deflate, north-up UTM
zone 33N, 10 m pixels), assembled block by block from real RSSCN7 chips (``--data``; default
``$AHCL_SHARED/data/rsscn7`` or ``../shared/data/rsscn7``) picked by a seeded generator, so the
network sees real content and deflate real entropy. Without the chips: seeded noise, with a
warning (noise compresses worse, so reading is slower and the figures are not comparable).
Default sizes 10,000 × 10,000 (39 × 39 = 1,521 tiles of 256 at stride 256) and 5,000 × 5,000
(361 tiles). The files are fresh, so they are read from the page cache: reading here is GDAL's
deflate decoding plus the library's work, not the disk.

The path measured is the CLI's (``ahcl index build RUN --scenes FILE``): ``Run.encode_scenes``
(:func:`ahcl.data.scenes.scene_tiles` windowed reads, RGB rule, footprints; tiles encoded by the
run's encoder in batches), on ``--run RUN`` or, without one, a run trained here in seconds
(frozen MobileNetV2, ImageNet weights when torch's hub cache has them; ``--quick``: tiny_cnn).

Each (scene, GDAL cache setting) is measured in a **fresh subprocess**: load the run, warm up
on the scene's first batch, then ``--repeats`` times (default 3) each of

1. reading alone: one pass of ``scene_tiles`` over every tile (windowed read, RGB, PIL image,
   footprint), nothing encoded;
2. the whole: ``Run.encode_scenes([scene])``, with the run's ``encode_images`` wrapped by a
   timer on the instance (no library code changed), so the same pass also splits into encoding
   (tile transform + network + head) and the rest (reading, batching, metadata).

The fastest pass of each kind is reported (the shares are fastest reading / fastest whole),
with every pass's time, the encoding batches' median and best tiles/s, the CPU seconds of the
process and the load average: on a shared machine other work slows some passes, and
``cores busy`` (CPU seconds / wall seconds, at most the torch thread count) says which.

Reading runs as the library does by default (:meth:`ahcl.run.Run.encode_windows`: in the
encoding process on the CPU, in ``min(cores, 8)`` data-loading workers on an accelerator); each
scene is measured once more under the last GDAL cache setting with ``--workers`` reading
processes (default ``min(cores, 8)``), compared with the default in the same run.

Memory is the process's **RSS high-water mark** (``resource.getrusage(...).ru_maxrss``) at the
end, with the mark after the warm-up beside it; it counts torch, the model, the encoding
batches and GDAL's block cache. GDAL caches every decoded block of an open dataset up to
``GDAL_CACHEMAX`` (default 5 % of RAM), and ``scene_tiles`` keeps the scene open for the whole
pass, so under GDAL's default the peak grows with the scene until that cap. Each scene is
therefore also measured with ``GDAL_CACHEMAX=--gdal-cachemax`` MB set in the subprocess's
environment, which shows the library's own memory alone.

    python benchmarks/bench_scenes.py [--run RUN] [--sizes 10000,5000] [--json]
    python benchmarks/bench_scenes.py --quick      # 2048 and 1024 px, tiny_cnn, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any, Callable

import numpy as np
import rasterio
import torch
from affine import Affine
from PIL import Image
from rasterio.windows import Window

from ahcl._io import atomic_write_json
from ahcl.data.scenes import scene_tiles
from ahcl.device import default_workers
from ahcl.data.synthetic import write_synthetic_dataset
from ahcl.models import weights_available
from ahcl.run import load_run
from ahcl.training import train
from bench_encode import cpu_info

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "scenes.json"
BLOCK = 256  # GeoTIFF block side, and the side of the chips the scene is built from
TILE = STRIDE = 256  # the CLI's defaults
UTM = "EPSG:32633"
ORIGIN = (400000.0, 5500000.0)  # upper-left corner, metres
PIXEL = 10.0
SIZES = (10000, 5000)
QUICK_SIZES = (2048, 1024)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def default_data() -> Path:
    shared = os.environ.get("AHCL_SHARED")
    return (Path(shared) if shared else REPO.parent / "shared") / "data" / "rsscn7"


def chip_paths(data: Path) -> list[Path]:
    """The chip images under ``data`` (sorted; empty when the folder is absent)."""
    if not data.is_dir():
        return []
    return sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _chip(path: Path) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    if image.size != (BLOCK, BLOCK):
        image = image.resize((BLOCK, BLOCK), Image.Resampling.BILINEAR)
    return np.asarray(image)


def write_scene(path: Path, side: int, chips: list[Path], seed: int) -> dict[str, Any]:
    """A ``side`` × ``side`` RGB GeoTIFF, written one block row at a time: chips picked by
    ``seed`` laid on the block grid (cropped at the right and bottom edges), or seeded noise
    when ``chips`` is empty."""
    rng = np.random.default_rng(seed)
    per_row = math.ceil(side / BLOCK)
    tic = time.perf_counter()
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3,
                       dtype="uint8", crs=UTM, tiled=True, blockxsize=BLOCK, blockysize=BLOCK,
                       compress="deflate",
                       transform=Affine(PIXEL, 0.0, ORIGIN[0], 0.0, -PIXEL, ORIGIN[1])) as dst:
        for row in range(0, side, BLOCK):
            height = min(BLOCK, side - row)
            if chips:
                picks = rng.integers(0, len(chips), per_row)
                strip = np.concatenate([_chip(chips[i]) for i in picks], axis=1)
            else:
                strip = rng.integers(0, 256, (BLOCK, per_row * BLOCK, 3), dtype=np.uint8)
            dst.write(np.moveaxis(strip[:height, :side], -1, 0),
                      window=Window(0, row, side, height))
    return {"side": side, "file_mb": round(path.stat().st_size / 2**20, 1),
            "write_s": round(time.perf_counter() - tic, 1)}


def train_tiny_run(root: Path, backbone: str) -> Path:
    """A 64-bit frozen-backbone AHCL run on 60 synthetic 64-px scenes (seconds): only its
    encoder matters here, and that is the backbone (ImageNet weights when cached) + the head.
    A finished run of the same settings already in ``root`` is reused."""
    out = root / f"run-{backbone}"
    if (out / "run.json").is_file():
        print(f"reusing the run {out}", file=sys.stderr)
        return out
    print(f"training a tiny {backbone} run in {out} ...", file=sys.stderr)
    data = write_synthetic_dataset(root / "train-data", per_class=10, size=64, seed=0,
                                   overwrite=True)
    train(out, data=str(data), backbone=backbone, mode="frozen",
          pretrained=weights_available(backbone), n_bits=64, seed=0, outer_iters=3,
          num_workers=0, feature_cache=str(root / "feature-cache"))
    return out


# --- the measuring subprocess ----------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's RSS high-water mark in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def cpu_s() -> float:
    """CPU seconds (user + system, all threads) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_calls(fn: Callable[..., Any],
                spent: list[tuple[int, float]]) -> Callable[..., Any]:
    """``fn(images)`` with ``(len(images), wall seconds)`` of each call appended to ``spent``."""
    def wrapped(images: Any, *args: Any, **kwargs: Any) -> Any:
        tic = time.perf_counter()
        try:
            return fn(images, *args, **kwargs)
        finally:
            spent.append((len(images), time.perf_counter() - tic))
    return wrapped


def batch_rates(spent: list[tuple[int, float]]) -> dict[str, float]:
    """Tiles/s of the encoding batches: median and best (the best is the least disturbed by
    other work on the machine)."""
    rates = [n / s for n, s in spent if s > 0]
    return {"batches": len(spent), "median": round(float(np.median(rates)), 1),
            "best": round(max(rates), 1)} if rates else {"batches": 0}


def read_pass(tiles: Any) -> dict[str, float]:
    """Reading alone: every tile of ``tiles`` made (read, RGB, footprint), none encoded."""
    tic, cpu = time.perf_counter(), cpu_s()
    n = sum(1 for _ in tiles)
    return {"tiles": n, "s": time.perf_counter() - tic, "cpu_s": cpu_s() - cpu}


def whole_pass(run: Any, scene: str) -> dict[str, Any]:
    """The CLI's ``Run.encode_scenes`` on ``scene``, its encoding calls timed on the instance."""
    spent: list[tuple[int, float]] = []
    plain = run.encode_images
    run.encode_images = timed_calls(plain, spent)  # an instance attribute: this run only
    try:
        tic, cpu = time.perf_counter(), cpu_s()
        codes, _, counts = run.encode_scenes([scene], tile=TILE, stride=STRIDE)
        seconds, cpu = time.perf_counter() - tic, cpu_s() - cpu
    finally:
        del run.encode_images
    assert codes.shape[0] == counts["tiles"], (codes.shape, counts)
    return {"s": seconds, "cpu_s": cpu, "encode_s": sum(t for _, t in spent), "spent": spent,
            "counts": counts}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One scene in this (fresh) process: warm-up, then ``repeats`` × (reading alone, the
    whole); the fastest of each is reported, every run kept (see module doc)."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])  # a script, not the library: it may set this
    tic = time.perf_counter()
    run = load_run(spec["run"], device=spec["device"], num_workers=spec["workers"])
    run.encoder()
    load_s = time.perf_counter() - tic
    tiles = scene_tiles(spec["scene"], tile=TILE, stride=STRIDE)
    run.encode_images([t.image for t in islice(tiles, spec["warmup"])])
    warm_mb = peak_rss_mb()
    load_start = _load_average()
    reads, wholes = [], []
    for _ in range(spec["repeats"]):
        reads.append(read_pass(tiles))
        wholes.append(whole_pass(run, spec["scene"]))
    read, whole = min(reads, key=lambda r: r["s"]), min(wholes, key=lambda w: w["s"])
    counts, n = whole["counts"], whole["counts"]["tiles"]
    assert all(r["tiles"] == n for r in reads), (reads, counts)
    read_s, total_s, encode_s = read["s"], whole["s"], whole["encode_s"]
    return {
        "tiles": n, "nodata_skipped": counts["nodata_skipped"],
        "edge_skipped": counts["edge_skipped"], "repeats": spec["repeats"],
        "load_s": round(load_s, 3), "read_s": round(read_s, 3), "total_s": round(total_s, 3),
        "encode_s": round(encode_s, 3), "rest_s": round(total_s - encode_s, 3),
        "read_share": round(read_s / total_s, 3), "encode_share": round(encode_s / total_s, 3),
        "tiles_s": round(n / total_s, 1), "read_tiles_s": round(n / read_s, 1),
        "encode_tiles_s": round(n / encode_s, 1),
        "encode_batch_tiles_s": batch_rates([b for w in wholes for b in w["spent"]]),
        "read_cpu_s": round(read["cpu_s"], 3), "total_cpu_s": round(whole["cpu_s"], 3),
        "runs": {"read_s": [round(r["s"], 3) for r in reads],
                 "total_s": [round(w["s"], 3) for w in wholes]},
        "rss_after_warmup_mb": round(warm_mb, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "torch_threads": torch.get_num_threads(),
        "workers": run.reading_workers,
        "load_average": {"start": load_start, "end": _load_average()},
    }


def in_subprocess(spec: dict[str, Any], cachemax: int | None) -> dict[str, Any]:
    """:func:`measure` in a fresh interpreter; ``cachemax`` MB as ``GDAL_CACHEMAX`` (None: the
    environment's own setting, GDAL's default when unset)."""
    env = dict(os.environ, AHCL_PROGRESS="0")
    if cachemax is not None:
        env["GDAL_CACHEMAX"] = str(cachemax)
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measuring {spec['scene']} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["gdal_cachemax"] = env.get("GDAL_CACHEMAX")
    return result


# --- the parent: scenes, run, measurements, report -------------------------------------------


def bench(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    load_start = _load_average()
    chips = chip_paths(Path(args.data))
    if not chips:
        print(f"warning: no RSSCN7 chips under {args.data}: the scenes are seeded noise, which "
              "compresses worse than imagery (reading is slower; figures not comparable)",
              file=sys.stderr)
    if args.run:
        run_dir = Path(args.run)
    else:
        run_dir = train_tiny_run(root, args.backbone)
    run = load_run(run_dir, device=args.device)
    configs: list[int | None] = [None] + ([args.gdal_cachemax] if args.gdal_cachemax else [])
    scenes = []
    for side in args.sizes:
        path = root / f"scene-{side}.tif"
        print(f"writing {side} x {side} scene ...", file=sys.stderr)
        scene = write_scene(path, side, chips, args.seed)
        scene["measured"] = []
        # Each GDAL cache setting read as the library does by default, then the last setting
        # again with --workers reading processes, compared with it.
        for cachemax, workers in [(c, None) for c in configs] + [(configs[-1], args.workers)]:
            print(f"  measuring (GDAL_CACHEMAX {cachemax or 'default'}, workers "
                  f"{'default' if workers is None else workers}) ...", file=sys.stderr)
            spec = {"run": str(run_dir), "scene": str(path), "device": args.device,
                    "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats,
                    "workers": workers}
            scene["measured"].append(in_subprocess(spec, cachemax))
        scenes.append(scene)
    return {
        "cpu": cpu_info(), "torch": torch.__version__, "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__, "ram_mb": _ram_mb(),
        "load_average": {"start": load_start, "end": _load_average()},
        "command": " ".join(["python", "benchmarks/bench_scenes.py", *args.argv]),
        "quick": args.quick, "content": "rsscn7" if chips else "noise",
        "chips": len(chips), "run": str(args.run) if args.run else "trained by the benchmark",
        "backbone": run.config.get("backbone"), "pretrained": run.config.get("pretrained"),
        "n_bits": run.n_bits, "device": args.device, "tile": TILE, "stride": STRIDE,
        "block": BLOCK, "warmup_tiles": args.warmup,
        "memory_method": "RSS high-water mark (ru_maxrss) of a fresh subprocess per scene and "
                         "GDAL_CACHEMAX setting, after load, warm-up, reading pass and "
                         "encode_scenes; includes torch, the model and GDAL's block cache",
        "scenes": scenes, "memory": memory_summary(scenes, configs),
    }


def memory_summary(scenes: list[dict[str, Any]], configs: list[int | None]) -> dict[str, Any]:
    """Peak RSS per scene side for each GDAL cache setting, and largest / smallest scene."""
    out = {}
    for i, cachemax in enumerate(configs):
        peaks = {str(s["side"]): s["measured"][i]["peak_rss_mb"] for s in scenes}
        by_side = sorted(scenes, key=lambda s: s["side"])
        ratio = by_side[-1]["measured"][i]["peak_rss_mb"] / by_side[0]["measured"][i]["peak_rss_mb"]
        key = "gdal_default" if cachemax is None else f"gdal_cachemax_{cachemax}"
        out[key] = {"peak_rss_mb": peaks, "largest_over_smallest": round(ratio, 2)}
    return out


def _load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages: other work on the machine skews the timings."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _ram_mb() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20)
    except (ValueError, OSError, AttributeError):
        return None


def measured_lines(m: dict[str, Any]) -> list[str]:
    """The report's lines for one scene under one GDAL cache setting."""
    cache = f"GDAL_CACHEMAX={m['gdal_cachemax']}" if m["gdal_cachemax"] else "GDAL default"
    cache += f", {m['workers']} reading workers" if m["workers"] else ", reading in-process"
    batches, load = m["encode_batch_tiles_s"], m["load_average"]
    return [
        f"  [{cache}] {m['tiles']} tiles in {m['total_s']:.1f} s = {m['tiles_s']:.1f} tiles/s, "
        f"fastest of {m['runs']['total_s']} s (run loaded in {m['load_s']:.1f} s, not counted)",
        f"    reading alone (passes {m['runs']['read_s']} s): {m['read_s']:.1f} s = "
        f"{100 * m['read_share']:.1f} % of the whole ({m['read_tiles_s']:.0f} tiles/s)",
        f"    within the whole: encoding {m['encode_s']:.1f} s ({100 * m['encode_share']:.1f} %),"
        f" reading and the rest {m['rest_s']:.1f} s; encoding batches median "
        f"{batches.get('median')}, best {batches.get('best')} tiles/s",
        f"    CPU time: reading alone {m['read_cpu_s']:.1f} s, the whole {m['total_cpu_s']:.1f} s "
        f"({m['total_cpu_s'] / m['total_s']:.2f} cores busy); load average {load['start']} -> "
        f"{load['end']}",
        f"    peak RSS {m['peak_rss_mb']:.0f} MB (after warm-up {m['rss_after_warmup_mb']:.0f} MB)",
    ]


def report(r: dict[str, Any]) -> str:
    cpu = r["cpu"]
    flags = (" ".join(f"{k}={'yes' if v else 'no'}" for k, v in cpu["flags"].items())
             if cpu["flags"] else "flags unknown")
    first = r["scenes"][0]["measured"][0]
    lines = [
        f"cpu: {cpu['model'] or 'unknown'} ({cpu['cores']} cores usable) | {flags}",
        f"torch {r['torch']} ({first['torch_threads']} threads), rasterio {r['rasterio']} / "
        f"GDAL {r['gdal']}, RAM {r['ram_mb']} MB; load average {r['load_average']['start']} "
        f"at start, {r['load_average']['end']} at end",
        f"run: {r['backbone']} ({'ImageNet' if r['pretrained'] else 'random init'}), "
        f"{r['n_bits']} bits, {r['device']}; tiles {r['tile']} at stride {r['stride']}; "
        f"content: {r['content']} ({r['chips']} chips)",
    ]
    for s in r["scenes"]:
        lines.append(f"scene {s['side']} x {s['side']} ({s['file_mb']} MB deflate, written in "
                     f"{s['write_s']} s):")
        lines += [line for m in s["measured"] for line in measured_lines(m)]
    for key, mem in r["memory"].items():
        peaks = ", ".join(f"{side} px {mb:.0f} MB" for side, mb in mem["peak_rss_mb"].items())
        lines.append(f"peak RSS [{key}]: {peaks}; largest / smallest scene = "
                     f"{mem['largest_over_smallest']:.2f}x")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="run folder to encode with (default: train a tiny one)")
    ap.add_argument("--data", default=str(default_data()), help="RSSCN7 chips for the scenes")
    ap.add_argument("--sizes", help="scene sides in pixels, comma-separated "
                                    "(default 10000,5000; --quick 2048,1024)")
    ap.add_argument("--workdir", help="folder for scenes and the trained run (default: a "
                                      "temporary folder, removed after)")
    ap.add_argument("--out", help=f"JSON results (default {DEFAULT_OUT.relative_to(REPO)}; "
                                  "--quick: none)")
    ap.add_argument("--backbone", help="of the trained run (default mobilenet_v2; --quick "
                                       "tiny_cnn)")
    ap.add_argument("--device", default="cpu", help="where the run encodes (default cpu)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's own choice)")
    ap.add_argument("--gdal-cachemax", type=int, default=64,
                    help="MB: also measure each scene with GDAL_CACHEMAX set so (0: skip)")
    ap.add_argument("--warmup", type=int, default=64, help="tiles encoded before timing")
    ap.add_argument("--workers", type=int, default=default_workers(),
                    help="reading processes of the extra measurement (default min(cores, 8))")
    ap.add_argument("--repeats", type=int, default=None,
                    help="passes of each kind per scene, the fastest reported (default 3; "
                         "--quick 1)")
    ap.add_argument("--seed", type=int, default=0, help="chip picks (or noise)")
    ap.add_argument("--quick", action="store_true", help="small scenes and tiny_cnn: a smoke run")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    args.sizes = sizes or list(QUICK_SIZES if args.quick else SIZES)
    args.backbone = args.backbone or ("tiny_cnn" if args.quick else "mobilenet_v2")
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.out = args.out or (None if args.quick else str(DEFAULT_OUT))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-scenes-") as tmp:
        root = Path(args.workdir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        result = bench(args, root)
    if args.out:
        atomic_write_json(args.out, result)
        print(f"wrote {args.out}", file=sys.stderr)
    print(json.dumps(result) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
