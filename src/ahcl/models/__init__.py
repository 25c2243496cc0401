"""Backbones (torchvision CNNs by name, ``tiny_cnn``) and the on-disk feature cache."""

from ahcl.models.backbones import (
    Backbone,
    UnknownBackboneError,
    WeightsUnavailableError,
    create_backbone,
    list_backbones,
    register_backbone,
    weights_available,
)
from ahcl.models.features import (
    FeatureCache,
    UnreadableImagesError,
    content_key,
    default_cache_dir,
    extract_features,
)

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
