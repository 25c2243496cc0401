"""The demo: train AHCL at several code lengths on a real or synthetic archive and report.

Library side of ``ahcl demo``: picks the data (a folder, a registered dataset from the cache or
downloaded, else synthetic scenes) and the backbone (ImageNet MobileNetV2 from torchvision's
cache or download, else a small CNN trained from scratch), trains one run per code length,
evaluates each on its held-out queries and writes ``report.md`` with plots.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ahcl._io import atomic_write_text
from ahcl.config import config_from_dict
from ahcl.data.images import load_rgb
from ahcl.data.registry import dataset_root
from ahcl.data.synthetic import write_synthetic_dataset
from ahcl.device import placement
from ahcl.errors import AhclError
from ahcl.eval.metrics import RetrievalReport, evaluate
from ahcl.eval.plots import plot_map_vs_bits, plot_pr_curve, plot_precision_at_k
from ahcl.models import backbones
from ahcl.run import load_run
from ahcl.training import train_run

log = logging.getLogger(__name__)

SYNTHETIC_PER_CLASS = 50
SYNTHETIC_SIZE = 64
DEFAULT_DATASET = "ucmerced"


@dataclass
class DemoResult:
    """What the demo produced: one row per code length, and where things are."""

    out: Path
    data: Path
    data_note: str
    backbone: str
    backbone_note: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    report: Path | None = None


def choose_data(out: Path, data: str | None, dataset: str | None,
                say: Callable[[str], None]) -> tuple[Path, str]:
    """The dataset folder, and a note on where it came from."""
    if data:
        return dataset_root(data=data), f"folder {data}"
    name = dataset or DEFAULT_DATASET
    try:
        return dataset_root(dataset=name), f"registered dataset {name}"
    except AhclError as exc:
        if dataset:  # asked for by name: do not silently swap it for something else
            raise
        say(f"{name} is neither in the cache nor downloadable ({type(exc).__name__}: {exc}); "
            "using synthetic scenes instead")
    target = out / "data" / "synthetic"
    if not target.exists():
        write_synthetic_dataset(target, per_class=SYNTHETIC_PER_CLASS, size=SYNTHETIC_SIZE, seed=0)
    return target, (f"synthetic scenes ({SYNTHETIC_PER_CLASS} per class, "
                    f"{SYNTHETIC_SIZE} px, seed 0)")


def choose_backbone(say: Callable[[str], None]) -> tuple[dict[str, Any], str]:
    """Config overrides for the backbone, and a note: ImageNet MobileNetV2 when it can be had."""
    if backbones.weights_available("mobilenet_v2"):
        return {"backbone": "mobilenet_v2"}, "mobilenet_v2, ImageNet weights (torchvision cache)"
    try:
        # torchvision downloads into its cache
        backbones.create_backbone("mobilenet_v2", pretrained=True)
        return {"backbone": "mobilenet_v2"}, "mobilenet_v2, ImageNet weights (downloaded)"
    except AhclError as exc:
        say(f"MobileNetV2 ImageNet weights are not available ({exc}); "
            "training a small CNN from scratch instead")
    return ({"backbone": "tiny_cnn", "mode": "finetune", "pretrained": False, "epochs": 3,
             "outer_iters": 15, "lr_milestones": [10]},
            "tiny_cnn trained from scratch (finetune mode; no pretrained weights)")


def run_demo(out: str | Path, bits: Sequence[int] = (16, 32, 64), data: str | None = None,
             dataset: str | None = None, seed: int = 0,
             say: Callable[[str], None] = log.info, device: str = "auto",
             precision: str = "auto") -> DemoResult:
    """Train, evaluate and report AHCL at each code length in ``bits`` (on ``device``, with the
    network in ``precision``; see :mod:`ahcl.device`).

    Finished runs under ``out`` are reused, so an interrupted demo continues where it stopped.
    """
    placement(device, precision)  # an unavailable device fails before anything is written
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root, data_note = choose_data(out, data, dataset, say)
    overrides, backbone_note = choose_backbone(say)
    result = DemoResult(out, root, data_note, overrides["backbone"], backbone_note)
    reports = {}
    for n_bits in bits:
        run_dir = out / f"run-{n_bits}bits"
        config = config_from_dict({"data": str(root), "n_bits": n_bits, "seed": seed,
                                   "device": device, "precision": precision, **overrides})
        say(f"training AHCL, {n_bits} bits -> {run_dir}")
        tic = time.perf_counter()
        run = train_run(config, run_dir, resume=run_dir.exists())
        train_s = _train_seconds(run_dir, time.perf_counter() - tic)
        paths, labels = run.queries()
        run = load_run(run_dir, device=device, precision=precision)
        tic = time.perf_counter()
        # Timed from the image files through the backbone, bypassing the feature cache.
        codes = run.encode_images([load_rgb(p) for p in paths])
        encode_ms = (time.perf_counter() - tic) * 1000 / max(len(paths), 1)
        report = evaluate(codes, labels, run.db_codes, run.db_labels, topk=(10, 100))
        reports[n_bits] = report
        result.rows.append({"n_bits": n_bits, "map": report.map, "map_at_100": report.map_at[100],
                            "p_at_10": report.precision_at[10], "train_s": train_s,
                            "encode_ms_per_image": encode_ms, "n_db": report.n_db,
                            "n_queries": report.n_queries, "run": str(run_dir)})
    result.report = write_report(result, reports)
    return result


def _train_seconds(run_dir: Path, fallback: float) -> float:
    try:
        return float(json.loads((run_dir / "timings.json").read_text())["total_s"])
    except (OSError, ValueError, KeyError):
        return fallback


def format_table(rows: list[dict[str, Any]]) -> str:
    """The demo's results as a Markdown table."""
    lines = ["| bits | mAP | mAP@100 | P@10 | train (s) | query encode (ms/image) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n_bits']} | {r['map']:.4f} | {r['map_at_100']:.4f} | "
                     f"{r['p_at_10']:.4f} | {r['train_s']:.1f} | {r['encode_ms_per_image']:.1f} |")
    return "\n".join(lines)


def write_report(result: DemoResult, reports: dict[int, RetrievalReport]) -> Path:
    """``report.md`` with the table and the plots (mAP vs bits, PR, P@K)."""
    plot_map_vs_bits({"AHCL": {b: r.map for b, r in reports.items()}},
                     result.out / "map_vs_bits.png")
    named = {f"{b} bits": r for b, r in reports.items()}
    plot_pr_curve(named, result.out / "pr_curve.png")
    plot_precision_at_k(named, result.out / "precision_at_k.png")
    first = result.rows[0] if result.rows else {}
    text = f"""# AHCL demo report

- data: {result.data_note} ({result.data})
- backbone: {result.backbone_note}
- split: 20% of each class as queries (seed 0); database = the rest, with learned codes
- queries: {first.get('n_queries', 0)}, database items: {first.get('n_db', 0)}

{format_table(result.rows)}

Train time includes feature extraction for the database (cached features make a second run
faster); query encode time runs from the image files through the backbone (no cache), one
process, this machine's default torch threads.

![mAP vs bits](map_vs_bits.png)
![precision-recall over Hamming radii](pr_curve.png)
![precision at K](precision_at_k.png)
"""
    path = result.out / "report.md"
    atomic_write_text(path, text)
    return path
