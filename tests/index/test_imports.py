"""``ahcl.index`` stands alone: numpy and numba, plus ``ahcl.errors`` and ``ahcl._io``; no torch."""

from __future__ import annotations

import json
import subprocess
import sys

MODULES = ["ahcl.index", "ahcl.index.columns", "ahcl.index.format", "ahcl.index.hamming",
           "ahcl.index.hits", "ahcl.index.index", "ahcl.index.intrinsics", "ahcl.index.kernels",
           "ahcl.index.lexicographic", "ahcl.index.mih", "ahcl.index.packing",
           "ahcl.index.planes", "ahcl.index.selection", "ahcl.index.simd", "ahcl.index.store",
           "ahcl.index.lock", "ahcl.index.wal"]

# In a fresh interpreter: the modules ``import ahcl`` loads, then those the index adds.
CODE = f"""
import importlib, json, sys
import ahcl
before = set(sys.modules)
for m in {MODULES!r}:
    importlib.import_module(m)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_index_imports_no_torch_and_no_other_ahcl_package() -> None:
    added = json.loads(subprocess.run([sys.executable, "-c", CODE], capture_output=True,
                                      text=True, check=True).stdout)
    assert not [m for m in added if m.split(".")[0] in ("torch", "torchvision", "PIL")]
    ours = {m for m in added if m.split(".")[0] == "ahcl"}
    assert ours - {"ahcl.errors", "ahcl._io"} == set(MODULES)
