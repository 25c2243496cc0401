"""Every retrieval method by name, and the hyper-parameter grid each one is tuned over.

All methods share one interface: ``Method(**params)``, ``fit(inputs, labels, *, n_classes=None,
backbone=None) -> self``, fitted ``db_codes_`` (packed uint8), ``encode(inputs) -> packed uint8``,
``get_config()``, ``name``, and a ``seed`` parameter.

Model selection treats every method alike (see :mod:`ahcl.bench.runner`): at most
:data:`MAX_TRIALS` settings from :data:`GRIDS`, each trained on the training part of the database
and scored by validation mAP. A grid holds fewer trials only when the method has fewer
hyper-parameters worth varying (LSH, ITQ).
"""

from __future__ import annotations

from typing import Any

from ahcl.errors import AhclError
from ahcl.methods.ahcl import METHODS as ASYMMETRIC
from ahcl.methods.classifier import ClassifierCodes
from ahcl.methods.shallow import SHALLOW
from ahcl.methods.symmetric import SYMMETRIC

METHODS: dict[str, type] = {**ASYMMETRIC, **SYMMETRIC, **SHALLOW,
                            "classifier": ClassifierCodes}

KINDS: dict[str, str] = {
    **{name: "asymmetric" for name in ASYMMETRIC},
    **{name: "symmetric" for name in SYMMETRIC},
    **{name: "shallow" for name in SHALLOW},
    "classifier": "classifier",
}

MAX_TRIALS = 8

# Every deep method varies its own main loss weight, the learning rate and the dropout before the
# hash head (2 × 2 × 2 = 8 trials), AHCL included and with its defaults among them; the shallow
# methods vary what they have. Budget parameters (epochs, anchors, the hidden width) are fixed
# per method in ahcl.bench.runner.BUDGETS, never in a grid.
_LR_DROPOUT = [{"lr": lr, "dropout": d} for lr in (1e-3, 3e-4) for d in (0.0, 0.5)]


def _grid(key: str, values: tuple) -> list[dict[str, Any]]:
    return [{key: v, **rest} for v in values for rest in _LR_DROPOUT]


GRIDS: dict[str, list[dict[str, Any]]] = {
    "ahcl": _grid("gamma", (20.0, 5.0)),
    "adsh": _grid("lam", (200.0, 50.0)),
    "dpsh": _grid("eta", (0.1, 0.01)),
    "hashnet": _grid("alpha", (0.1, 0.5)),
    "dsh": _grid("alpha", (0.01, 0.1)),
    "csq": _grid("lam", (1e-4, 1e-2)),
    "classifier": _grid("hidden", (0, 512)),
    "lsh": [{}],
    "itq": [{}],
    "sdh": [{"nu": nu, "lam": lam} for nu in (1e-5, 1e-2) for lam in (1.0, 0.01)],
}


def get_method(name: str) -> type:
    """The method class registered under ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise AhclError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None


def list_methods() -> list[str]:
    """Registered method names."""
    return list(METHODS)


def create_method(name: str, **params: Any) -> Any:
    """An unfitted method; unknown parameter names raise :class:`AhclError`."""
    cls = get_method(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise AhclError(f"{name}: {exc}") from None
