"""Scene datasets: image reading, folder-per-class datasets, splits, the registry of public
datasets (download + verify + extract), and synthetic scenes.

The submodules are imported lazily so ``import ahcl.data`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "load_rgb": "ahcl.data.images", "ImageReadError": "ahcl.data.images",
    "read_image_folder": "ahcl.data.folder", "SceneFolder": "ahcl.data.folder",
    "make_split": "ahcl.data.splits", "Split": "ahcl.data.splits",
    "carve_validation": "ahcl.data.splits", "save_split": "ahcl.data.splits",
    "load_split": "ahcl.data.splits",
    "DatasetInfo": "ahcl.data.registry", "list_datasets": "ahcl.data.registry",
    "get_dataset": "ahcl.data.registry", "ensure_dataset": "ahcl.data.registry",
    "generate_scene": "ahcl.data.synthetic", "write_synthetic_dataset": "ahcl.data.synthetic",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'ahcl.data' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)
