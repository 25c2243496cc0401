"""Every retrieval method by name: the one place that lists the method classes.

Each class declares its :class:`~ahcl.methods.base.MethodSpec` (name, kind, whether ``ahcl
train`` runs it, tuning grid, benchmark budget); everything else (config validation, the CLI's
choices, the benchmark and its report) reads the views below, so adding a method is one class
and one line in :data:`_CLASSES`.

All methods share one interface (:class:`~ahcl.methods.base.HashingMethod`):
``Method(**params)``, ``fit(inputs, labels, *, n_classes=None, backbone=None) -> self``, fitted
``db_codes_`` (packed uint8), ``encode(inputs) -> packed uint8``, ``get_config()``, ``name``.

Model selection treats every method alike (see :mod:`ahcl.bench.runner`): at most
:data:`~ahcl.methods.base.MAX_TRIALS` settings of the method's grid, each trained on the training
part of the database and scored by validation mAP.
"""

from __future__ import annotations

from typing import Any

from ahcl.errors import UnknownNameError
from ahcl.methods.ahcl import ADSH, AHCL
from ahcl.methods.base import MAX_TRIALS, HashingMethod, MethodSpec
from ahcl.methods.classifier import ClassifierCodes
from ahcl.methods.shallow import ITQ, LSH, SDH
from ahcl.methods.symmetric import CSQ, DPSH, DSH, HashNetMethod

_CLASSES: tuple[type[HashingMethod], ...] = (AHCL, ADSH, DPSH, HashNetMethod, DSH, CSQ, LSH, ITQ,
                                             SDH, ClassifierCodes)

METHODS: dict[str, type[HashingMethod]] = {cls.spec.name: cls for cls in _CLASSES}
SPECS: dict[str, MethodSpec] = {name: cls.spec for name, cls in METHODS.items()}
KINDS: dict[str, str] = {name: spec.kind for name, spec in SPECS.items()}
GRIDS: dict[str, list[dict[str, Any]]] = {name: list(spec.grid) for name, spec in SPECS.items()}
BUDGETS: dict[str, dict[str, Any]] = {name: dict(spec.budget) for name, spec in SPECS.items()
                                      if spec.budget}
#: The methods ``ahcl train`` writes runs for (they have a query network).
TRAINABLE: tuple[str, ...] = tuple(name for name, spec in SPECS.items() if spec.trainable)
#: The method of ``ahcl train`` when none is named: the one this project is about.
DEFAULT_METHOD = AHCL.spec.name

__all__ = ["BUDGETS", "DEFAULT_METHOD", "GRIDS", "KINDS", "MAX_TRIALS", "METHODS", "SPECS",
           "TRAINABLE", "create_method", "get_method", "list_methods", "methods_of_kind"]


def get_method(name: str) -> type[HashingMethod]:
    """The method class registered under ``name``.

    Raises:
        UnknownNameError: no such method (``err.choices`` lists the registered names).
    """
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise UnknownNameError("method", name, METHODS) from None


def get_trainable(name: str) -> type[HashingMethod]:
    """The class of a method ``ahcl train`` can run.

    Raises:
        UnknownNameError: not registered, or not trainable (``err.choices``: the trainable ones).
    """
    if name not in TRAINABLE:
        raise UnknownNameError("method for ahcl train", name, TRAINABLE,
                               hint="the shallow baselines and classifier codes run through "
                                    "ahcl benchmark")
    return METHODS[name]


def list_methods() -> list[str]:
    """Registered method names, in registry order."""
    return list(METHODS)


def methods_of_kind(kind: str) -> list[str]:
    """Names of the registered methods of one kind (``"symmetric"``, ...)."""
    return [name for name, k in KINDS.items() if k == kind]


def create_method(name: str, **params: Any) -> HashingMethod:
    """An unfitted method; unknown parameter names raise :class:`UnknownNameError`."""
    return get_method(name)(**params)
