"""Frozen-backbone features, computed once and cached on disk by image content.

:func:`extract_features` hashes each image file (sha256 of its bytes, :func:`content_key`), serves
what the cache holds, computes the rest with the backbone's inference form
(:func:`~ahcl.models.inference.inference_model`: BatchNorm folded, channels_last, on the
placement, ``torch.inference_mode``) and appends them to the cache batch by batch, so an
interrupted run keeps its progress and a renamed or moved file still hits. Images are decoded
and resized in DataLoader worker processes while the main process runs the forward pass.
:func:`image_features` is the same loop without the cache, for a finetuned backbone. The cache
itself (records, segments, locking, compaction) is :mod:`ahcl.models.feature_cache`; its names
are re-exported here.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ahcl._io import file_digest
from ahcl._progress import progress, progress_bar
from ahcl.data.images import ImageReadError, load_rgb
from ahcl.device import Placement, default_workers, resolve_device
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
from ahcl.models.inference import CPU, InferenceBackbone, inference_model

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
    "image_features",
]

logger = logging.getLogger(__name__)

# Batches each worker decodes ahead. The forward pass is the bottleneck (≈10 ms per image against
# ≈1 ms to decode a 256 px JPEG), so two batches per worker hide decoding jitter; more would only
# hold more shared memory.
PREFETCH_FACTOR = 2


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
    """Stack the readable images, channels_last; keep ``(index, message)`` for the others."""
    ok = [(i, x) for i, x, _ in items if x is not None]
    errors = [(i, err) for i, _, err in items if err is not None]
    if not ok:
        return [], None, errors
    return [i for i, _ in ok], _stack_channels_last([x for _, x in ok]), errors


def _stack_channels_last(images: list[torch.Tensor]) -> torch.Tensor:
    """``(3, H, W)`` tensors → one ``(B, 3, H, W)`` batch in channels_last memory.

    The inference form wants channels_last, so the layout change happens here, in the decoding
    workers, instead of as one more copy in the main process. In a worker the batch is built
    straight in shared memory (as ``default_collate`` does), so it reaches the main process
    without being copied again.
    """
    first = images[0]
    shape = (len(images), *first.shape)
    if get_worker_info() is None:
        out = torch.empty(shape, dtype=first.dtype, memory_format=torch.channels_last)
    else:
        storage = first.untyped_storage()._new_shared(first.numel() * len(images)
                                                      * first.element_size())
        c, h, w = first.shape
        out = first.new(storage).as_strided(shape, (c * h * w, 1, w * c, c))
    for row, image in zip(out, images):
        row.copy_(image)
    return out


def extract_features(paths: Sequence[str | os.PathLike],
                     backbone: str | Backbone | InferenceBackbone, pretrained: bool = True,
                     cache_dir: str | os.PathLike | None = None,
                     batch_size: int = 32, num_workers: int | None = None,
                     device: str | torch.device | None = None, strict: bool = False, *,
                     placement: Placement | None = None, compile: bool = False) -> np.ndarray:
    """Features of image files from a frozen backbone, through the on-disk cache.

    Args:
        paths: ``n`` image files (read with :func:`ahcl.data.images.load_rgb`).
        backbone: a name for :func:`~ahcl.models.backbones.create_backbone`, a :class:`Backbone`
            (its inference form is built for this call; the backbone itself is not modified) or
            an :class:`~ahcl.models.inference.InferenceBackbone` (used as it is: build one to
            reuse it across calls).
        pretrained: passed to ``create_backbone`` when ``backbone`` is a name.
        cache_dir: cache root; default :func:`default_cache_dir`.
        batch_size: images per DataLoader batch and per cache append (on the CPU the forward
            runs them in chunks of :data:`~ahcl.models.inference.CPU_CHUNK`).
        num_workers: DataLoader worker processes decoding images while the forward runs; ``None``
            is :func:`~ahcl.device.default_workers`, 0 decodes in this process. Never more than
            there are batches to overlap.
        device: where the backbone runs in float32 (the older spelling of ``placement``).
        strict: raise at the first unreadable image; otherwise compute and cache all the readable
            ones first, then raise.
        placement: device and precision; default the CPU in float32. Give this or ``device``.
        compile: ``torch.compile`` the inference form (see
            :func:`~ahcl.models.inference.inference_model`).

    Returns:
        ``float32 (n, feature_dim)``, row ``i`` for ``paths[i]``.

    Raises:
        ImageReadError: a file cannot be read (``strict``, or while hashing).
        UnreadableImagesError: some images cannot be decoded (not ``strict``); ``.paths`` lists them.
        ValueError: ``batch_size < 1``, both ``placement`` and ``device``, or an inference form
            given with another placement or ``compile``.
        CompileUnavailableError: ``compile`` where torch.compile cannot work.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(backbone, (Backbone, InferenceBackbone)):
        backbone = create_backbone(backbone, pretrained=pretrained)
    model = _inference_form(backbone, placement, device, compile)
    paths = [os.fspath(p) for p in paths]
    keys = [content_key(p) for p in progress(paths, total=len(paths), desc="hashing images",
                                             unit="img")]
    with FeatureCache.for_backbone(model, cache_dir) as cache:
        features, found = cache.get_many(keys)
        rows: dict[str, list[int]] = {}  # identical files are computed once
        for i in np.flatnonzero(~found):
            rows.setdefault(keys[i], []).append(int(i))
        logger.debug("%s features (%s): %d cached, %d to compute", model.name, model.form,
                     int(found.sum()), len(rows))
        if rows:
            todo = [paths[where[0]] for where in rows.values()]
            computed, failed = _compute(model, todo, list(rows), batch_size, num_workers, strict,
                                        cache)
            for where, row in zip(rows.values(), computed):
                features[where] = row
            if len(cache.segments()) > MAX_SEGMENTS:
                cache.compact()
            if failed:
                raise UnreadableImagesError(
                    f"{len(failed)} image(s) cannot be read, e.g. {failed[0][1]}; remove or "
                    "replace them", [p for p, _ in failed])
    return features


