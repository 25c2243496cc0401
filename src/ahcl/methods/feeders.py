"""What the network step is fed: cached features (frozen mode) or images (finetune mode).

A feeder yields batches on the placement's device. Features are copied to the device once; images
are decoded and transformed in DataLoader worker processes that persist across epochs (pinned
memory and non-blocking copies on CUDA), with ``channels_last`` batches. Training batches may be
augmented: each item then carries its own seed, so the views do not depend on the number of
workers, on which worker decodes an item, or on a resume.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ahcl.data.images import load_rgb
from ahcl.device import CPU, Placement


class FeatureFeeder:
    """Rows of a precomputed float32 (n, d) feature matrix."""

    def __init__(self, features: np.ndarray) -> None:
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self._on_device: dict[torch.device, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.features)

    #: Feature rows are never augmented.
    augments = False

    def batches(self, index_batches: Sequence[np.ndarray], placement: Placement = CPU,
                train: bool = False, seeds: Sequence[np.ndarray] | None = None
                ) -> Iterator[torch.Tensor]:
        """Yield float32 (B, d) tensors on the placement's device for each array of row indices
        (``train`` and ``seeds`` are accepted for the common interface and unused)."""
        del train, seeds
        if placement.device.type == "cpu":
            for idx in index_batches:
                yield torch.from_numpy(self.features[idx])
            return
        if placement.device not in self._on_device:  # the whole matrix once, not per batch
            self._on_device[placement.device] = torch.from_numpy(self.features).to(
                placement.device)
        on = self._on_device[placement.device]
        for idx in index_batches:
            yield on[torch.from_numpy(np.asarray(idx, np.int64)).to(placement.device)]


class ViewFeeder(FeatureFeeder):
    """Rows of precomputed features in several views of each image (frozen mode's augmentation:
    the four quarter turns). Training batches take, for each item, the view its seed picks
    (``seed % V``); other batches take the first view (the image as it is). The views are kept
    as given (no stacked copy)."""

    def __init__(self, views: Sequence[np.ndarray]) -> None:
        super().__init__(views[0])
        self.views = [self.features] + [np.ascontiguousarray(v, dtype=np.float32)
                                        for v in views[1:]]
        if any(v.shape != self.features.shape for v in self.views):
            raise ValueError(f"views of different shapes: {[v.shape for v in self.views]}")

    #: Training batches are augmented (one view per item, from its seed).
    augments = True

    def batches(self, index_batches: Sequence[np.ndarray], placement: Placement = CPU,
                train: bool = False, seeds: Sequence[np.ndarray] | None = None
                ) -> Iterator[torch.Tensor]:
        """As :meth:`FeatureFeeder.batches`; with ``train``, item ``i`` of batch ``k`` comes from
        view ``seeds[k][i] % V``."""
        if not train:
            yield from super().batches(index_batches, placement)
            return
        if seeds is None:
            raise ValueError("augmented training batches need one seed per item")
        for idx, seed in zip(index_batches, seeds):
            idx = np.asarray(idx, dtype=np.int64)
            which = np.asarray(seed, dtype=np.int64) % len(self.views)
            rows = np.empty((len(idx), self.features.shape[1]), dtype=np.float32)
            for v, view in enumerate(self.views):
                pick = which == v
                rows[pick] = view[idx[pick]]
            yield placement.to_device(torch.from_numpy(rows))


class _ImageDataset(Dataset):
    """Item ``(i, seed)``: image ``i`` through the transform, seeded when ``seed >= 0``."""

    def __init__(self, paths: Sequence[str], transform: Callable) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int]) -> torch.Tensor:
        i, seed = item
        image = load_rgb(self.paths[i])
        if seed < 0:
            return self.transform(image)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image)


class _Batches(Sampler):
    """The batches of the current pass; set before each pass so persistent workers are reused."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ImageFeeder:
    """Images loaded and transformed on the fly (finetune mode), optionally in worker processes.

    Args:
        paths: image files.
        transform: PIL image → float32 (3, H, W) for evaluation (and training, without
            ``train_transform``).
        num_workers: decoding processes (0: in this process); they persist across passes.
        train_transform: the augmentation used for training batches, or ``None``.
    """

    def __init__(self, paths: Sequence[str], transform: Callable, num_workers: int = 0,
                 train_transform: Callable | None = None) -> None:
        self.paths = list(paths)
        self.num_workers = num_workers
        self.transform, self.train_transform = transform, train_transform
        self._loaders: dict[tuple[bool, bool], tuple[DataLoader, _Batches]] = {}

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def augments(self) -> bool:
        """Whether training batches are augmented (and so need per-item seeds)."""
        return self.train_transform is not None

    def _loader(self, train: bool, pin: bool) -> tuple[DataLoader, _Batches]:
        key = (train and self.augments, pin)
        if key not in self._loaders:
            sampler = _Batches()
            dataset = _ImageDataset(self.paths, self.train_transform if key[0] else
                                    self.transform)
            loader = DataLoader(dataset, batch_sampler=sampler, num_workers=self.num_workers,
                                pin_memory=pin, persistent_workers=self.num_workers > 0)
            self._loaders[key] = (loader, sampler)
        return self._loaders[key]

    def batches(self, index_batches: Sequence[np.ndarray], placement: Placement = CPU,
                train: bool = False, seeds: Sequence[np.ndarray] | None = None
                ) -> Iterator[torch.Tensor]:
        """Yield float32 (B, 3, H, W) ``channels_last`` tensors on the placement's device, one per
        array of indices, in the order given.

        Args:
            index_batches: image indices of each batch.
            placement: where the batches go.
            train: use the training augmentation (if the feeder has one).
            seeds: per-item seeds of the augmentation, one array per batch (needed when
                ``train`` and :attr:`augments`).
        """
        augment = train and self.augments
        if augment and seeds is None:
            raise ValueError("augmented training batches need one seed per item")
        loader, sampler = self._loader(train, placement.is_cuda)
        sampler.batches = [
            [(int(i), int(s) if augment else -1)
             for i, s in zip(b, seeds[k] if augment else np.zeros(len(b), np.int64))]
            for k, b in enumerate(index_batches)]
        for x in loader:
            yield placement.to_device(x).contiguous(memory_format=torch.channels_last)


@contextlib.contextmanager
def fork_rng(placement: Placement) -> Iterator[None]:
    """Fork torch's random state of the CPU (and of the placement's GPU) for a seeded block, and
    give the caller's state back afterwards."""
    devices = [placement.device.index or 0] if placement.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        yield


def as_feeder(inputs: np.ndarray | FeatureFeeder | ImageFeeder) -> FeatureFeeder | ImageFeeder:
    """Wrap a feature matrix in a :class:`FeatureFeeder`; pass feeders through."""
    if isinstance(inputs, (FeatureFeeder, ImageFeeder)):
        return inputs
    return FeatureFeeder(np.asarray(inputs))
