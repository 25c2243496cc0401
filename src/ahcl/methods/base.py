"""What every retrieval method shares: its registry entry, its interface, checked inputs.

A method is a class that declares, once, a :class:`MethodSpec` (its name, kind, whether
``ahcl train`` can write runs with it, its tuning grid and its benchmark budget) and writes one
hook, :meth:`HashingMethod._fit`. The public :meth:`HashingMethod.fit` validates the inputs and
then calls the hook (the pytorch-metric-learning pattern), so every method gets the same checks
and the same error lines. :mod:`ahcl.methods.registry` collects the classes; config validation,
the CLI's choices and the benchmark read it.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
from torch import nn

from ahcl.device import Placement
from ahcl._checks import check_n_bits
from ahcl.errors import AhclError, UnknownNameError
from ahcl.methods.feeders import CPU, FeatureFeeder, ImageFeeder, as_feeder

KINDS = ("asymmetric", "symmetric", "shallow", "classifier")
#: Model selection tries at most this many settings per method.
MAX_TRIALS = 8
#: Width of the MLP layer before the hash layer: AHCL's default, and the fixed budget every deep
#: method gets in the benchmark.
DEFAULT_HIDDEN = 512

Inputs = np.ndarray | FeatureFeeder | ImageFeeder


class TrainingDivergedError(AhclError, FloatingPointError):
    """The loss became NaN or infinite; training stopped (``iteration``: 1-based;
    ``checkpoint``: the file with the last good state, kept for inspection, or ``None``)."""


@dataclass(frozen=True)
class MethodSpec:
    """A method's registry entry, declared once on its class.

    Attributes:
        name: the name users type (``--method NAME``).
        kind: one of :data:`KINDS`.
        trainable: ``ahcl train`` can write a run folder with it (it has a query network).
        grid: the settings model selection tries (at most :data:`MAX_TRIALS`).
        budget: fixed, untuned benchmark parameters (passes over the data, head width).
        ablates: for an ablation, ``(method, what)``: the method it removes a part of, and that
            part in words (the benchmark report compares the two).
    """

    name: str
    kind: str
    trainable: bool = False
    grid: tuple[dict[str, Any], ...] = ({},)
    budget: dict[str, Any] = field(default_factory=dict)
    ablates: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not 1 <= len(self.grid) <= MAX_TRIALS:
            raise ValueError(f"{self.name}: a grid holds 1..{MAX_TRIALS} settings")


def lr_dropout_grid(key: str, values: tuple[Any, ...]) -> tuple[dict[str, Any], ...]:
    """The grid of a deep method: its main loss weight ``key`` × lr × dropout (2 × 2 × 2).

    Every deep method, AHCL included and with its defaults among the settings, varies its own
    main weight, the learning rate and the dropout before the hash head; budget parameters
    (epochs, anchors, the hidden width) are fixed in the spec's ``budget``, never in a grid.
    """
    return tuple({key: v, "lr": lr, "dropout": d} for v in values for lr in (1e-3, 3e-4)
                 for d in (0.0, 0.5))


@dataclass
class FitInputs:
    """What :meth:`HashingMethod.fit` checked and hands to :meth:`HashingMethod._fit`.

    Attributes:
        inputs: what the caller passed (a feature matrix keeps its own dtype here).
        feeder: the inputs as a feeder (float32 features, or images for finetune mode).
        labels: int64 (n,) class ids.
        n_classes: K.
        in_dim: the backbone's feature size in finetune mode, else the feature width.
        backbone: the trainable backbone (finetune mode) or ``None``.
        placement: where the network runs and in what precision.
    """

    inputs: Any
    feeder: FeatureFeeder | ImageFeeder
    labels: np.ndarray
    n_classes: int
    in_dim: int
    backbone: nn.Module | None
    placement: Placement = CPU


class HashingMethod(ABC):
    """The interface of every method (scikit-learn style).

    ``Method(**params)`` builds ``self.params = Params(**params)``; ``fit`` returns ``self`` and
    sets ``db_codes_`` (packed uint8 (n, n_bits/8)); ``encode(inputs)`` gives packed query codes;
    ``get_config()`` replays the run. A subclass sets ``spec`` and ``Params`` (a dataclass with
    ``n_bits`` and ``seed``) and writes :meth:`_fit` and :meth:`encode`.
    """

    spec: ClassVar[MethodSpec]
    Params: ClassVar[type]
    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "spec" in cls.__dict__:
            cls.name = cls.spec.name

    def __init__(self, **params: Any) -> None:
        known = [f.name for f in dataclasses.fields(self.Params)]
        for key in params:
            if key not in known:
                raise UnknownNameError(f"{self.name} parameter", key, known)
        self.params = self.Params(**params)

    def get_config(self) -> dict[str, Any]:
        """The method name and every hyper-parameter (replays the run)."""
        return {"method": self.name, **dataclasses.asdict(self.params)}

    def fit(self, inputs: Inputs, labels: np.ndarray, *, n_classes: int | None = None,
            backbone: nn.Module | None = None, checkpoint: Any = None,
            on_iteration: Callable[[dict[str, Any]], None] | None = None,
            placement: Placement | None = None) -> "HashingMethod":
        """Check the inputs, then learn the codes of the database items.

        Args:
            inputs: float32 (n, d) frozen features, or a feeder (images for finetune mode).
            labels: int (n,) class ids of the database items.
            n_classes: K (default ``labels.max() + 1``).
            backbone: trainable backbone (finetune mode); ``inputs`` then feeds images.
            checkpoint: file for resumable training (methods that support it; others ignore it).
            on_iteration: called with each iteration's (or epoch's) metrics dict.
            placement: device and precision of the network (default: CPU, float32); kept as
                ``placement_`` for :meth:`encode`. Shallow methods run in numpy on the CPU.

        Returns:
            ``self``.

        Raises:
            AhclError: inputs and labels differ in length, fewer than two classes, or inputs a
                method cannot take (shallow methods take frozen features only).
        """
        data = self._check_inputs(inputs, labels, n_classes, backbone)
        data.placement = placement or CPU
        self.placement_ = data.placement
        self._fit(data, checkpoint=checkpoint, on_iteration=on_iteration)
        return self

    def to(self, placement: Placement) -> "HashingMethod":
        """Encode on another device or precision from now on (a fitted network moves there)."""
        self.placement_ = placement
        net = getattr(self, "net_", None)
        if net is not None:
            net.to(placement.device)
        return self

    def _check_inputs(self, inputs: Inputs, labels: np.ndarray, n_classes: int | None,
                      backbone: nn.Module | None) -> FitInputs:
        if self.spec.kind == "shallow":
            if backbone is not None or not _is_features(inputs):
                raise AhclError(f"{self.name} works on frozen features only: use --mode frozen")
        feeder = as_feeder(inputs)
        labels = np.asarray(labels, dtype=np.int64)
        if len(feeder) != len(labels):
            raise AhclError(f"{len(feeder)} inputs but {len(labels)} labels")
        if self.spec.kind != "shallow" and len(np.unique(labels)) < 2:
            raise AhclError("training needs at least two classes")
        K = int(n_classes if n_classes is not None else labels.max() + 1)
        in_dim = backbone.feature_dim if backbone is not None else feeder.features.shape[1]
        return FitInputs(inputs, feeder, labels, K, in_dim, backbone)

    @abstractmethod
    def _fit(self, data: FitInputs, *, checkpoint: Any,
             on_iteration: Callable[[dict[str, Any]], None] | None) -> None:
        """Learn from checked inputs; set ``db_codes_`` and the other fitted attributes."""

    @abstractmethod
    def encode(self, inputs: Inputs) -> np.ndarray:
        """Query codes: packed uint8 (n, n_bits/8)."""


def _is_features(inputs: Any) -> bool:
    return isinstance(inputs, FeatureFeeder) or (isinstance(inputs, np.ndarray)
                                                and inputs.ndim == 2)
