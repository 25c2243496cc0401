"""Frozen-backbone features, computed once and cached on disk by image content.

:func:`extract_features` hashes each image file (sha256 of its bytes, :func:`content_key`), serves
what the cache holds, computes the rest with the backbone (eval mode, ``torch.inference_mode``) and
appends them to the cache batch by batch, so an interrupted run keeps its progress and a renamed or
moved file still hits. The cache itself (records, segments, locking, compaction) is
:mod:`ahcl.models.feature_cache`; its names are re-exported here.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ahcl._io import file_digest
from ahcl._progress import progress, progress_bar
from ahcl.data.images import ImageReadError, load_rgb
from ahcl.models.backbones import Backbone, create_backbone
from ahcl.models.feature_cache import (
    FORMAT_VERSION,
    HEADER_SIZE,
    KEY_SIZE,
    MAGIC,
    MAX_SEGMENTS,
    FeatureCache,
    default_cache_dir,
)

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAGIC",
    "MAX_SEGMENTS",
    "FeatureCache",
    "UnreadableImagesError",
    "content_key",
    "default_cache_dir",
    "extract_features",
]

logger = logging.getLogger(__name__)


class UnreadableImagesError(ImageReadError):
    """Some images could not be read (the others were computed and cached).

    Attributes:
        paths: the unreadable files.
    """

    def __init__(self, message: str, paths: list[str]) -> None:
        super().__init__(message, paths=paths)


def content_key(path: str | os.PathLike) -> str:
    """The cache key of an image: sha256 hex digest of the file's bytes.

    Raises:
        ImageReadError: the file cannot be read.
    """
    try:
        return file_digest(path, "sha256")
    except OSError as exc:
        raise ImageReadError(f"cannot read image {os.fspath(path)}: {exc.strerror or exc}",
                             path=os.fspath(path)) from None


class _ImageFiles(Dataset):
    """Item ``i``: ``(i, transformed image or None, error message or None)``."""

    def __init__(self, paths: Sequence[str], transform) -> None:
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, self.transform(load_rgb(self.paths[i])), None
        except ImageReadError as exc:  # reported per item: a worker exception would lose its type
            return i, None, str(exc)


def _collate(items: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    """Stack the readable images; keep ``(index, message)`` for the others."""
    ok = [(i, x) for i, x, _ in items if x is not None]
    images = torch.stack([x for _, x in ok]) if ok else None
    return [i for i, _ in ok], images, [(i, err) for i, _, err in items if err is not None]


def extract_features(paths: Sequence[str | os.PathLike], backbone: str | Backbone,
                     pretrained: bool = True, cache_dir: str | os.PathLike | None = None,
                     batch_size: int = 32, num_workers: int = 0, device: str | torch.device = "cpu",
                     strict: bool = False) -> np.ndarray:
    """Features of image files from a frozen backbone, through the on-disk cache.

    Args:
        paths: ``n`` image files (read with :func:`ahcl.data.images.load_rgb`).
        backbone: a name for :func:`~ahcl.models.backbones.create_backbone` or a
            :class:`Backbone` (moved to ``device``; its train/eval mode is restored afterwards).
        pretrained: passed to ``create_backbone`` when ``backbone`` is a name.
        cache_dir: cache root; default :func:`default_cache_dir`.
        batch_size: images per forward pass (and per cache append).
        num_workers: DataLoader worker processes for decoding; 0 decodes in this process.
        device: where the backbone runs.
        strict: raise at the first unreadable image; otherwise compute and cache all the readable
            ones first, then raise.

    Returns:
        ``float32 (n, feature_dim)``, row ``i`` for ``paths[i]``.

    Raises:
        ImageReadError: a file cannot be read (``strict``, or while hashing).
        UnreadableImagesError: some images cannot be decoded (not ``strict``); ``.paths`` lists them.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = backbone if isinstance(backbone, Backbone) else create_backbone(backbone,
                                                                            pretrained=pretrained)
    paths = [os.fspath(p) for p in paths]
    keys = [content_key(p) for p in progress(paths, total=len(paths), desc="hashing images",
                                             unit="img")]
    with FeatureCache.for_backbone(model, cache_dir) as cache:
        features, found = cache.get_many(keys)
        rows: dict[str, list[int]] = {}  # identical files are computed once
        for i in np.flatnonzero(~found):
            rows.setdefault(keys[i], []).append(int(i))
        logger.debug("%s features: %d cached, %d to compute", model.name, int(found.sum()),
                     len(rows))
        if rows:
            todo = [paths[where[0]] for where in rows.values()]
            computed, failed = _compute(model, todo, list(rows), batch_size, num_workers, device,
                                        strict, cache)
            for where, row in zip(rows.values(), computed):
                features[where] = row
            if len(cache.segments()) > MAX_SEGMENTS:
                cache.compact()
            if failed:
                raise UnreadableImagesError(
                    f"{len(failed)} image(s) cannot be read, e.g. {failed[0][1]}; remove or "
                    "replace them", [p for p, _ in failed])
    return features


def _compute(model: Backbone, paths: list[str], keys: list[str], batch_size: int,
             num_workers: int, device: str | torch.device, strict: bool,
             cache: FeatureCache) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Features of ``paths`` (zero rows for unreadable ones), appended to ``cache`` batch by batch.

    Returns the features ``float32 (len(paths), feature_dim)`` and ``(path, message)`` per failure.
    """
    loader = DataLoader(_ImageFiles(paths, model.transform), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers, collate_fn=_collate)
    out = np.zeros((len(paths), model.feature_dim), dtype=np.float32)
    failed: list[tuple[str, str]] = []
    was_training = model.training
    model.eval().to(device)
    bar = progress_bar(total=len(paths), desc=f"{model.name} features", unit="img")
    try:
        with torch.inference_mode():
            for index, images, errors in loader:
                if errors and strict:
                    raise ImageReadError(errors[0][1])
                failed += [(paths[i], message) for i, message in errors]
                if images is not None:
                    feats = model.forward_features(images.to(device)).float().cpu().numpy()
                    out[index] = feats
                    cache.put_many([keys[i] for i in index], feats)
                bar.update(len(index) + len(errors))
    finally:
        bar.close()
        model.train(was_training)
    return out, failed
