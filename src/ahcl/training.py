"""``ahcl train`` as a library call: data → split → features → method → run folder."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ahcl import distributed as dist
from ahcl.config import TrainConfig, config_from_dict
from ahcl.data.folder import read_image_folder
from ahcl.data.registry import dataset_root
from ahcl.data.splits import Split, load_split, make_split
from ahcl.data.transforms import training_transform
from ahcl.device import Placement
from ahcl.encoder import build_backbone
from ahcl.errors import AhclError
from ahcl.methods.feeders import ImageFeeder
from ahcl.methods.registry import KINDS, get_trainable
from ahcl.models.features import extract_features
from ahcl.run import (CHECKPOINT, FinishedRun, Run, check_target, finish_run, load_run,
                      read_metrics, start_run, write_metrics)

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """A dataset read and split: everything training and evaluation need about the images."""

    root: Path
    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    split: Split

    def abs_paths(self, rows: np.ndarray) -> list[str]:
        return [str(self.root / self.paths[i]) for i in rows]


def prepare_data(config: TrainConfig) -> PreparedData:
    """Read the folder and draw (or load) the split."""
    folder = read_image_folder(dataset_root(config.data, config.dataset), strict=config.strict)
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
    """Train ``config`` and write the run folder ``out`` (its format: :mod:`ahcl.run`).

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
    config.validate()
    place = config.placement()
    out = Path(out)
    resolved = config.to_dict()
    opened = {"device": config.device, "precision": config.precision,
              "num_workers": config.num_workers, "compile": config.compile}
    if check_target(out, resolved, resume):
        return load_run(out, **opened)
    tic = time.perf_counter()
    # Data and backbone are checked before anything is written, so a bad --data or --backbone
    # leaves no half-made run folder behind.
    data = prepare_data(config)
    backbone = build_backbone(resolved)
    dist.barrier()  # every rank has checked the folder before rank 0 writes into it
    writer = dist.rank() == 0
    if writer:
        start_run(out, resolved, data.split, data.paths)
    db_rows = data.split.db
    db_labels = data.labels[db_rows]

    t_feat = time.perf_counter()
    inputs, trainable_backbone = _inputs(config, data.abs_paths(db_rows), backbone, place)
    features_s = time.perf_counter() - t_feat

    asymmetric = KINDS[config.method] == "asymmetric"
    if not asymmetric and dist.is_distributed():
        raise AhclError(f"{config.method} trains in one process only; run it without torchrun")
    method = get_trainable(config.method)(**dataclasses.asdict(config.params))
    method_history: list[dict[str, Any]] = read_metrics(out) if resume else []

    def record(row: dict[str, Any]) -> None:
        method_history.append(row)
        write_metrics(out, method_history)
        if on_iteration is not None:
            on_iteration(row)

    t_train = time.perf_counter()
    method.fit(inputs, db_labels, n_classes=len(data.classes), backbone=trainable_backbone,
               checkpoint=out / CHECKPOINT, on_iteration=record, placement=place)
    train_s = time.perf_counter() - t_train
    if not writer:
        dist.barrier()  # rank 0 writes the run
        return load_run(out, **opened)
    # The checkpoint's history is the truth (metrics.jsonl may be one line behind a crash).
    write_metrics(out, method.history_)
    random_frozen = config.mode == "frozen" and not config.pretrained
    finish_run(out, FinishedRun(
        method=config.method, n_bits=config.params.n_bits,
        net_state={k: v.cpu() for k, v in method.net_.state_dict().items()},
        # A random frozen backbone is part of the model: keep it rather than trust a re-seed.
        backbone_state=backbone.state_dict() if random_frozen else None,
        db_codes=method.db_codes_, code_state=method.code_state_ if asymmetric else None,
        data_root=data.root, classes=data.classes, db_paths=[data.paths[i] for i in db_rows],
        db_labels=db_labels, n_query=len(data.split.query),
        timings={"features_s": features_s, "train_s": train_s,
                 "total_s": time.perf_counter() - tic, "processes": dist.world_size(),
                 "device": str(place.device), "precision": place.precision,
                 "note": "seconds of this process; a resumed run counts only its last part"}))
    dist.barrier()
    return load_run(out, **opened)


def _inputs(config: TrainConfig, db_paths: list[str], backbone: Any,
            place: Placement) -> tuple[Any, Any]:
    """What the method is fed: cached features (frozen) or images, and the trainable backbone."""
    if config.mode != "frozen":
        augment = training_transform(config.augment, backbone.transform)
        return ImageFeeder(db_paths, backbone.transform, num_workers=config.workers(),
                           train_transform=augment), backbone
    options = {"cache_dir": config.feature_cache, "batch_size": config.batch_size_features,
               "num_workers": config.workers(), "placement": place, "compile": config.compile}
    if dist.is_distributed():
        # Each rank computes its share into the shared cache (one segment file per process),
        # then every rank reads all of them back from it.
        extract_features(db_paths[dist.shard_slice(len(db_paths))], backbone, **options)
        dist.barrier()
    return extract_features(db_paths, backbone, **options), None


def train(out: str | Path, *, resume: bool = False, **values: Any) -> Run:
    """Train a run from config keys, as ``ahcl train`` does: ``train("run", data="scenes",
    n_bits=32, backbone="tiny_cnn")``. Keys are those of :class:`ahcl.config.TrainConfig` and
    the method's parameters (:class:`ahcl.methods.ahcl.AHCLParams` for AHCL)."""
    return train_run(config_from_dict(values), out, resume=resume)
