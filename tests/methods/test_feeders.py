"""Feeders: workers, persistent loaders, per-item augmentation seeds, channels_last batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ahcl.data.synthetic import write_synthetic_dataset
from ahcl.data.transforms import training_transform
from ahcl.data.folder import read_image_folder
from ahcl.methods.feeders import FeatureFeeder, ImageFeeder
from ahcl.models.backbones import create_backbone


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    root = write_synthetic_dataset(tmp_path_factory.mktemp("feed") / "syn", per_class=4,
                                   size=40, seed=1, classes=["water", "forest"])
    return [str(p) for p in read_image_folder(root).absolute_paths]


def _feeder(images, workers: int) -> ImageFeeder:
    t = create_backbone("tiny_cnn", pretrained=False).transform
    return ImageFeeder(images, t, num_workers=workers, train_transform=training_transform("scene", t))


def test_workers_and_seeds_do_not_change_batches(images) -> None:
    batches = [np.array([3, 1, 0]), np.array([7, 2])]
    seeds = [np.array([11, 12, 13]), np.array([14, 15])]
    out = {}
    for workers in (0, 2):
        feeder = _feeder(images, workers)
        evald = [x.clone() for x in feeder.batches(batches)]
        train1 = [x.clone() for x in feeder.batches(batches, train=True, seeds=seeds)]
        train2 = [x.clone() for x in feeder.batches(batches, train=True, seeds=seeds)]
        assert all(torch.equal(a, b) for a, b in zip(train1, train2))  # persistent: same views
        assert not torch.equal(train1[0], evald[0])
        assert evald[0].is_contiguous(memory_format=torch.channels_last)
        out[workers] = (evald, train1)
    for a, b in zip(out[0][0] + out[0][1], out[2][0] + out[2][1]):
        assert torch.equal(a, b)


def test_augmented_batches_need_seeds(images) -> None:
    with pytest.raises(ValueError, match="one seed per item"):
        next(_feeder(images, 0).batches([np.array([0])], train=True))


def test_feature_feeder_rows() -> None:
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    f = FeatureFeeder(x)
    assert not f.augments
    got = list(f.batches([np.array([4, 0]), np.array([5])], train=True))
    assert np.array_equal(got[0].numpy(), x[[4, 0]]) and np.array_equal(got[1].numpy(), x[[5]])


def test_view_feeder_picks_each_items_view_by_its_seed():
    from ahcl.methods.feeders import ViewFeeder

    rng = np.random.default_rng(0)
    views = [rng.standard_normal((10, 3)).astype(np.float32) for _ in range(4)]
    feeder = ViewFeeder(views)
    idx, seeds = np.array([3, 0, 7, 7]), np.array([5, 2, 8, 3])
    (train,) = list(feeder.batches([idx], train=True, seeds=[seeds]))
    want = np.stack([views[s % 4][i] for i, s in zip(idx, seeds)])
    np.testing.assert_array_equal(train.numpy(), want)
    (plain,) = list(feeder.batches([idx]))
    np.testing.assert_array_equal(plain.numpy(), views[0][idx])
    with pytest.raises(ValueError, match="seed per item"):
        list(feeder.batches([idx], train=True))
    with pytest.raises(ValueError, match="different shapes"):
        ViewFeeder([views[0], views[1][:5]])
