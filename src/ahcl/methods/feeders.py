"""What the network step is fed: cached features (frozen mode) or images (finetune mode)."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ahcl.data.images import load_rgb


class FeatureFeeder:
    """Rows of a precomputed float32 (n, d) feature matrix."""

    def __init__(self, features: np.ndarray) -> None:
        self.features = np.ascontiguousarray(features, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.features)

    def batches(self, index_batches: Sequence[np.ndarray]) -> Iterator[torch.Tensor]:
        """Yield float32 (B, d) tensors for each array of row indices."""
        for idx in index_batches:
            yield torch.from_numpy(self.features[idx])


class _ImageDataset(Dataset):
    def __init__(self, paths: Sequence[str], transform: Callable, loader: Callable) -> None:
        self.paths, self.transform, self.loader = list(paths), transform, loader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.loader(self.paths[i]))


class ImageFeeder:
    """Images loaded and transformed on the fly (finetune mode), optionally in worker processes."""

    def __init__(self, paths: Sequence[str], transform: Callable, num_workers: int = 0) -> None:
        self.dataset = _ImageDataset(paths, transform, load_rgb)
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, index_batches: Sequence[np.ndarray]) -> Iterator[torch.Tensor]:
        """Yield float32 (B, 3, H, W) tensors for each array of indices, in the order given."""
        loader = DataLoader(self.dataset, batch_sampler=[list(map(int, b)) for b in index_batches],
                            num_workers=self.num_workers)
        yield from loader


def as_feeder(inputs: np.ndarray | FeatureFeeder | ImageFeeder) -> FeatureFeeder | ImageFeeder:
    """Wrap a feature matrix in a :class:`FeatureFeeder`; pass feeders through."""
    if isinstance(inputs, (FeatureFeeder, ImageFeeder)):
        return inputs
    return FeatureFeeder(np.asarray(inputs))
