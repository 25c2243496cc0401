"""Fixtures of the feature tests: small seeded images and a counted ``tiny_cnn``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ahcl.models.backbones import Backbone, create_backbone
from tests.models._helpers import N_IMAGES, Counting


@pytest.fixture
def images(tmp_path) -> list[Path]:
    """Eight small random RGB PNGs of different sizes (seeded)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i in range(N_IMAGES):
        path = folder / f"scene_{i}.png"
        Image.fromarray(rng.integers(0, 256, (48 + 4 * i, 60, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def tiny(monkeypatch) -> tuple[Backbone, Counting]:
    bb = create_backbone("tiny_cnn", seed=0)
    return bb, Counting(bb, monkeypatch)
