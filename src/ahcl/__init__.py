"""ahcl: remote-sensing image retrieval with asymmetric deep hashing (AHCL).

The top-level names are imported lazily so that ``import ahcl`` stays cheap and the
numpy-only parts (evaluation, packing) work without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from ahcl._version import __version__

_LAZY = {
    "evaluate": ("ahcl.eval.metrics", "evaluate"),
    "RetrievalReport": ("ahcl.eval.metrics", "RetrievalReport"),
    "pack_codes": ("ahcl.index.packing", "pack_codes"),
    "unpack_codes": ("ahcl.index.packing", "unpack_codes"),
    "load_run": ("ahcl.run", "load_run"),
    "train": ("ahcl.training", "train"),
    "Hit": ("ahcl.index.hits", "Hit"),
    "HammingIndex": ("ahcl.index", "HammingIndex"),
    "write_synthetic_dataset": ("ahcl.data.synthetic", "write_synthetic_dataset"),
    "read_image_folder": ("ahcl.data.folder", "read_image_folder"),
    "Run": ("ahcl.run", "Run"),
    "AhclError": ("ahcl.errors", "AhclError"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'ahcl' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), attr)
