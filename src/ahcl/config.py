"""Training configuration: YAML sets defaults, flags override, the resolved config is saved.

One flat namespace: run settings (data, backbone, mode, split, ...) and the method's
hyper-parameters (:class:`ahcl.methods.ahcl.AHCLParams`) side by side, so ``--set lam=100`` and
``--set backbone=resnet18`` work alike.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ahcl._checks import check_bool, check_float, check_int
from ahcl.data.transforms import AUGMENTATIONS
from ahcl.device import Placement, default_workers, placement
from ahcl.errors import AhclError, InvalidValueError, UnknownNameError
from ahcl.methods.registry import DEFAULT_METHOD, get_trainable

MODES = ("frozen", "finetune")
#: Settings that say where and how fast a run computes, not what it computes: a run may be
#: resumed with other values of these.
RUNTIME_KEYS = frozenset({"device", "num_workers", "compile", "feature_cache",
                          "batch_size_features"})


def params_class(method: str) -> type:
    """The hyper-parameter dataclass of a method ``ahcl train`` can run.

    Raises:
        UnknownNameError: the method is not registered or not trainable.
    """
    return get_trainable(method).Params


@dataclass
class TrainConfig:
    """Everything a training run needs besides the output folder.

    Attributes:
        data: a folder-per-class dataset (or ``dataset`` names a registered one).
        dataset: registered dataset name (``ahcl datasets list``), found in the cache or downloaded.
        method: a trainable method of :mod:`ahcl.methods.registry` (``ahcl train --help``).
        backbone: backbone name (``tiny_cnn`` or any torchvision classification model).
        pretrained: ImageNet weights through torchvision (False: random initialisation).
        mode: ``frozen`` (cached backbone features) or ``finetune`` (end to end).
        query_fraction: fraction of each class held out as queries (0: all in the database).
        query_per_class: fixed number of queries per class instead of a fraction.
        split: a saved split file to reuse instead of drawing one.
        strict: fail on unreadable or duplicate images instead of skipping them.
        feature_cache: feature cache folder (default ``$AHCL_CACHE`` or ``~/.cache/ahcl/features``).
        batch_size_features: images per batch when extracting frozen features.
        num_workers: image-loading worker processes (``None``: ``min(cores, 8)``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (:mod:`ahcl.device`).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``: autocast of the network.
        compile: ``torch.compile`` the frozen backbone's inference form.
        augment: finetune mode's training augmentation, ``scene`` (random resized crop, flips,
            rotations by 90°) or ``none`` (:mod:`ahcl.data.transforms`).
        instance_bits: bits of each item's code spent on the instance code that orders scenes
            within a class (:mod:`ahcl.methods.instance`); the method learns the other
            ``n_bits - instance_bits`` (the semantic code) and search ranks by (semantic
            distance, instance distance, id). ``auto`` (:func:`split_bits`): a quarter of the bits
            semantic (at least 8), the rest instance; ``0``: semantic codes only (the method
            alone, as before 0.3).
        params: the method's hyper-parameters (``n_bits``, ``lam``, ``gamma``, ``seed``, ...):
            the method's own ``Params`` dataclass.
    """

    data: str | None = None
    dataset: str | None = None
    method: str = DEFAULT_METHOD
    backbone: str = "mobilenet_v2"
    pretrained: bool = True
    mode: str = "frozen"
    query_fraction: float = 0.2
    query_per_class: int | None = None
    split: str | None = None
    strict: bool = False
    feature_cache: str | None = None
    batch_size_features: int = 32
    num_workers: int | None = None
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    augment: str = "scene"
    instance_bits: int | str = "auto"
    params: Any = field(default_factory=lambda: params_class(DEFAULT_METHOD)())

    def validate(self) -> "TrainConfig":
        """Check values that need no data; returns ``self``."""
        if (self.data is None) == (self.dataset is None):
            raise AhclError("give exactly one of --data DIR or --dataset NAME")
        if self.mode not in MODES:
            raise AhclError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        check_int("num_workers", self.num_workers, 0, optional=True)
        check_int("query_per_class", self.query_per_class, 1, optional=True)
        check_int("batch_size_features", self.batch_size_features, 1)
        check_float("query_fraction", self.query_fraction, lo=0, hi=1, hi_open=True)
        for name in ("pretrained", "strict", "compile"):
            check_bool(name, getattr(self, name))
        for name in ("data", "dataset", "split", "feature_cache", "device", "precision",
                     "backbone"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
                setattr(self, name, value)
            if value is not None and not isinstance(value, str):
                raise InvalidValueError(name, value, "a string")
        self.split_bits()
        if self.augment not in AUGMENTATIONS:
            raise UnknownNameError("augmentation", self.augment, AUGMENTATIONS)
        params_class(self.method)
        self.placement()
        return self

    def split_bits(self, feature_dim: int | None = None) -> tuple[int, int]:
        """``(semantic_bits, instance_bits)`` of this config (see :func:`split_bits`)."""
        return split_bits(self.params.n_bits, self.instance_bits, feature_dim)

    def placement(self) -> Placement:
        """The resolved device and precision (raises :class:`~ahcl.device.DeviceError`)."""
        return placement(self.device, self.precision)

    def workers(self) -> int:
        """Worker processes to use: ``num_workers``, or ``min(cores, 8)``."""
        return default_workers() if self.num_workers is None else self.num_workers

    def to_dict(self) -> dict[str, Any]:
        """Flat, JSON-safe dict (``params`` merged in)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "params"}
        params = dataclasses.asdict(self.params)
        if "lr_milestones" in params:
            params["lr_milestones"] = list(params["lr_milestones"])
        return {**out, **params}


