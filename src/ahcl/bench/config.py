"""What a benchmark runs (:class:`BenchmarkConfig`) and the data it runs on (:class:`Workspace`)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ahcl.data.transforms import training_transform
from ahcl.device import Placement, default_workers, placement
from ahcl.errors import AhclError, InvalidValueError
from ahcl.methods.feeders import ImageFeeder
from ahcl.methods.registry import BUDGETS, get_method, list_methods
from ahcl.models.backbones import create_backbone

FORMAT = "ahcl-benchmark"
#: Version of ``benchmark.json`` and of the cells: 2 added the near-duplicate protocol
#: (``near_duplicates`` in the identity, ``cell["near_duplicates"]``).
VERSION = 2
TOPK = (10, 100, 1000)
#: Folder of the altered copies of the near-duplicate protocol, in the benchmark folder.
NEAR_DUPLICATES_DIR = "near_duplicates"


@dataclass
class BenchmarkConfig:
    """What to run. Every field that changes results is saved and checked on resume.

    Attributes:
        data / dataset: a folder-per-class dataset, or a registered dataset name.
        methods: method names (default: every method of :mod:`ahcl.methods.registry`).
        bits: code lengths (multiples of 8).
        seeds: seeds of the methods (the split is fixed by ``split_seed``).
        backbone, pretrained, mode: as in ``ahcl train``.
        query_fraction: share of each class held out as queries.
        split_seed: seed of the query/database split and of the validation split.
        val_fraction: share of each database class used for model selection.
        tune_bits: code length of model selection (default 32 if listed, else the middle one).
        tune_seed: method seed during model selection.
        budgets: per-method fixed parameters over each method's spec budget
            (``{"ahcl": {"epochs": 1}}``).
        feature_cache: feature cache folder (default ``$AHCL_CACHE`` or ``~/.cache/ahcl/features``).
        timing_images: images used to time the backbone (decode + forward), extrapolated per image.
        device, precision: where the networks run (:mod:`ahcl.device`); not part of a cell's
            identity, so a benchmark can be resumed elsewhere.
        num_workers: image-decoding processes (``None``: ``min(cores, 8)``).
        augment: finetune mode's training augmentation (``scene`` or ``none``).
        near_duplicates: database images of the near-duplicate protocol (:mod:`ahcl.data.alter`,
            drawn and altered with seed ``split_seed``; 0 disables it).
        command: the command line, recorded in the report.
    """

    data: str | None = None
    dataset: str | None = None
    methods: list[str] = field(default_factory=list_methods)
    bits: list[int] = field(default_factory=lambda: [16, 32, 48, 64])
    seeds: list[int] = field(default_factory=lambda: [0])
    backbone: str = "mobilenet_v2"
    pretrained: bool = True
    mode: str = "frozen"
    query_fraction: float = 0.2
    split_seed: int = 0
    val_fraction: float = 0.2
    tune_bits: int | None = None
    tune_seed: int = 0
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    feature_cache: str | None = None
    timing_images: int = 32
    device: str = "auto"
    precision: str = "auto"
    num_workers: int | None = None
    augment: str = "scene"
    near_duplicates: int = 200
    command: str = ""

    def validate(self) -> "BenchmarkConfig":
        if (self.data is None) == (self.dataset is None):
            raise AhclError("give exactly one of --data DIR or --dataset NAME")
        if not self.methods or not self.bits or not self.seeds:
            raise AhclError("--methods, --bits and --seeds each need at least one value")
        for name in self.methods:
            get_method(name)
        for b in self.bits:
            if b <= 0 or b % 8:
                raise InvalidValueError("bits", b, "positive multiples of 8")
        if self.mode not in ("frozen", "finetune"):
            raise AhclError(f"mode must be frozen or finetune, got {self.mode!r}")
        if not 0 < self.query_fraction < 1 or not 0 < self.val_fraction < 1:
            raise AhclError("query_fraction and val_fraction must be in (0, 1)")
        n_near = self.near_duplicates
        if isinstance(n_near, bool) or not isinstance(n_near, numbers.Integral) or n_near < 0:
            raise InvalidValueError("near_duplicates", n_near,
                                    "an integer >= 0 (0 disables the near-duplicate protocol)")
        self.near_duplicates = int(n_near)  # JSON-safe in the identity
        if self.tune_bits is None:
            self.tune_bits = 32 if 32 in self.bits else sorted(self.bits)[len(self.bits) // 2]
        self.placement()
        unknown = set(self.budgets) - set(self.methods)
        if unknown:
            raise AhclError(f"budget given for method(s) not benchmarked: {sorted(unknown)}")
        return self

    def placement(self) -> Placement:
        """The resolved device and precision (raises :class:`~ahcl.device.DeviceError`)."""
        return placement(self.device, self.precision)

    def workers(self) -> int:
        """Worker processes: ``num_workers``, or ``min(cores, 8)``."""
        return default_workers() if self.num_workers is None else self.num_workers

    def budget(self, method: str) -> dict[str, Any]:
        """The fixed (untuned) parameters of ``method``."""
        return {**BUDGETS.get(method, {}), **self.budgets.get(method, {})}

    def identity(self) -> dict[str, Any]:
        """The fields a finished cell depends on (methods/bits/seeds may grow on a rerun)."""
        keep = ("data", "dataset", "backbone", "pretrained", "mode", "query_fraction",
                "split_seed", "val_fraction", "tune_bits", "tune_seed", "near_duplicates")
        if self.mode == "finetune":  # frozen features are never augmented
            keep += ("augment",)
        return {k: getattr(self, k) for k in keep}


@dataclass
class Workspace:
    """The data of one benchmark: labels, split, and the inputs of each part."""

    root: Path
    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    query: np.ndarray
    db: np.ndarray
    train: np.ndarray  # database minus validation (model selection only)
    val: np.ndarray
    features: np.ndarray | None  # frozen mode: float32 (n_images, d)
    backbone_s_per_image: float
    features_s: float
    weights_id: str
    # The near-duplicate protocol: altered copies (PNG files) of the database positions
    # ``near_sources`` (rows of ``db``, the order of a method's ``db_codes_``).
    near_paths: list[str] = field(default_factory=list)
    near_sources: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    near_features: np.ndarray | None = None  # frozen mode: float32 (len(near_paths), d)

    def inputs(self, rows: np.ndarray, config: BenchmarkConfig) -> Any:
        if self.features is not None:
            return self.features[rows]
        return _feeder([str(self.root / self.paths[i]) for i in rows], config)

    def near_inputs(self, config: BenchmarkConfig) -> Any:
        """The altered copies, as :meth:`inputs` gives images: features (frozen) or a feeder."""
        if self.near_features is not None:
            return self.near_features
        return _feeder(self.near_paths, config)


def _feeder(paths: list[str], config: BenchmarkConfig) -> ImageFeeder:
    transform = create_backbone(config.backbone, pretrained=False).transform
    return ImageFeeder(paths, transform, num_workers=config.workers(),
                       train_transform=training_transform(config.augment, transform))
