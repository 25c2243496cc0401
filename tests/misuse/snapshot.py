"""What is on disk, to prove a refused command changed nothing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path, every folder (as an empty entry,
    so a folder left behind shows) and every symbolic link (as where it points). The index
    writers' empty lock files (``INDEX.lock``) hold no data and stay beside an index by design:
    they are left out."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(folder, d), root) + "/"] = ""
        for f in files:
            p = Path(folder, f)
            if p.is_symlink():
                out[os.path.relpath(p, root)] = "-> " + os.readlink(p)
            elif not (p.name.endswith(".lock") and p.stat().st_size == 0):
                out[os.path.relpath(p, root)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
