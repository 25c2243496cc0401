"""Fixtures for the service tests: one tiny trained run per session, a fresh copy per test."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ahcl.cli import main
from tests.misuse.snapshot import snapshot as disk_snapshot

CLASSES = "water,forest,farmland,residential,roads,parking"
TOKEN = "s3cret-token"


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32-bit tiny_cnn run on 6 synthetic classes x 15 scenes of 48 px (about 4 s)."""
    root = tmp_path_factory.mktemp("serve_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AHCL_CACHE", str(root / "cache"))  # the feature cache stays in tmp
        assert main(["datasets", "synthetic", "--out", str(root / "data"), "--per-class", "15",
                     "--size", "48", "--seed", "0", "--classes", CLASSES]) == 0
        assert main(["train", "--data", str(root / "data"), "--out", str(root / "run"),
                     "--backbone", "tiny_cnn", "--no-pretrained", "--bits", "32", "--seed", "0",
                     "--query-fraction", "0.2", "--set", "outer_iters=2"]) == 0
    return root / "run"


@pytest.fixture()
def run_dir(tiny_run_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny run (tests write archive.index / archive.images into it)."""
    return Path(shutil.copytree(tiny_run_dir, tmp_path / "run"))


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def noise_png(seed: int, size: int = 40) -> bytes:
    """A seeded random RGB image as PNG bytes (distinct per seed)."""
    rng = np.random.default_rng(seed)
    return png_bytes(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB"))


def snapshot(folder: Path) -> dict[str, str]:
    """The files under ``folder`` by relative path and sha256 (:mod:`tests.misuse.snapshot`
    without its folder entries: a failed upload may leave the empty archive.images/ it made)."""
    return {k: v for k, v in disk_snapshot(folder).items() if not k.endswith("/")}


def reference_hits(query: np.ndarray, codes: np.ndarray, ids: np.ndarray, k: int,
                   radius: int | None = None, exclude: int | None = None,
                   semantic_bits: int | None = None) -> list[tuple[int, int]]:
    """Explicit loop: (id, distance) of the k nearest, ordered by (distance, id) — with
    ``semantic_bits``, by (semantic distance, instance distance, id), the distance shown (and
    bounded by ``radius``) being the semantic one."""
    cut = len(query) if semantic_bits is None else semantic_bits // 8

    def popcount(a: np.ndarray, b: np.ndarray) -> int:
        return sum(bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b))

    rows = []
    for code, i in zip(codes, ids):
        if i == exclude:
            continue
        d, d_inst = popcount(query[:cut], code[:cut]), popcount(query[cut:], code[cut:])
        if radius is None or d <= radius:
            rows.append((int(d), d_inst, int(i)))
    return [(i, d) for d, _, i in sorted(rows)[:k]]
