"""The benchmark report: ``results.json``, ``results.md`` and plots, from the finished cells."""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ahcl._io import atomic_write_json, atomic_write_text
from ahcl.eval.metrics import PRCurve, RetrievalReport

if TYPE_CHECKING:
    from ahcl.bench.runner import BenchmarkConfig, Workspace

# (key in the table, title, how to read it from a cell's metrics)
ACCURACY = (
    ("map", "mAP@all", lambda m: m["map"]),
    ("map_at_100", "mAP@100", lambda m: m["map_at"]["100"]),
    ("p_at_10", "P@10", lambda m: m["precision_at"]["10"]),
    ("p_radius_2", "Precision within Hamming radius 2", lambda m: m["precision_at_radius"]),
    ("map_tie_aware", "mAP@all, tie-aware (expected over orders of tied items)",
     lambda m: m["map_tie_aware"]),
)
EFFICIENCY = ("train_s", "db_codes_s", "db_codes_head_s", "query_s_per_image",
              "query_head_s_per_image")
SYMMETRIC_DEEP = ("dpsh", "hashnet", "dsh", "csq")


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single seed)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarise(cells: list[dict[str, Any]], methods: list[str], bits: list[int]) -> dict[str, Any]:
    """Mean ± std over seeds of every accuracy figure, and efficiency means, per method × bits."""
    out: dict[str, Any] = {}
    for name in methods:
        out[name] = {}
        for b in bits:
            group = [c for c in cells if c["method"] == name and c["n_bits"] == b]
            if not group:
                continue
            entry: dict[str, Any] = {"seeds": [c["seed"] for c in group]}
            for key, _, read in ACCURACY:
                mean, std = _mean_std([read(c["metrics"]) for c in group])
                entry[key] = {"mean": mean, "std": std}
            for key in EFFICIENCY:
                entry[key] = _mean_std([c["timings"][key] for c in group])[0]
            peaks = [c["memory"]["peak_rss_mib"] for c in group]
            extras = [c["memory"]["extra_rss_mib"] for c in group]
            entry["peak_rss_mib"] = max(peaks) if None not in peaks else None
            entry["extra_rss_mib"] = max(extras) if None not in extras else None
            out[name][str(b)] = entry
    return out


def mean_report(dicts: list[dict[str, Any]]) -> RetrievalReport:
    """A :class:`RetrievalReport` whose curves are the means of several reports' (for plots)."""
    first = dicts[0]

    def avg(get) -> np.ndarray:
        return np.mean([np.asarray(get(d), dtype=np.float64) for d in dicts], axis=0)

    curve = PRCurve(np.asarray(first["pr_curve"]["radius"]),
                    avg(lambda d: d["pr_curve"]["precision"]), avg(lambda d: d["pr_curve"]["recall"]))
    return RetrievalReport(
        map=float(avg(lambda d: d["map"])), map_tie_aware=float(avg(lambda d: d["map_tie_aware"])),
        map_at={int(k): float(avg(lambda d: d["map_at"][k])) for k in first["map_at"]},
        precision_at={int(k): float(avg(lambda d: d["precision_at"][k]))
                      for k in first["precision_at"]},
        recall_at={int(k): float(avg(lambda d: d["recall_at"][k])) for k in first["recall_at"]},
        pr_curve=curve, precision_at_radius=float(avg(lambda d: d["precision_at_radius"])),
        radius=int(first["radius"]), n_queries=int(first["n_queries"]), n_db=int(first["n_db"]),
        n_bits=int(first["n_bits"]),
        n_queries_without_relevant=int(first["n_queries_without_relevant"]),
        precision_curve_ks=list(first["precision_curve_ks"]),
        precision_curve=[float(p) for p in avg(lambda d: d["precision_curve"])])


def environment() -> dict[str, Any]:
    """Library versions and the machine."""
    import torch
    import torchvision

    from ahcl import __version__

    return {
        "versions": {"ahcl": __version__, "python": sys.version.split()[0],
                     "numpy": np.__version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
    }


def write_plots(summary: dict[str, Any], cells: list[dict[str, Any]], methods: list[str],
                plot_bits: int, out: Path) -> dict[str, str]:
    """mAP vs bits, PR curve and P@K at ``plot_bits`` (curves averaged over seeds)."""
    from ahcl.eval.plots import plot_map_vs_bits, plot_pr_curve, plot_precision_at_k

    plots = out / "plots"
    files = {}
    by_bits = {m: {int(b): e["map"]["mean"] for b, e in summary[m].items()} for m in methods
               if summary.get(m)}
    files["map_vs_bits"] = plot_map_vs_bits(by_bits, plots / "map_vs_bits.png")
    reports = {m: mean_report([c["metrics"] for c in cells
                               if c["method"] == m and c["n_bits"] == plot_bits])
               for m in methods if any(c["method"] == m and c["n_bits"] == plot_bits
                                       for c in cells)}
    if reports:
        files["pr_curve"] = plot_pr_curve(reports, plots / f"pr_curve_{plot_bits}.png")
        files["precision_at_k"] = plot_precision_at_k(reports,
                                                      plots / f"precision_at_k_{plot_bits}.png")
    return {k: str(Path(v).relative_to(out)) for k, v in files.items()}


def write_report(config: "BenchmarkConfig", ws: "Workspace", tuning: dict[str, Any],
                 cells: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """Write ``results.json``, ``results.md`` and the plots; return the results dict."""
    from ahcl.bench.markdown import render_markdown

    summary = summarise(cells, config.methods, config.bits)
    plot_bits = 32 if 32 in config.bits else int(config.tune_bits)
    results = {
        "format": "ahcl-benchmark-results", "version": 1, "command": config.command,
        "config": dataclasses.asdict(config),
        "budgets": {m: config.budget(m) for m in config.methods},
        **environment(),
        "data": {"root": str(ws.root), "n_images": len(ws.paths), "classes": ws.classes,
                 "n_db": int(len(ws.db)), "n_query": int(len(ws.query)),
                 "n_train": int(len(ws.train)), "n_val": int(len(ws.val)),
                 "backbone_weights": ws.weights_id},
        "backbone_s_per_image": ws.backbone_s_per_image,
        "features_s": ws.features_s,
        "tuning": tuning,
        "summary": summary,
        "plots": write_plots(summary, cells, config.methods, plot_bits, out),
        "plot_bits": plot_bits,
        "cells": cells,
    }
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", render_markdown(results))
    return results
