"""Shared by the RSSCN7 benchmark scripts: the data path and its cached MobileNetV2 features."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "rsscn7"


def parser(doc: str, out_name: str) -> argparse.ArgumentParser:
    """An argument parser with ``--data`` and ``--out`` (under benchmarks/results/)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / out_name))
    return ap


def features(data: str) -> tuple[np.ndarray, np.ndarray]:
    """Frozen ImageNet MobileNetV2 features (cached) and labels of every image in ``data``."""
    from ahcl.data.folder import read_image_folder
    from ahcl.models.features import extract_features

    folder = read_image_folder(data)
    X = extract_features([str(p) for p in folder.absolute_paths], "mobilenet_v2")
    return X, folder.labels
