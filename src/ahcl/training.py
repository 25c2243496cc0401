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
from ahcl.methods.feeders import ImageFeeder, ViewFeeder
from ahcl.methods.instance import QUARTER_TURNS, InstanceProjection, fit_instance_projection
from ahcl.methods.registry import KINDS, get_trainable
from ahcl.models.features import extract_features, image_features
from ahcl.models.inference import InferenceBackbone, inference_model
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
    semantic_bits, instance_bits = config.split_bits(backbone.feature_dim)
    dist.barrier()  # every rank has checked the folder before rank 0 writes into it
    writer = dist.rank() == 0
    if writer:
        start_run(out, resolved, data.split, data.paths)
    db_rows = data.split.db
    db_labels = data.labels[db_rows]

    t_feat = time.perf_counter()
    db_paths = data.abs_paths(db_rows)
    inputs, trainable_backbone, views = _inputs(config, db_paths, backbone, place, instance_bits)
    features_s = time.perf_counter() - t_feat

    asymmetric = KINDS[config.method] == "asymmetric"
    if not asymmetric and dist.is_distributed():
        raise AhclError(f"{config.method} trains in one process only; run it without torchrun")
    method = get_trainable(config.method)(**{**dataclasses.asdict(config.params),
                                             "n_bits": semantic_bits})
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
    t_inst = time.perf_counter()
    instance, instance_codes = _instance_codes(config, db_paths, backbone, place, instance_bits,
                                               views)
    instance_s = time.perf_counter() - t_inst
    if not writer:
        dist.barrier()  # rank 0 writes the run
        return load_run(out, **opened)
    # The checkpoint's history is the truth (metrics.jsonl may be one line behind a crash).
    write_metrics(out, method.history_)
    random_frozen = config.mode == "frozen" and not config.pretrained
    db_codes = method.db_codes_ if instance is None else np.ascontiguousarray(
        np.hstack([method.db_codes_, instance_codes]))
    finish_run(out, FinishedRun(
        method=config.method, n_bits=config.params.n_bits, instance=instance,
        net_state={k: v.cpu() for k, v in method.net_.state_dict().items()},
        # A random frozen backbone is part of the model: keep it rather than trust a re-seed.
        backbone_state=backbone.state_dict() if random_frozen else None,
        db_codes=db_codes, code_state=method.code_state_ if asymmetric else None,
        data_root=data.root, classes=data.classes, db_paths=[data.paths[i] for i in db_rows],
        db_labels=db_labels, n_query=len(data.split.query),
        timings={"features_s": features_s, "train_s": train_s, "instance_s": instance_s,
                 "total_s": time.perf_counter() - tic, "processes": dist.world_size(),
                 "device": str(place.device), "precision": place.precision,
                 "note": "seconds of this process; a resumed run counts only its last part"}))
    dist.barrier()
    return load_run(out, **opened)


def _inputs(config: TrainConfig, db_paths: list[str], backbone: Any,
            place: Placement, instance_bits: int) -> tuple[Any, Any, list[np.ndarray] | None]:
    """What the method is fed: cached features (frozen) or images, the trainable backbone, and
    (frozen mode) the features of the database in its quarter turns when anything needs them:
    the ``scene`` augmentation (each training item in a random turn, :class:`ViewFeeder`) or the
    instance codes."""
    if config.mode != "frozen":
        augment = training_transform(config.augment, backbone.transform)
        return ImageFeeder(db_paths, backbone.transform, num_workers=config.workers(),
                           train_transform=augment), backbone, None
    model = inference_model(backbone, place, compile=config.compile)
    turns = QUARTER_TURNS if (config.augment == "scene" or instance_bits) else 1
    views = [_cached_features(config, db_paths, model.turned(k)) for k in range(turns)]
    inputs = ViewFeeder(views) if config.augment == "scene" else views[0]
    return inputs, None, views if turns > 1 else None


def _cached_features(config: TrainConfig, paths: list[str], model: InferenceBackbone
                     ) -> np.ndarray:
    """Frozen features of ``paths`` through the feature cache, shared out under torchrun."""
    options = {"cache_dir": config.feature_cache, "batch_size": config.batch_size_features,
               "num_workers": config.workers()}
    if dist.is_distributed():
        # Each rank computes its share into the shared cache (one segment file per process),
        # then every rank reads all of them back from it.
        extract_features(paths[dist.shard_slice(len(paths))], model, **options)
        dist.barrier()
    return extract_features(paths, model, **options)


def _instance_codes(config: TrainConfig, db_paths: list[str], backbone: Any, place: Placement,
                    n_bits: int, views: list[np.ndarray] | None
                    ) -> tuple[InstanceProjection | None, np.ndarray | None]:
    """Fit the instance projection on the database's features in its four quarter turns
    (:mod:`ahcl.methods.instance`) and code the database with it.

    Frozen mode reuses the cached turned ``views`` of training; finetune mode computes all four
    views with the finetuned backbone (no cache: its weights are not what the backbone's
    weights id names).
    """
    if n_bits == 0:
        return None, None
    if views is None:
        model = inference_model(backbone, place)
        views = [image_features(db_paths, model.turned(k), batch_size=config.batch_size_features,
                                num_workers=config.workers()) for k in range(QUARTER_TURNS)]
    try:
        projection = fit_instance_projection(views, n_bits, seed=int(config.params.seed))
    except ValueError as exc:
        raise AhclError(f"cannot fit the instance codes: {exc}") from None
    return projection, projection.codes(views[0])


def train(out: str | Path, *, resume: bool = False, **values: Any) -> Run:
    """Train a run from config keys, as ``ahcl train`` does: ``train("run", data="scenes",
    n_bits=32, backbone="tiny_cnn")``. Keys are those of :class:`ahcl.config.TrainConfig` and
    the method's parameters (:class:`ahcl.methods.ahcl.AHCLParams` for AHCL)."""
    return train_run(config_from_dict(values), out, resume=resume)
