"""Finetune augmentation of scene chips (ahcl.data.transforms)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ahcl.data.transforms import RandomRot90, scene_augmentation, training_transform
from ahcl.errors import UnknownNameError
from ahcl.models.backbones import create_backbone


def _image(size: int = 64) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_rot90_draws_every_quarter_turn() -> None:
    img = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4))
    seen = set()
    torch.manual_seed(0)
    for _ in range(40):
        seen.add(np.asarray(RandomRot90()(img)).tobytes())
    expected = {np.rot90(np.asarray(img), k).tobytes() for k in range(4)}
    assert seen == expected


def test_scene_augmentation_shape_and_seed() -> None:
    aug = scene_augmentation(32, [0.5] * 3, [0.25] * 3)
    img = _image()
    torch.manual_seed(3)
    a = aug(img)
    torch.manual_seed(3)
    b = aug(img)
    torch.manual_seed(4)
    c = aug(img)
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_training_transform_follows_the_backbone() -> None:
    backbone = create_backbone("tiny_cnn", pretrained=False)
    aug = training_transform("scene", backbone.transform)
    x = backbone.transform(_image(80))
    torch.manual_seed(0)
    assert aug(_image(80)).shape == x.shape
    assert training_transform("none", backbone.transform) is None
    with pytest.raises(UnknownNameError, match="unknown augmentation 'flip'"):
        training_transform("flip", backbone.transform)
