"""Shared fixtures: where ../shared is, real data and weights (skipping cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"

os.environ.setdefault("AHCL_PROGRESS", "0")


def shared_root() -> Path | None:
    """``$AHCL_SHARED`` or ``../shared`` beside the checkout, if it exists."""
    env = os.environ.get("AHCL_SHARED")
    path = Path(env) if env else REPO.parent / "shared"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    root = shared_root()
    if root is None:
        pytest.skip("../shared not found beside the checkout (set AHCL_SHARED to its path)")
    return root


@pytest.fixture(scope="session")
def rsscn7_dir(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "rsscn7"
    if not path.is_dir():
        pytest.skip(f"{path} not found: the real RSSCN7 scenes are needed for this test")
    return path


@pytest.fixture(scope="session")
def mobilenet_weights() -> Path:
    """Skip unless torchvision can load MobileNetV2 ImageNet weights offline from its cache."""
    import torch.hub

    path = Path(torch.hub.get_dir()) / "checkpoints" / MOBILENET_FILE
    if not path.is_file():
        pytest.skip(f"{path} missing: copy ../shared/weights/{MOBILENET_FILE} there "
                    "(see ../shared/weights/README.md; .ci/run does it)")
    return path


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch intra-op thread for the whole session: the problems are tiny, and on a busy
    2-core machine OpenMP threads spinning against other jobs make them many times slower.
    (Session scope: results compared for byte equality must all come from one thread count.)"""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory):
    """Keep the feature cache and dataset root of the whole test session in a temp folder."""
    saved = {k: os.environ.get(k) for k in ("AHCL_CACHE", "AHCL_DATA")}
    os.environ["AHCL_CACHE"] = str(tmp_path_factory.mktemp("feature-cache"))
    os.environ["AHCL_DATA"] = str(tmp_path_factory.mktemp("datasets"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def synthetic_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 classes × 12 synthetic scenes of 32 px (seed 0), shared by the whole session."""
    from ahcl.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("scenes") / "syn", per_class=12,
                                   size=32, seed=0,
                                   classes=["water", "forest", "farmland", "residential",
                                            "roads", "parking"])


@pytest.fixture(scope="session")
def tiny_run(synthetic_scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-bit tiny_cnn AHCL run of one outer iteration (read-only: copy it to change it)."""
    import ahcl

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    ahcl.train(out, data=str(synthetic_scenes), backbone="tiny_cnn", n_bits=16, outer_iters=1,
               hidden=16, num_workers=0)
    return out
