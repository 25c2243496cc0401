"""``ahcl train`` as a library call: data → split → features → method → run folder."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ahcl import __version__
from ahcl._io import atomic_write, atomic_write_json, atomic_write_text
from ahcl.config import TrainConfig
from ahcl.errors import AhclError
from ahcl.run import RUN_FORMAT, RUN_VERSION, Run, load_run, sha256_file

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """A dataset read and split: everything training and evaluation need about the images."""

    root: Path
    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    split: Any  # ahcl.data.splits.Split

    def abs_paths(self, rows: np.ndarray) -> list[str]:
        return [str(self.root / self.paths[i]) for i in rows]


def resolve_data_root(config: TrainConfig) -> Path:
    """The dataset folder: ``config.data`` or the registered dataset (cache, else download)."""
    if config.data is not None:
        return Path(config.data).expanduser().resolve()
    from ahcl.data.registry import ensure_dataset

    return Path(ensure_dataset(config.dataset))


def prepare_data(config: TrainConfig) -> PreparedData:
    """Read the folder and draw (or load) the split."""
    from ahcl.data.folder import read_image_folder
    from ahcl.data.splits import load_split, make_split

    folder = read_image_folder(resolve_data_root(config), strict=config.strict)
    if config.split:
        split = load_split(config.split, folder)
    elif config.query_per_class is not None:
        split = make_split(folder.labels, query_fraction=None,
                           query_per_class=config.query_per_class, seed=config.params.seed)
    else:
        split = make_split(folder.labels, query_fraction=config.query_fraction,
                           seed=config.params.seed)
    return PreparedData(Path(folder.root).resolve(), list(folder.paths), folder.labels,
                        list(folder.classes), split)


def train_run(config: TrainConfig, out: str | Path, resume: bool = False,
              on_iteration: Callable[[dict[str, Any]], None] | None = None) -> Run:
    """Train ``config`` and write the run folder ``out`` (see :mod:`ahcl.run`).

    Args:
        config: the resolved configuration.
        out: run folder; must not hold a finished run unless ``resume`` (which then just loads it).
        resume: continue an interrupted run from its checkpoint; the result equals an
            uninterrupted run's.
        on_iteration: called with each outer iteration's metrics (on rank 0 only).

    Under torchrun (see :mod:`ahcl.distributed`, initialised by the caller) every rank calls this
    with the same arguments: the ranks share the feature extraction and the training, rank 0
    alone writes the run folder, and every rank returns it once written.
    """
    from ahcl import distributed as dist

    from ahcl.data.splits import save_split
    from ahcl.encoder import build_backbone
    from ahcl.config import ASYMMETRIC
    from ahcl.methods.registry import get_method
    from ahcl.methods.feeders import ImageFeeder
    from ahcl.models.features import extract_features

    config.validate()
    out = Path(out)
    resolved = config.to_dict()
    if (out / "run.json").exists():
        if resume:
            return load_run(out)
        raise AhclError(f"{out} already holds a finished run; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not resume:
            raise AhclError(f"{out} exists and is not empty; use --resume to continue it "
                            "or choose another --out")
        saved = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() \
            else None
        if saved is not None and saved != resolved:
            raise AhclError(f"cannot resume {out}: it was started with another config")
    tic = time.perf_counter()
    # Data and backbone are checked before anything is written, so a bad --data or --backbone
    # leaves no half-made run folder behind.
    data = prepare_data(config)
    backbone = build_backbone(resolved)
    dist.barrier()  # every rank has checked the folder before rank 0 writes into it
    writer = dist.rank() == 0
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", resolved)
        save_split(data.split, out / "split.json", paths=data.paths)
    db_rows = data.split.db
    db_paths = data.abs_paths(db_rows)
    db_labels = data.labels[db_rows]

    t_feat = time.perf_counter()
    if config.mode == "frozen":
        if dist.is_distributed():
            # Each rank computes its share into the shared cache (one segment file per process),
            # then every rank reads all of them back from it.
            extract_features(db_paths[dist.shard_slice(len(db_paths))], backbone,
                             cache_dir=config.feature_cache,
                             batch_size=config.batch_size_features,
                             num_workers=config.num_workers)
            dist.barrier()
        inputs: Any = extract_features(db_paths, backbone, cache_dir=config.feature_cache,
                                       batch_size=config.batch_size_features,
                                       num_workers=config.num_workers)
        trainable_backbone = None
    else:
        inputs = ImageFeeder(db_paths, backbone.transform, num_workers=config.num_workers)
        trainable_backbone = backbone
    features_s = time.perf_counter() - t_feat

    if config.method not in ASYMMETRIC and dist.is_distributed():
        raise AhclError(f"{config.method} trains in one process only; run it without torchrun")
    method = get_method(config.method)(**_params(config))
    metrics_path = out / "metrics.jsonl"

    def record(row: dict[str, Any]) -> None:
        lines = [json.dumps(r) for r in method_history + [row]]
        method_history.append(row)
        atomic_write_text(metrics_path, "\n".join(lines) + "\n")
        if on_iteration is not None:
            on_iteration(row)

    method_history: list[dict[str, Any]] = _read_metrics(metrics_path) if resume else []
    t_train = time.perf_counter()
    method.fit(inputs, db_labels, n_classes=len(data.classes), backbone=trainable_backbone,
               checkpoint=out / "checkpoint.pt", on_iteration=record)
    train_s = time.perf_counter() - t_train
    if not writer:
        dist.barrier()  # rank 0 writes the run
        return load_run(out)
    # The checkpoint's history is the truth (metrics.jsonl may be one line behind a crash).
    atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in method.history_))

    _save_model(out / "model.pt", method.net_, backbone, config)
    with atomic_write(out / "db_codes.npy") as f:
        np.save(f, method.db_codes_, allow_pickle=False)
    if config.method in ASYMMETRIC:  # the code step for new labelled items needs these
        st = method.code_state_
        with atomic_write(out / "code_state.npz") as f:
            np.savez(f, gram_u=st.gram_u, class_sums_u=st.class_sums_u, r=np.float64(st.r),
                     lam=np.float64(st.lam))
    atomic_write_json(out / "db.json", {
        "root": str(data.root), "classes": data.classes,
        "paths": [data.paths[i] for i in db_rows], "labels": db_labels.tolist()})
    atomic_write_json(out / "timings.json", {
        "features_s": features_s, "train_s": train_s, "total_s": time.perf_counter() - tic,
        "processes": dist.world_size(),
        "note": "seconds of this process; a resumed run counts only its last part"})
    atomic_write_json(out / "run.json", {
        "format": RUN_FORMAT, "version": RUN_VERSION, "ahcl_version": __version__,
        "method": config.method, "n_bits": config.params.n_bits, "n_db": int(len(db_rows)),
        "n_query": int(len(data.split.query)), "n_classes": len(data.classes),
        "db_codes_sha256": sha256_file(out / "db_codes.npy"),
        "torch": torch.__version__})
    (out / "checkpoint.pt").unlink(missing_ok=True)
    dist.barrier()
    return load_run(out)


def _params(config: TrainConfig) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(config.params)


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    return rows


def _save_model(path: Path, net: torch.nn.Module, backbone: Any, config: TrainConfig) -> None:
    blob: dict[str, Any] = {"net": net.state_dict()}
    if config.mode == "frozen" and not config.pretrained:
        # A random frozen backbone is part of the model: keep it rather than trust a re-seed.
        blob["backbone"] = backbone.state_dict()
    with atomic_write(path) as f:
        torch.save(blob, f)


def train(out: str | Path, *, resume: bool = False, **values: Any) -> Run:
    """Train a run from config keys, as ``ahcl train`` does: ``train("run", data="scenes",
    n_bits=32, backbone="tiny_cnn")``. Keys are those of :class:`ahcl.config.TrainConfig` and
    :class:`ahcl.methods.ahcl.AHCLParams`."""
    from ahcl.config import config_from_dict

    return train_run(config_from_dict(values), out, resume=resume)
