"""The prepared accelerator benchmark: AHCL in the paper's setting (finetuning the CNN end to end),
encoding throughput, and the database-code step at n = 10M, on one device.

Three parts, written to ``--out`` as ``results.json`` and ``results.md``:

1. Finetune AHCL, ADSH and DPSH (MobileNetV2 ImageNet weights) at 32 and 64 bits on RSSCN7 with
   20% of each class as queries (seed 0), beside frozen mode on the same split: mAP and wall time.
   Schedule (stated in the results): AHCL/ADSH 8 outer iterations × 2 epochs over Ω = all items,
   DPSH 16 epochs (the same passes), Adam, lr 1e-4 (the pretrained backbone is trained too),
   batch 64, scene augmentation; frozen mode uses the project's defaults (lr 1e-3, 30 × 2).
2. Encoding throughput over ≥ 10,000 JPEG chips cut from RSSCN7 (five 128-px crops per scene,
   re-encoded at quality 90, so decoding is real): images/s at batch 256, and the share of the
   time spent decoding (the same loader with no network).
3. The code step at n = 10,000,000, 64 bits: one sweep on the device vs numpy on the CPU.

Run on the device machine (no server dependencies are imported)::

    pip install --no-deps -e .
    python benchmarks/bench_device.py --data .device-data/rsscn7 --out benchmarks/results/device

``--smoke`` runs every part at a tiny size on the CPU in seconds (the test suite calls it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

import ahcl
from ahcl.data.folder import read_image_folder
from ahcl.device import Placement, default_workers, placement
from ahcl.methods.solver import code_step_from_stats, code_step_from_stats_torch
from ahcl.models.backbones import create_backbone
from ahcl.models.features import extract_features

REPO = Path(__file__).resolve().parents[1]
FINETUNE = {"outer_iters": 8, "epochs": 2, "num_samples": None, "lr": 1e-4, "lr_milestones": [6],
            "batch_size": 64}
DPSH_FINETUNE = {"epochs": 16, "lr": 1e-4, "batch_size": 64}


def machine(place: Placement) -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "device": str(place.device), "precision": place.precision}
    if place.is_cuda:
        info["gpu"] = torch.cuda.get_device_name(place.device)
    return info


def finetune_part(data: Path, out: Path, place: Placement, bits: list[int],
                  smoke: bool) -> list[dict[str, Any]]:
    rows = []
    common = {"data": str(data), "device": str(place.device), "precision": place.precision,
              "query_fraction": 0.2, "seed": 0}
    backbone = {"backbone": "tiny_cnn", "pretrained": False} if smoke else {}
    schedule = ({"outer_iters": 1, "epochs": 1, "num_samples": None, "lr_milestones": []}
                if smoke else FINETUNE)
    dpsh = {"epochs": 1} if smoke else DPSH_FINETUNE
    plan = [(m, "finetune", schedule if m != "dpsh" else dpsh) for m in ("ahcl", "adsh", "dpsh")]
    plan += [("ahcl", "frozen", {"outer_iters": 1, "epochs": 1} if smoke else {})]
    for n_bits in bits:
        for method, mode, extra in plan:
            run_dir = out / "runs" / f"{method}-{mode}-{n_bits}"
            shutil.rmtree(run_dir, ignore_errors=True)
            say(f"train {method} {mode} {n_bits} bits")
            tic = time.perf_counter()
            run = ahcl.train(run_dir, method=method, mode=mode, n_bits=n_bits, **common,
                             **backbone, **extra)
            wall = time.perf_counter() - tic
            report = run.evaluate(topk=(10, 100))
            rows.append({"method": method, "mode": mode, "n_bits": n_bits, "map": report.map,
                         "map_at_100": report.map_at[100], "p_at_10": report.precision_at[10],
                         "wall_s": wall, "schedule": extra})
            say(f"  mAP {report.map:.4f}  {wall:.1f} s")
    return rows


def cut_chips(data: Path, dest: Path, per_image: int, limit: int | None) -> list[str]:
    """Five 128-px crops per scene (corners and centre), saved as JPEG quality 90."""
    folder = read_image_folder(data, check_images=False)
    paths = [str(p) for p in folder.absolute_paths][:limit]
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            s = min(w, h) // 2
            boxes = [(0, 0), (w - s, 0), (0, h - s), (w - s, h - s), ((w - s) // 2, (h - s) // 2)]
            for j, (x, y) in enumerate(boxes[:per_image]):
                name = dest / f"{i:05d}-{j}.jpg"
                img.crop((x, y, x + s, y + s)).save(name, quality=90)
                out.append(str(name))
    return out


class _Decode(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB"))


def encode_part(data: Path, place: Placement, smoke: bool, tmp: Path) -> dict[str, Any]:
    chips = cut_chips(data, tmp / "chips", 5, 16 if smoke else None)
    name = "tiny_cnn" if smoke else "mobilenet_v2"
    backbone = create_backbone(name, pretrained=not smoke)
    batch = 16 if smoke else 256
    workers = default_workers()
    say(f"encode {len(chips)} chips, batch {batch}, {workers} workers")
    loader = DataLoader(_Decode(chips, backbone.transform), batch_size=batch,
                        num_workers=workers)
    tic = time.perf_counter()
    for _ in loader:
        pass
    decode_s = time.perf_counter() - tic
    extract_features(chips[:batch], backbone, cache_dir=tmp / "warm", batch_size=batch,
                     num_workers=workers, placement=place)  # warm-up (kernels, workers)
    tic = time.perf_counter()
    extract_features(chips, backbone, cache_dir=tmp / "cache", batch_size=batch,
                     num_workers=workers, placement=place)
    total_s = time.perf_counter() - tic
    return {"images": len(chips), "batch": batch, "workers": workers, "backbone": name,
            "images_per_s": len(chips) / total_s, "seconds": total_s,
            "decode_only_s": decode_s, "decode_share": min(decode_s / total_s, 1.0),
            "note": "extract_features from JPEG files (hashing, decode in workers, forward, "
                    "cache writes) vs the same DataLoader decoding alone"}


def code_step_part(place: Placement, smoke: bool) -> dict[str, Any]:
    n, c, K = (20_000 if smoke else 10_000_000), 64, 45
    rng = np.random.default_rng(0)
    V = np.where(rng.random((n, c), dtype=np.float32) < 0.5, -1, 1).astype(np.int8)
    labels = rng.integers(0, K, n)
    U = np.tanh(rng.normal(size=(2000, c))).astype(np.float32)
    M = (U.T @ U).astype(np.float32)
    R = np.zeros((K, c), np.float32)
    np.add.at(R, rng.integers(0, K, 2000), U)
    say(f"code step n = {n:,}, {c} bits")
    tic = time.perf_counter()
    cpu = code_step_from_stats(V.copy(), labels, M, R, 0.1, 200.0)
    cpu_s = time.perf_counter() - tic
    out = {"n": n, "n_bits": c, "cpu_numpy_s": cpu_s}
    dev = place.device
    code_step_from_stats_torch(V[:1000].copy(), labels[:1000], M, R, 0.1, 200.0, device=dev)
    if place.is_cuda:
        torch.cuda.synchronize(dev)
    tic = time.perf_counter()
    got = code_step_from_stats_torch(V.copy(), labels, M, R, 0.1, 200.0, device=dev)
    out[f"{dev.type}_torch_s"] = time.perf_counter() - tic
    out["bits_equal"] = float(np.mean(got == cpu))
    out["speedup"] = cpu_s / out[f"{dev.type}_torch_s"]
    return out


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = ["# Device benchmark", "", f"Command: `{results['command']}`", "",
             f"Machine: {m.get('gpu', 'no GPU')} · {m['cpu']} ({m['cores']} cores) · "
             f"torch {m['torch']} · device {m['device']}, precision {m['precision']}", "",
             "## Finetune vs frozen (RSSCN7, 20% queries, seed 0)", "",
             f"Finetune schedule: AHCL/ADSH {FINETUNE}; DPSH {DPSH_FINETUNE}; scene augmentation.",
             "", "| method | mode | bits | mAP | mAP@100 | P@10 | wall (s) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in results["finetune"]:
        lines.append(f"| {r['method']} | {r['mode']} | {r['n_bits']} | {r['map']:.4f} | "
                     f"{r['map_at_100']:.4f} | {r['p_at_10']:.4f} | {r['wall_s']:.1f} |")
    e, s = results["encode"], results["code_step"]
    lines += ["", "## Encoding", "",
              f"{e['images']} JPEG chips, batch {e['batch']}, {e['workers']} workers, "
              f"{e['backbone']}: **{e['images_per_s']:.0f} images/s**; decoding alone took "
              f"{e['decode_only_s']:.1f} s of {e['seconds']:.1f} s "
              f"({e['decode_share']:.0%}).", "", "## Code step", "",
              f"n = {s['n']:,}, {s['n_bits']} bits, one sweep: CPU numpy {s['cpu_numpy_s']:.2f} s, "
              + ", ".join(f"{k} {v:.2f} s" for k, v in s.items() if k.endswith("_torch_s"))
              + f" ({s['speedup']:.1f}×; bits equal {s['bits_equal']:.6f}).", ""]
    return "\n".join(lines)


def say(line: str) -> None:
    print(f"bench_device: {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "rsscn7")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "device")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--bits", default="32,64")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on any device, in seconds")
    ap.add_argument("--parts", default="finetune,encode,code_step")
    ap.add_argument("--weights", type=Path, help="a MobileNetV2 weights file to place in torch's "
                    "hub cache first (what benchmarks/device_prepare.sh copied)")
    args = ap.parse_args(argv)
    if args.weights is not None:
        target = Path(torch.hub.get_dir()) / "checkpoints" / args.weights.name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(args.weights, target)
    place = placement(args.device, args.precision)
    parts = set(args.parts.split(","))
    data = args.data
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"command": " ".join(["python", *sys.argv]),
                               "machine": machine(place), "finetune": [], "encode": {},
                               "code_step": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.smoke and not data.is_dir():
            data = ahcl.write_synthetic_dataset(tmp / "syn", per_class=6, size=48, seed=0)
        os.environ.setdefault("AHCL_CACHE", str(tmp / "feature-cache"))
        if "finetune" in parts:
            bits = [int(b) for b in args.bits.split(",")]
            results["finetune"] = finetune_part(data, args.out, place, bits[:1] if args.smoke
                                                else bits, args.smoke)
        if "encode" in parts:
            results["encode"] = encode_part(data, place, args.smoke, tmp)
        if "code_step" in parts:
            results["code_step"] = code_step_part(place, args.smoke)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if results["encode"] and results["code_step"]:
        (args.out / "results.md").write_text(markdown(results))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