def image_features(paths: Sequence[str | os.PathLike], model: InferenceBackbone,
                   batch_size: int = 32, num_workers: int | None = None) -> np.ndarray:
    """Features of image files, computed without the cache (a finetuned backbone: its weights
    are not what its ``weights_id`` names, so its features must not be cached under it).

    Args:
        paths: ``n`` image files.
        model: the inference form (:func:`~ahcl.models.inference.inference_model`).
        batch_size: images per DataLoader batch.
        num_workers: as in :func:`extract_features`.

    Returns:
        ``float32 (n, feature_dim)``, row ``i`` for ``paths[i]``.

    Raises:
        ImageReadError: at the first file that cannot be read.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out, _ = _compute(model, [os.fspath(p) for p in paths], None, batch_size, num_workers,
                      True, None)
    return out


def pil_features(images: Sequence[Any], model: InferenceBackbone,
                 batch_size: int = 32) -> np.ndarray:
    """Features of in-memory PIL images (uploads, altered copies), transformed in this process
    (they are few and already decoded: no workers to start); no cache.

    Returns:
        ``float32 (len(images), feature_dim)``.
    """
    out = [input_features(pil_inputs(images[start:start + batch_size], model), model,
                          batch_size) for start in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.feature_dim), np.float32)


def pil_inputs(images: Sequence[Any], model: InferenceBackbone) -> list[torch.Tensor]:
    """The network inputs of in-memory PIL images: ``model.transform`` of each (resize, crop,
    normalise), run in the calling thread. The service runs it on each request's own thread,
    outside the lock of the shared forward pass (:func:`input_features`)."""
    return [model.transform(img.convert("RGB")) for img in images]


def input_features(inputs: Sequence[torch.Tensor], model: InferenceBackbone,
                   batch_size: int = 32) -> np.ndarray:
    """Features of network inputs made by :func:`pil_inputs`, in forward passes of at most
    ``batch_size``: ``float32 (len(inputs), feature_dim)``."""
    inputs = list(inputs)
    out = [model.features(torch.stack(inputs[start:start + batch_size]))
           for start in range(0, len(inputs), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.feature_dim), np.float32)


def _inference_form(backbone: Backbone | InferenceBackbone, placement: Placement | None,
                    device: str | torch.device | None, compile: bool) -> InferenceBackbone:
    """The form to run: built from a ``Backbone`` on ``placement`` (or float32 on ``device``, or
    the CPU in float32); an ``InferenceBackbone`` as it is, unless asked to run otherwise."""
    if placement is not None and device is not None:
        raise ValueError("give placement or device, not both")
    if placement is None and device is not None:
        placement = Placement(resolve_device(device), "fp32")
    if isinstance(backbone, Backbone):
        return inference_model(backbone, CPU if placement is None else placement,
                               compile=compile)
    if (placement is not None and backbone.placement != placement) or (
            compile and not backbone.compiled):
        raise ValueError(f"this inference form of {backbone.name} runs as {backbone.form}; build "
                         "another with inference_model() for another placement or compile")
    return backbone


def _worker_threads(_: int) -> None:
    # One intra-op thread per decoding worker (DataLoader's default too, made explicit): the
    # cores belong to the forward pass in the main process, whose thread count is the caller's.
    torch.set_num_threads(1)


def data_loader(dataset: Dataset, batch_size: int, num_workers: int | None,
                placement: Placement, collate: Callable[[list], Any] | None = None
                ) -> DataLoader:
    """The DataLoader of one pass over ``dataset`` (decoding images, or reading scene windows):
    ``num_workers`` processes (``None``: :func:`~ahcl.device.default_workers`), but only where
    there is a later batch to overlap with; ``collate`` builds a batch (default: stack the
    readable images, channels_last)."""
    workers = default_workers() if num_workers is None else num_workers
    workers = max(0, min(workers, -(-len(dataset) // batch_size) - 1))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate or _collate, pin_memory=placement.is_cuda,
                      # one pass per loader: persistent workers would only outlive it
                      persistent_workers=False,
                      prefetch_factor=PREFETCH_FACTOR if workers else None,
                      worker_init_fn=_worker_threads if workers else None)


def _compute(model: InferenceBackbone, paths: list[str], keys: list[str] | None, batch_size: int,
             num_workers: int | None, strict: bool,
             cache: FeatureCache | None) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Features of ``paths`` (zero rows for unreadable ones), appended to ``cache`` (if any) batch
    by batch.

    Returns the features ``float32 (len(paths), feature_dim)`` and ``(path, message)`` per failure.
    """
    loader = data_loader(_ImageFiles(paths, model.transform), batch_size, num_workers,
                     model.placement)
    out = np.zeros((len(paths), model.feature_dim), dtype=np.float32)
    failed: list[tuple[str, str]] = []
    bar = progress_bar(total=len(paths), desc=f"{model.name} features", unit="img")
    try:
        for index, images, errors in loader:
            if errors and strict:
                raise ImageReadError(errors[0][1], path=paths[errors[0][0]])
            failed += [(paths[i], message) for i, message in errors]
            if images is not None:
                feats = model.features(images)
                out[index] = feats
                if cache is not None and keys is not None:
                    cache.put_many([keys[i] for i in index], feats)
            bar.update(len(index) + len(errors))
    finally:
        bar.close()
    return out, failed
