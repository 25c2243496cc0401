"""Synthetic scenes: determinism, variety within a class, separability between classes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from ahcl.data.folder import read_image_folder
from ahcl.data.images import load_rgb
from ahcl.data.synthetic import CLASSES, generate_scene, write_synthetic_dataset
from ahcl.errors import DatasetError


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = write_synthetic_dataset(tmp_path / "a", per_class=3, size=32, seed=4)
    b = write_synthetic_dataset(tmp_path / "b", per_class=3, size=32, seed=4)
    c = write_synthetic_dataset(tmp_path / "c", per_class=3, size=32, seed=5)
    assert _digests(a) == _digests(b)
    assert len(_digests(a)) == 3 * len(CLASSES)
    assert _digests(a) != _digests(c)
    # an image does not depend on which other classes were asked for
    d = write_synthetic_dataset(tmp_path / "d", per_class=1, size=32, seed=4,
                                classes=["roads", "water"])
    assert _digests(d)["roads/roads_0000.png"] == _digests(a)["roads/roads_0000.png"]


def test_written_folder_reads_back(tmp_path: Path) -> None:
    out = write_synthetic_dataset(tmp_path / "s", per_class=2, size=24, seed=0)
    folder = read_image_folder(out)
    assert folder.classes == sorted(CLASSES) and len(folder) == 2 * len(CLASSES)
    assert load_rgb(folder.absolute_paths[0]).size == (24, 24)
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind
    with pytest.raises(DatasetError, match="already exists"):
        write_synthetic_dataset(out, per_class=1)
    with pytest.raises(DatasetError, match="unknown synthetic class"):
        write_synthetic_dataset(tmp_path / "t", classes=["water", "lava"])


@pytest.mark.parametrize("size", [8, 33, 128])
def test_any_size(size: int) -> None:
    img = generate_scene("parking", size, np.random.default_rng(0))
    assert img.shape == (size, size, 3) and img.dtype == np.uint8


def _features(img: np.ndarray) -> np.ndarray:
    """Downsampled 8x8 colour means plus per-channel std and a gradient energy (texture)."""
    x = img.astype(np.float64)
    small = x.reshape(8, 8, 8, 8, 3).mean(axis=(1, 3)).ravel() / 255
    grad = np.abs(np.diff(x, axis=0)).mean() / 255 + np.abs(np.diff(x, axis=1)).mean() / 255
    return np.concatenate([small * 0.1, x.std(axis=(0, 1)) / 64, [grad * 4]])


def test_classes_separable_and_varied() -> None:
    per_class, size = 20, 64
    feats, labels = [], []
    for k, cls in enumerate(CLASSES):
        imgs = [generate_scene(cls, size, np.random.default_rng([9, k, i]))
                for i in range(per_class)]
        assert not np.array_equal(imgs[0], imgs[1])  # two images of a class differ
        feats += [_features(im) for im in imgs]
        labels += [k] * per_class
    x, y = np.array(feats), np.array(labels)
    train = np.arange(len(y)) % 2 == 0
    centroids = np.stack([x[train & (y == k)].mean(axis=0) for k in range(len(CLASSES))])
    dist = ((x[~train, None, :] - centroids[None]) ** 2).sum(axis=2)
    accuracy = (dist.argmin(axis=1) == y[~train]).mean()
    assert accuracy > 0.6, accuracy  # chance is 1/8
