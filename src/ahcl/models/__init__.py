"""Backbones (torchvision CNNs by name, ``tiny_cnn``), the hash head, the on-disk feature cache
(:mod:`~ahcl.models.feature_cache`) and feature extraction through it
(:mod:`~ahcl.models.features`)."""

from ahcl.models.backbones import (
    Backbone,
    UnknownBackboneError,
    WeightsUnavailableError,
    create_backbone,
    list_backbones,
    register_backbone,
    weights_available,
)
from ahcl.models.feature_cache import FeatureCache, default_cache_dir
from ahcl.models.features import UnreadableImagesError, content_key, extract_features

__all__ = [
    "Backbone",
    "FeatureCache",
    "UnknownBackboneError",
    "UnreadableImagesError",
    "WeightsUnavailableError",
    "content_key",
    "create_backbone",
    "default_cache_dir",
    "extract_features",
    "list_backbones",
    "register_backbone",
    "weights_available",
]