def split_bits(n_bits: int, instance_bits: int | str = "auto",
               feature_dim: int | None = None) -> tuple[int, int]:
    """How ``n_bits`` per item are spent: ``(semantic_bits, instance_bits)``.

    ``auto``: ``semantic = max(8, n_bits // 4)`` rounded down to a multiple of 8 (all of them
    below 16 bits), the rest instance bits, but never more instance bits than the backbone has
    feature dimensions (``feature_dim``, when known) — the semantic code takes what is left.
    An explicit value must be a multiple of 8 leaving at least 8 semantic bits.

    Raises:
        InvalidValueError: a bad ``instance_bits``.
    """
    check_int("n_bits", n_bits, 8)
    if instance_bits == "auto":
        semantic = n_bits if n_bits < 16 else max(8, n_bits // 4 // 8 * 8)
        instance = n_bits - semantic
        if feature_dim is not None:
            instance = min(instance, int(feature_dim) // 8 * 8)
        return n_bits - instance, instance
    words = f"'auto' or a multiple of 8 in 0..{max(0, n_bits - 8)} (at least 8 semantic bits)"
    if isinstance(instance_bits, bool) or not isinstance(instance_bits, int) \
            or instance_bits < 0 or instance_bits % 8 or n_bits - instance_bits < 8:
        raise InvalidValueError("instance_bits", instance_bits, words)
    if feature_dim is not None and instance_bits > feature_dim:
        raise InvalidValueError("instance_bits", instance_bits,
                                f"at most the backbone's {feature_dim} feature dimensions")
    return n_bits - instance_bits, instance_bits


_RUN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)} - {"params"}


def config_from_dict(values: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Apply flat ``values`` over ``base`` (default: the built-in defaults).

    Method keys are checked against the chosen method's hyper-parameters; switching the method
    starts its hyper-parameters from that method's defaults.
    """
    base = base or TrainConfig()
    run = {k: v for k, v in dataclasses.asdict(base).items() if k != "params"}
    run.update({k: v for k, v in values.items() if k in _RUN_KEYS})
    if not isinstance(run["method"], str):
        raise InvalidValueError("method", run["method"], "a string")
    cls = params_class(run["method"])
    params = dataclasses.asdict(base.params) if type(base.params) is cls else {}
    param_keys = {f.name for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key in param_keys:
            params[key] = value
        elif key not in _RUN_KEYS:
            raise UnknownNameError("config key", key, sorted(_RUN_KEYS | param_keys),
                                   context=f"for method {run['method']}")
    try:
        return TrainConfig(**run, params=cls(**params))
    except TypeError as exc:
        raise AhclError(f"bad config value: {exc}") from None


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML mapping of config keys (``safe_load``: no arbitrary objects)."""
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise AhclError(f"config file {path} not found", path=path) from None
    except IsADirectoryError:
        raise AhclError(f"config file {path} is a folder: pass a YAML file", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise AhclError(f"config file {path} cannot be read ({reason}): pass a YAML file",
                        path=path) from None
    except yaml.YAMLError as exc:
        raise AhclError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(values, dict):
        raise AhclError(f"config file {path} must hold a mapping of key: value")
    return _text_only(values, f"config file {path}")


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["lam=100", "lr_milestones=[5, 8]"]`` → ``{"lam": 100, "lr_milestones": [5, 8]}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not all(part.isidentifier() for part in key.strip().split(".")):
            raise AhclError(f"--set takes key=value with a config key name, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            reason = str(exc).splitlines()[0]
            raise AhclError(f"--set {key.strip()}: cannot read the value {raw!r} as YAML "
                            f"({reason})", name=key.strip(), value=raw) from None
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 as a string; people mean the number
        out[key.strip()] = _text_only(value, f"--set {key.strip()}")
    return out


def _text_only(value: Any, where: str) -> Any:
    """``value``, refused when a string in it cannot be written as UTF-8: YAML reads the escape
    ``"\\ud800"`` as a lone surrogate, which no path, name or message can hold."""
    if isinstance(value, dict):
        for k, v in value.items():
            _text_only(k, where)
            _text_only(v, where)
    elif isinstance(value, list):
        for v in value:
            _text_only(v, where)
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise AhclError(f"{where}: the value holds a lone surrogate (an escape such as "
                            "\\ud800), which is not text: write the character itself") from None
    return value


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
