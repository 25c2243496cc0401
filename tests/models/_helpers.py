"""Helpers of the feature tests: a counter of computed images and the no-cache reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ahcl.models.backbones import Backbone
from ahcl.models.feature_cache import KEY_SIZE
from ahcl.models.inference import InferenceBackbone

N_IMAGES = 8
TINY_RECORD = KEY_SIZE + 4 * 64 + 4


class Counting:
    """Counts the images the inference forms of ``backbone`` compute features of.

    Extraction runs a converted copy (:class:`InferenceBackbone`), never ``backbone`` itself, so
    this wraps the copies' ``features`` and recognises those of ``backbone`` by their cache key.
    """

    def __init__(self, backbone: Backbone, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        inner = InferenceBackbone.features

        def counted(model: InferenceBackbone, x: torch.Tensor) -> np.ndarray:
            if model.cache_key == backbone.feature_key(model.form):
                self.n += len(x)
            return inner(model, x)

        monkeypatch.setattr(InferenceBackbone, "features", counted)


def direct_features(backbone: Backbone, paths: list[Path]) -> np.ndarray:
    """Reference: one forward pass over all images, no cache."""
    x = torch.stack([backbone.transform(Image.open(p).convert("RGB")) for p in paths])
    with torch.inference_mode():
        return backbone.eval().forward_features(x).numpy()


def close(a: np.ndarray, b: np.ndarray) -> None:
    # Recomputed rows may come from a different batch composition: last-bit differences only.
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
