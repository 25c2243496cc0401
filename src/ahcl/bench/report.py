"""The benchmark report: ``results.json``, ``results.md`` and plots, from the finished cells."""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from ahcl._io import atomic_write_json, atomic_write_text
from ahcl._version import __version__
from ahcl.bench.config import NEAR_DUPLICATES_DIR, BenchmarkConfig, Workspace
from ahcl.bench.markdown import render_markdown
from ahcl.bench.summary import mean_report, summarise
from ahcl.eval.plots import plot_map_vs_bits, plot_pr_curve, plot_precision_at_k

def environment() -> dict[str, Any]:
    """Library versions and the machine."""
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


def write_report(config: BenchmarkConfig, ws: Workspace, tuning: dict[str, Any],
                 cells: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """Write ``results.json``, ``results.md`` and the plots; return the results dict."""
    summary = summarise(cells, config.methods, config.bits)
    plot_bits = 32 if 32 in config.bits else int(config.tune_bits)
    results = {
        "format": "ahcl-benchmark-results", "version": 2, "command": config.command,
        "config": dataclasses.asdict(config),
        "budgets": {m: config.budget(m) for m in config.methods},
        **environment(),
        "data": {"root": str(ws.root), "n_images": len(ws.paths), "classes": ws.classes,
                 "n_db": int(len(ws.db)), "n_query": int(len(ws.query)),
                 "n_train": int(len(ws.train)), "n_val": int(len(ws.val)),
                 "backbone_weights": ws.weights_id,
                 "near_duplicates": {"n": int(len(ws.near_sources)), "seed": config.split_seed,
                                     "folder": NEAR_DUPLICATES_DIR}},
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
