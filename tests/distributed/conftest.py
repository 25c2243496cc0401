"""Fixtures of the distributed tests: a trained run and a folder of new archive images."""

from __future__ import annotations

from pathlib import Path

import pytest

import ahcl


@pytest.fixture(scope="package")
def trained_run(synthetic_scenes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist-run") / "run"
    ahcl.train(out, data=str(synthetic_scenes), backbone="tiny_cnn", n_bits=16, outer_iters=2,
               hidden=32, dropout=0.0)
    return out


@pytest.fixture(scope="package")
def new_images(tmp_path_factory) -> Path:
    """500 synthetic scenes the run has never seen (5 classes × 100, seed 5)."""
    from ahcl.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("archive") / "new", per_class=100,
                                   size=32, seed=5,
                                   classes=["water", "forest", "farmland", "residential", "roads"])
