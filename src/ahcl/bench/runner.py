"""``ahcl benchmark`` as a library call: every method × bits × seed on one split, resumable.

Protocol (the same for every method, AHCL included):

1. One stratified query/database split (``query_fraction`` of each class, seed ``split_seed``);
   the database is the training set (the authors' protocol). Frozen mode extracts the backbone
   features of all images once, through the feature cache.
2. Model selection: a validation split (``val_fraction`` of each database class) is carved from
   the database; every setting of the method's grid (its spec's ``grid``, at most
   8) is trained on the rest at ``tune_bits`` bits with seed ``tune_seed`` and scored by the mAP of
   the validation items as queries against the rest as database. The best setting is used for
   every code length and seed. Test queries are never looked at during selection.
3. Each cell (method, n_bits, seed) trains on the whole database with the chosen setting and the
   fixed training budget (its spec's ``budget``: passes over the data and the hash head's width,
   shared with AHCL's default), encodes the queries and is evaluated. The cell's
   result is written atomically to ``cells/<method>_<bits>_s<seed>.json``; a rerun skips cells
   (and tuning files) that exist, so an interrupted benchmark resumes where it stopped.
4. Near duplicates (``near_duplicates`` images, 0 disables it): the protocol of ``ahcl evaluate
   --near-duplicates`` (:mod:`ahcl.data.alter`) with seed ``split_seed``. That many database
   images are drawn once (positions in the database order), altered (crop, quarter turn,
   brightness, JPEG) and written once as ``near_duplicates/<i>.png`` (a resume reuses them).
   Each cell encodes the copies as it encodes the queries and records where each copy's source
   ranks in its database codes (recall@1/10/100, mean and median rank).
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ahcl._io import atomic_write_bytes, atomic_write_json
from ahcl._progress import progress_bar
from ahcl.bench.config import (FORMAT, NEAR_DUPLICATES_DIR, TOPK, VERSION, BenchmarkConfig,
                               Workspace)
from ahcl.bench.measure import PeakMemory, backbone_seconds_per_image, sample_rows
from ahcl.bench.report import write_report
from ahcl.data.alter import altered_copy, near_duplicate_rows
from ahcl.data.folder import read_image_folder
from ahcl.data.registry import dataset_root
from ahcl.data.splits import carve_validation, make_split, save_split
from ahcl.errors import AhclError
from ahcl.eval import evaluate, near_duplicate_ranks, near_duplicate_report
from ahcl.methods.registry import GRIDS, KINDS, MAX_TRIALS, create_method
from ahcl.models.backbones import create_backbone
from ahcl.models.features import extract_features


def prepare(config: BenchmarkConfig, out: Path) -> Workspace:
    """Read the data, draw the split, extract features once (frozen), time the backbone."""
    folder = read_image_folder(dataset_root(config.data, config.dataset))
    split = make_split(folder.labels, query_fraction=config.query_fraction, seed=config.split_seed)
    save_split(split, out / "split.json", paths=folder.paths)
    train, val = carve_validation(split.db, folder.labels, config.val_fraction, config.split_seed)
    backbone = create_backbone(config.backbone, pretrained=config.pretrained, seed=0)
    abs_paths = [str(Path(folder.root) / p) for p in folder.paths]
    features, near_features, features_s = None, None, 0.0
    if config.mode == "frozen":  # first, so that unreadable images are reported all at once
        features, features_s = _features(abs_paths, backbone, config)
    near_sources, near_paths = write_near_duplicates(
        [abs_paths[i] for i in split.db], config.near_duplicates, config.split_seed, out)
    if config.mode == "frozen" and near_paths:
        near_features, seconds = _features(near_paths, backbone, config)
        features_s += seconds
    timing = out / "backbone_timing.json"
    if timing.exists():  # measured once per benchmark folder, so a resume reports the same
        per_image = float(json.loads(timing.read_text())["seconds_per_image"])
    else:
        rows = sample_rows(len(abs_paths), config.timing_images, config.split_seed)
        per_image = backbone_seconds_per_image(backbone, [abs_paths[i] for i in rows])
        atomic_write_json(timing, {"seconds_per_image": per_image, "images": len(rows),
                                   "what": "decode + transform + backbone forward, best of 2"})
    return Workspace(Path(folder.root), list(folder.paths), folder.labels, list(folder.classes),
                     split.query, split.db, train, val, features, per_image, features_s,
                     backbone.weights_id, near_paths, near_sources, near_features)


def _features(paths: list[str], backbone: Any,
              config: BenchmarkConfig) -> tuple[np.ndarray, float]:
    """The frozen features of ``paths`` (through the cache) and the seconds they took."""
    tic = time.perf_counter()
    features = extract_features(paths, backbone, cache_dir=config.feature_cache,
                                placement=config.placement(), num_workers=config.workers())
    return features, time.perf_counter() - tic


def write_near_duplicates(db_paths: list[str], n: int, seed: int,
                          out: Path) -> tuple[np.ndarray, list[str]]:
    """Draw ``n`` database positions and write each one's altered copy once.

    The copies are ``out/near_duplicates/<i>.png`` (lossless, so the file is the altered image
    exactly), written atomically; a file already there is reused, so a resumed benchmark encodes
    the same copies. The draw and each copy are seeded (:mod:`ahcl.data.alter`), so they depend
    on the database, ``n`` and ``seed`` only.

    Returns:
        ``(sources, paths)``: ``int64 (min(n, len(db_paths)),)`` positions in ``db_paths``, and
        the copies' files in the same order.
    """
    sources = near_duplicate_rows(len(db_paths), n, seed)
    folder = out / NEAR_DUPLICATES_DIR
    paths = []
    for i, row in enumerate(sources):
        path = folder / f"{i}.png"
        if not path.exists():
            image, _ = altered_copy(db_paths[row], int(row), seed)
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            atomic_write_bytes(path, buf.getvalue())
        paths.append(str(path))
    return sources, paths


def _fit(name: str, params: dict[str, Any], ws: Workspace, rows: np.ndarray,
         config: BenchmarkConfig) -> Any:
    method = create_method(name, **params)
    backbone = None
    if config.mode == "finetune" and KINDS[name] != "shallow":
        backbone = create_backbone(config.backbone, pretrained=config.pretrained,
                                   seed=int(params.get("seed", 0)))
    return method.fit(ws.inputs(rows, config), ws.labels[rows], n_classes=len(ws.classes),
                      backbone=backbone, placement=config.placement())


def tune(name: str, config: BenchmarkConfig, ws: Workspace, out: Path,
         tick: Callable[[], None]) -> dict[str, Any]:
    """Model selection of ``name`` (cached in ``tuning/<name>.json``)."""
    path = out / "tuning" / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    trials = []
    grid = GRIDS.get(name, [{}])[:MAX_TRIALS]
    for setting in grid:
        params = {**config.budget(name), **setting, "n_bits": config.tune_bits,
                  "seed": config.tune_seed}
        tic = time.perf_counter()
        method = _fit(name, params, ws, ws.train, config)
        report = evaluate(method.encode(ws.inputs(ws.val, config)), ws.labels[ws.val],
                          method.db_codes_, ws.labels[ws.train], topk=(100,))
        trials.append({"setting": setting, "val_map": report.map,
                       "seconds": time.perf_counter() - tic})
        tick()
    best = max(range(len(trials)), key=lambda i: trials[i]["val_map"])  # first best on ties
    result = {"method": name, "n_bits": config.tune_bits, "seed": config.tune_seed,
              "n_train": int(len(ws.train)), "n_val": int(len(ws.val)), "trials": trials,
              "chosen": trials[best]["setting"]}
    atomic_write_json(path, result)
    return result


def run_cell(name: str, n_bits: int, seed: int, chosen: dict[str, Any], config: BenchmarkConfig,
             ws: Workspace) -> dict[str, Any]:
    """Train one method on the database, encode the queries, evaluate, time and measure it."""
    params = {**config.budget(name), **chosen, "n_bits": n_bits, "seed": seed}
    with PeakMemory() as mem:
        tic = time.perf_counter()
        method = _fit(name, params, ws, ws.db, config)
        fit_s = time.perf_counter() - tic
        q_inputs = ws.inputs(ws.query, config)
        tic = time.perf_counter()
        q_codes = method.encode(q_inputs)
        query_s = time.perf_counter() - tic
    report = evaluate(q_codes, ws.labels[ws.query], method.db_codes_, ws.labels[ws.db], topk=TOPK)
    near = {}
    if len(ws.near_sources):  # outside the timings: the same encoder pass as the queries'
        ranks = near_duplicate_ranks(method.encode(ws.near_inputs(config)), method.db_codes_,
                                     ws.near_sources)
        near["near_duplicates"] = near_duplicate_report(ranks, n_db=len(ws.db)).to_dict()
    timings = getattr(method, "timings_", {})
    head_db_s = float(timings.get("db_codes_s", 0.0))
    kind = KINDS[name]
    n_db, nq = len(ws.db), len(ws.query)
    # In frozen mode the inputs are features, so the timed passes cover the head only; the
    # backbone's share is the per-image time measured once, times the number of images.
    backbone_q = ws.backbone_s_per_image if config.mode == "frozen" else 0.0
    db_codes_s = 0.0 if kind == "asymmetric" else head_db_s + backbone_q * n_db
    return {
        "method": name, "kind": kind, "n_bits": n_bits, "seed": seed,
        "config": method.get_config(), "metrics": report.to_dict(), **near,
        "timings": {
            "train_s": fit_s - head_db_s,
            "db_codes_head_s": head_db_s if kind != "asymmetric" else 0.0,
            "db_codes_s": db_codes_s,
            "query_head_s_per_image": query_s / nq,
            "query_s_per_image": query_s / nq + backbone_q,
        },
        "memory": {"peak_rss_mib": mem.peak_mib, "extra_rss_mib": mem.extra_mib},
        "n_db": int(n_db), "n_query": int(nq),
    }


def _check_identity(config: BenchmarkConfig, out: Path) -> None:
    path = out / "benchmark.json"
    if path.exists():
        saved = json.loads(path.read_text())
        identity = saved.get("identity")
        upgrade = saved.get("version") == 1 and isinstance(identity, dict)
        if upgrade:
            # Version 1 had no near-duplicate protocol and its identity no such field: its cells
            # are kept, those without near-duplicate figures are re-run (see _load_cell).
            identity = {**identity, "near_duplicates": config.near_duplicates}
        if identity != config.identity():
            raise AhclError(f"{out} holds a benchmark with other settings (data, backbone, mode, "
                            "split, tuning or near duplicates); choose another --out")
        budgets = saved.get("budgets", {})
        for name in config.methods:
            if name in budgets and budgets[name] != config.budget(name):
                raise AhclError(f"{out} holds {name} results with another training budget; "
                                "choose another --out")
        if upgrade:
            atomic_write_json(path, {**saved, "version": VERSION, "identity": identity})
    else:
        atomic_write_json(path, {"format": FORMAT, "version": VERSION,
                                 "identity": config.identity(), "budgets": {}})


def _load_cell(path: Path, config: BenchmarkConfig) -> dict[str, Any] | None:
    """The finished cell at ``path``, or None if it is missing or lacks the near-duplicate
    figures the config asks for (a cell of a version-1 benchmark), so that it is re-run."""
    if not path.exists():
        return None
    cell = json.loads(path.read_text())
    return None if config.near_duplicates and "near_duplicates" not in cell else cell


def _save_budgets(config: BenchmarkConfig, out: Path) -> None:
    path = out / "benchmark.json"
    saved = json.loads(path.read_text())
    saved["budgets"].update({name: config.budget(name) for name in config.methods})
    atomic_write_json(path, saved)


def cell_path(out: Path, name: str, n_bits: int, seed: int) -> Path:
    return out / "cells" / f"{name}_{n_bits}_s{seed}.json"


def run_benchmark(config: BenchmarkConfig, out: str | Path,
                  on_cell: Callable[[dict[str, Any], bool], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the benchmark in ``out`` and write its report.

    Args:
        config: what to run.
        out: benchmark folder (created). Finished cells found there are reused.
        on_cell: called with each cell's result and whether it was reused from disk.

    Returns:
        The results dict also written to ``out/results.json``.
    """
    config = dataclasses.replace(config).validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_identity(config, out)
    _save_budgets(config, out)
    ws = prepare(config, out)
    todo_tune = [m for m in config.methods if not (out / "tuning" / f"{m}.json").exists()]
    cells = [(m, b, s) for m in config.methods for b in config.bits for s in config.seeds]
    done = {c: _load_cell(cell_path(out, *c), config) for c in cells}
    todo_cells = [c for c in cells if done[c] is None]
    total = sum(len(GRIDS.get(m, [{}])[:MAX_TRIALS]) for m in todo_tune) + len(todo_cells)
    bar = progress_bar(total, desc="benchmark runs", unit="run")
    results: list[dict[str, Any]] = []
    tuning: dict[str, Any] = {}
    try:
        for name in config.methods:
            tuning[name] = tune(name, config, ws, out, lambda: bar.update(1))
            for n_bits in config.bits:
                for seed in config.seeds:
                    cell = done[(name, n_bits, seed)]
                    reused = cell is not None
                    if cell is None:
                        bar.set_postfix_str(f"{name} {n_bits} bits seed {seed}")
                        cell = run_cell(name, n_bits, seed, tuning[name]["chosen"], config, ws)
                        atomic_write_json(cell_path(out, name, n_bits, seed), cell)
                        bar.update(1)
                    results.append(cell)
                    if on_cell is not None:
                        on_cell(cell, reused)
    finally:
        bar.close()
    return write_report(config, ws, tuning, results, out)
