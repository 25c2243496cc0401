"""Training-time augmentation of scene chips (finetune mode).

Aerial and satellite scenes have no "up": besides the usual random resized crop, every flip and
every rotation by a multiple of 90° is an equally valid view of the same place. The evaluation
and encoding transform stays the backbone's own (resize, centre crop, normalise).
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image
from torchvision.transforms import v2

from ahcl.errors import UnknownNameError

#: ``augment`` settings: ``scene`` (crop + flips + 90° rotations) or ``none``.
AUGMENTATIONS = ("scene", "none")


class RandomRot90:
    """Rotate a PIL image by 0, 90, 180 or 270 degrees, drawn from torch's generator."""

    def __call__(self, img: Image.Image) -> Image.Image:
        k = int(torch.randint(4, ()))
        return img.rotate(90 * k) if k else img

    def __repr__(self) -> str:
        return "RandomRot90()"


class QuarterTurn:
    """Rotate a PIL image by ``k`` quarter turns (exact, ``Image.transpose``), then apply
    ``then``: a fixed view of an image (the instance codes' rotated database views)."""

    _OPS = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
            Image.Transpose.ROTATE_270)

    def __init__(self, k: int, then) -> None:
        self.k = int(k) % 4
        self.then = then

    def __call__(self, img: Image.Image):
        return self.then(img.transpose(self._OPS[self.k]) if self.k else img)

    def __repr__(self) -> str:
        return f"QuarterTurn({self.k}, {self.then!r})"


def scene_augmentation(crop_size: int, mean: Sequence[float], std: Sequence[float],
                       scale: tuple[float, float] = (0.5, 1.0)) -> v2.Compose:
    """PIL RGB image → normalised float32 (3, crop, crop): random resized crop (``scale`` of the
    area, aspect 3/4..4/3), horizontal and vertical flips, a rotation by k·90°."""
    return v2.Compose([
        v2.RandomResizedCrop(crop_size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        RandomRot90(),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])


def training_transform(name: str, eval_transform) -> v2.Compose | None:
    """The augmentation ``name`` for a backbone whose evaluation transform is ``eval_transform``
    (a torchvision ``ImageClassification`` preset: its crop size, mean and std are reused);
    ``None`` for ``"none"``.

    Raises:
        UnknownNameError: not one of :data:`AUGMENTATIONS`.
    """
    if name not in AUGMENTATIONS:
        raise UnknownNameError("augmentation", name, AUGMENTATIONS)
    if name == "none":
        return None
    crop = eval_transform.crop_size
    return scene_augmentation(int(crop[0] if isinstance(crop, (list, tuple)) else crop),
                              eval_transform.mean, eval_transform.std)
