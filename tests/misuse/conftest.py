"""Fixtures of the misuse suite: the inputs a careless user hands over, and a disk that refuses."""

from __future__ import annotations

import fnmatch
import os
import subprocess
from pathlib import Path
from typing import Callable

import pytest

import ahcl
import ahcl._io
from tests.misuse.inputs import blank_png


@pytest.fixture(scope="session")
def image(tiny_run: Path) -> str:
    """One database image of the tiny run."""
    return ahcl.load_run(tiny_run, device="cpu").db_paths[0]


@pytest.fixture(scope="session")
def bomb_png() -> bytes:
    """A PNG of 20000 x 20000 pixels (over Pillow's decompression-bomb limit) in about 50 KB."""
    return blank_png("1", 20000, 20000)


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """``fill(pattern)``: from then on, every atomic write of a file whose name matches
    ``pattern`` goes to ``/dev/full``, so the kernel refuses its bytes with ENOSPC as a full
    disk does (its temporary file beside the target is made, as on a real disk)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    real = ahcl._io._create_temp

    def fill(pattern: str = "*") -> None:
        def create_temp(path: Path) -> tuple[int, str]:
            fd, name = real(path)
            if fnmatch.fnmatch(path.name, pattern):
                os.close(fd)
                fd = os.open("/dev/full", os.O_WRONLY)
            return fd, name

        monkeypatch.setattr(ahcl._io, "_create_temp", create_temp)

    return fill


@pytest.fixture
def read_only(tmp_path: Path) -> Path:
    """An empty folder on a read-only file system (a tmpfs mounted ``ro``; skips where this
    process may not mount)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
