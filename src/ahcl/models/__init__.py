"""Backbones (torchvision CNNs by name, ``tiny_cnn``), their inference form for encoding
(:mod:`~ahcl.models.inference`), the hash head, the on-disk feature cache
(:mod:`~ahcl.models.feature_cache`) and feature extraction through it
(:mod:`~ahcl.models.features`)."""

from ahcl.models.backbones import (
    Backbone,
    UnknownBackboneError,
    WeightsUnavailableError,
    create_backbone,
    form_tag,
    list_backbones,
    register_backbone,
    weights_available,
)
from ahcl.models.feature_cache import FeatureCache, default_cache_dir
from ahcl.models.features import (
    UnreadableImagesError,
    content_key,
    extract_features,
    image_features,
)
from ahcl.models.inference import CompileUnavailableError, InferenceBackbone, inference_model

__all__ = [
    "Backbone",
    "CompileUnavailableError",
    "FeatureCache",
    "InferenceBackbone",
    "UnknownBackboneError",
    "UnreadableImagesError",
    "WeightsUnavailableError",
    "content_key",
    "create_backbone",
    "default_cache_dir",
    "extract_features",
    "form_tag",
    "image_features",
    "inference_model",
    "list_backbones",
    "register_backbone",
    "weights_available",
]
