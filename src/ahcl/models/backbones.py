"""CNN backbones by name: torchvision classification models with their head removed, and ``tiny_cnn``.

A timm-style registry maps a name to a constructor. :func:`create_backbone` returns a
:class:`Backbone`, whose ``forward_features`` gives the penultimate representation (the input of the
last classifier layer): pooled 1280-d features for MobileNetV2 / EfficientNet-B0, 512 / 2048 for
ResNets, and for VGG / AlexNet the 4096-d output of the pretrained fully connected layers, which the
AHCL paper keeps. Any name of :func:`torchvision.models.list_models` works; :func:`list_backbones`
lists the ones we register and test.

Pretrained weights come only through torchvision's weights API, which downloads into (or reads
from) torch's hub cache, ``torch.hub.get_dir()/checkpoints``. :func:`weights_available` says offline
whether that file is present. Random initialisation is seeded (same seed, same weights) and the seed
is part of ``weights_id``, so features cached for one random model are never served for another.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlparse

import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.transforms._presets import ImageClassification

from ahcl._progress import progress_enabled
from ahcl.errors import AhclError, UnknownNameError

__all__ = [
    "Backbone",
    "UnknownBackboneError",
    "WeightsUnavailableError",
    "create_backbone",
    "form_tag",
    "list_backbones",
    "register_backbone",
    "weights_available",
]

# ImageNet statistics; the torchvision weights carry the same values in their transforms().
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NUM_IMAGENET_CLASSES = 1000
DEFAULT_WEIGHTS = "IMAGENET1K_V1"
# Version of the inference form (ahcl.models.inference): bump it whenever a change there changes
# the numbers, so features cached by the old form are recomputed rather than mixed in.
INFERENCE_FORM = 1

# The torchvision models we register (and test); AlexNet, VGG and ResNet are the backbones of the
# AHCL paper and its code, MobileNetV2 the one with offline weights here.
TORCHVISION_BACKBONES = (
    "alexnet", "vgg11", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "resnet101",
    "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "densenet121",
)

_REGISTRY: dict[str, Callable[..., "Backbone"]] = {}


class UnknownBackboneError(UnknownNameError):
    """The backbone name is neither registered nor a torchvision classification model, or it has
    no such weights (a ``KeyError``, like every unknown name).

    The messages keep their own wording (they point at torchvision's other models and at
    ``pretrained=False``), so this sets the fields itself instead of formatting
    :class:`~ahcl.errors.UnknownNameError`'s message.

    Attributes:
        kind: what was looked up: ``"backbone"``, ``"weights"`` (of ``backbone``),
            ``"backbone weights"`` (a model without torchvision weights) or ``"classifier layer"``.
        name: the name given.
        choices: the accepted names (empty where there are none).
    """

    def __init__(self, message: str, *, kind: str, name: Any, choices: Iterable[Any] = (),
                 **fields: Any) -> None:
        AhclError.__init__(self, message, kind=kind, name=name, choices=list(choices), **fields)


class WeightsUnavailableError(AhclError):
    """Pretrained weights are not in torch's hub cache and cannot be downloaded or read.

    Attributes:
        name: the backbone.
        weights: the torchvision weights name (``"IMAGENET1K_V1"``).
        path: where the weights file was looked for.
        reason: the type of the underlying exception (``"URLError"``, ``"UnpicklingError"``).
    """


class Backbone(nn.Module):
    """A feature extractor: images ``float (B, 3, H, W)`` → features ``float (B, feature_dim)``.

    Attributes:
        name: the registry name, e.g. ``"mobilenet_v2"``.
        feature_dim: length of one feature vector.
        weights_id: ``"IMAGENET1K_V1"``-style torchvision weights name, or ``"random-seed<seed>"``
            for a seeded random initialisation.
        transform: PIL RGB image → normalised ``float32 (3, H, W)`` tensor expected by the model.
        transform_id: a stable description of ``transform`` (part of feature-cache keys).
        body: the wrapped network whose output, flattened, is the feature vector.
    """

    def __init__(self, body: nn.Module, *, name: str, feature_dim: int, weights_id: str,
                 transform: Callable[[Image.Image], torch.Tensor], transform_id: str) -> None:
        super().__init__()
        self.body = body
        self.name = name
        self.feature_dim = int(feature_dim)
        self.weights_id = weights_id
        self.transform = transform
        self.transform_id = transform_id

    @property
    def cache_key(self) -> str:
        """The feature-cache key of this model's features as :func:`~ahcl.models.features.
        extract_features` computes them by default (inference form on the CPU in float32):
        ``name|weights_id|transform_id|feature_dim|form``, see :meth:`feature_key`."""
        return self.feature_key(form_tag("cpu", "fp32"))

    def feature_key(self, form: str) -> str:
        """``name|weights_id|transform_id|feature_dim|form``: what features computed by this model
        depend on, ``form`` (:func:`form_tag`) saying how the network was run."""
        return f"{self.name}|{self.weights_id}|{self.transform_id}|{self.feature_dim}|{form}"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features of a batch.

        Args:
            x: ``float (B, 3, H, W)`` images normalised by :attr:`transform`.

        Returns:
            ``float (B, feature_dim)``.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        out = self.body(x)
        if isinstance(out, tuple):  # GoogLeNet / Inception in train mode also return aux logits
            out = out[0]
        return out.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward_features`."""
        return self.forward_features(x)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, feature_dim={self.feature_dim}, weights_id={self.weights_id!r}"


def form_tag(device_type: str, precision: str, compiled: bool = False) -> str:
    """How features were computed, for cache keys: ``fast<INFERENCE_FORM>-<device>-<precision>``
    and ``-compiled`` under ``torch.compile``, e.g. ``"fast1-cpu-fp32"``.

    Each of these changes the numbers (BN folding and channels_last by ~1e-6, CUDA's TF32
    convolutions and bf16/fp16 autocast by far more, inductor's fused kernels in the last bits),
    so features computed one way are never served for another. Whether BatchNorm could be folded
    is not in the tag: it is decided by the architecture, which the name and weights already fix.
    """
    return f"fast{INFERENCE_FORM}-{device_type}-{precision}" + ("-compiled" if compiled else "")


def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator registering ``fn(pretrained: bool, weights: str | None, seed: int) -> Backbone``."""
    def decorate(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn
    return decorate


def list_backbones() -> list[str]:
    """Registered backbone names, sorted (any torchvision classification name also works)."""
    return sorted(_REGISTRY)


def create_backbone(name: str, pretrained: bool = True, *, weights: str | None = None,
                    seed: int = 0) -> Backbone:
    """Build a backbone by name.

    Args:
        name: a registered name (:func:`list_backbones`) or any torchvision classification model.
        pretrained: load ImageNet weights through torchvision (from torch's hub cache, downloading
            when missing); ``False`` gives a random initialisation seeded by ``seed``. ``tiny_cnn``
            has no pretrained weights and is always seeded-random.
        weights: a torchvision weights name such as ``"IMAGENET1K_V2"``; default
            ``"IMAGENET1K_V1"`` where the model has it, else torchvision's ``DEFAULT``. Only used
            when ``pretrained``.
        seed: seed of the random initialisation when not ``pretrained``.

    Raises:
        UnknownBackboneError: ``name`` is unknown.
        WeightsUnavailableError: the weights are neither cached nor downloadable.
    """
    fn = _REGISTRY.get(name)
    if fn is not None:
        return fn(pretrained=pretrained, weights=weights, seed=seed)
    if name in torchvision.models.list_models(module=torchvision.models):
        return _torchvision_backbone(name, pretrained=pretrained, weights=weights, seed=seed)
    choices = list_backbones()
    raise UnknownBackboneError(
        f"unknown backbone {name!r}; choose one of {', '.join(choices)} "
        "or another torchvision classification model", kind="backbone", name=name, choices=choices)


def weights_available(name: str, weights: str | None = None) -> bool:
    """Whether the ImageNet weights file of ``name`` is already in torch's hub cache (no network).

    ``weights`` as in :func:`create_backbone` (default ``IMAGENET1K_V1`` where it exists).

    ``tiny_cnn`` (and any model without torchvision weights) gives ``False``.
    """
    try:
        enum = _weights_enum(name, weights)
    except (UnknownBackboneError, ValueError):
        return False
    return _weights_file(enum).is_file()


def _weights_enum(name: str, weights: str | None) -> torchvision.models.WeightsEnum:
    try:
        enum_cls = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise UnknownBackboneError(f"no torchvision weights for backbone {name!r}; "
                                   "use pretrained=False", kind="backbone weights",
                                   name=name) from None
    if weights is None:
        # IMAGENET1K_V1 (the original recipe, resize 256 / crop 224) where it exists: it is what the
        # paper-era baselines used and the one MobileNetV2 file available offline here.
        return enum_cls.__members__.get(DEFAULT_WEIGHTS, enum_cls.DEFAULT)
    try:
        return enum_cls[weights]
    except KeyError:
        known = [w.name for w in enum_cls]
        raise UnknownBackboneError(f"backbone {name!r} has no weights {weights!r}; "
                                   f"choose one of {', '.join(known)}", kind="weights",
                                   name=weights, choices=known, backbone=name) from None


def _weights_file(enum: torchvision.models.WeightsEnum) -> Path:
    filename = os.path.basename(urlparse(enum.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _classification_transform(transform: ImageClassification) -> tuple[ImageClassification, str]:
    """The torchvision preset and a stable id spelling out every parameter that changes its output."""
    mean = ",".join(f"{v:g}" for v in transform.mean)
    std = ",".join(f"{v:g}" for v in transform.std)
    tid = (f"resize{transform.resize_size[0]}-{transform.interpolation.value}"
           f"-antialias{transform.antialias}-crop{transform.crop_size[0]}-mean{mean}-std{std}")
    return transform, tid


def _build_seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Run a constructor that initialises from torch's global CPU generator, seeded, then restore it.

    torchvision models draw their initial weights from the global generator and take no generator
    argument; forking it keeps the caller's random stream untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return build()


def _strip_head(model: nn.Module) -> int:
    """Replace the last ImageNet classifier layer by ``nn.Identity``; return its input width.

    The head is the last ``nn.Linear`` with 1000 outputs, or (SqueezeNet) the last 1000-channel
    ``nn.Conv2d``. Whatever follows it in the model (flatten, pooling) stays.
    """
    head_name, head = None, None
    for kind, width in ((nn.Linear, "out_features"), (nn.Conv2d, "out_channels")):
        for mod_name, mod in model.named_modules():
            if isinstance(mod, kind) and getattr(mod, width) == NUM_IMAGENET_CLASSES:
                head_name, head = mod_name, mod
        if head is not None:
            break
    if head is None:
        raise UnknownBackboneError(f"cannot find the classifier layer of {type(model).__name__}",
                                   kind="classifier layer", name=type(model).__name__)
    parent_name, _, attr = head_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Identity())
    return head.in_features if isinstance(head, nn.Linear) else head.in_channels


def _load_pretrained(name: str, enum: torchvision.models.WeightsEnum) -> nn.Module:
    path = _weights_file(enum)
    cached = path.is_file()
    fields = {"name": name, "weights": enum.name, "path": str(path)}
    try:
        # torch.hub announces a download on stdout; keep stdout for results.
        redirect = contextlib.nullcontext() if cached else contextlib.redirect_stdout(sys.stderr)
        with redirect:
            return torchvision.models.get_model(name, weights=enum, progress=progress_enabled())
    except Exception as exc:  # noqa: BLE001 - network, hash and unpickling errors all mean the same
        if cached:
            raise WeightsUnavailableError(
                f"cannot load {name} weights from {path} ({type(exc).__name__}); delete the file "
                "and copy a good one there, or use pretrained=False", reason=type(exc).__name__,
                **fields) from exc
        raise WeightsUnavailableError(
            f"{name} weights {enum.name} are not in {path.parent} and cannot be downloaded "
            f"({type(exc).__name__}); copy {path.name} there or use pretrained=False",
            reason=type(exc).__name__, **fields) from exc


def _torchvision_backbone(name: str, *, pretrained: bool, weights: str | None,
                          seed: int) -> Backbone:
    enum = _weights_enum(name, weights if pretrained else None)
    if pretrained:
        model = _load_pretrained(name, enum)
        weights_id = enum.name
    else:
        model = _build_seeded(lambda: torchvision.models.get_model(name, weights=None), seed)
        weights_id = f"random-seed{seed}"
    feature_dim = _strip_head(model)
    transform, transform_id = _classification_transform(enum.transforms())
    return Backbone(model, name=name, feature_dim=feature_dim, weights_id=weights_id,
                    transform=transform, transform_id=transform_id)


def _register_torchvision(name: str) -> None:
    @register_backbone(name)
    def build(pretrained: bool = True, weights: str | None = None, seed: int = 0) -> Backbone:
        return _torchvision_backbone(name, pretrained=pretrained, weights=weights, seed=seed)


for _name in TORCHVISION_BACKBONES:
    _register_torchvision(_name)


TINY_INPUT_SIZE = 64
TINY_WIDTHS = (16, 32, 64)


@register_backbone("tiny_cnn")
def tiny_cnn(pretrained: bool = True, weights: str | None = None, seed: int = 0) -> Backbone:
    """Three stride-2 3×3 conv + ReLU layers and global average pooling: 64 px in, 64-d out.

    For tests and demos on CPU. It has no pretrained weights: ``pretrained`` and ``weights`` are
    ignored and the He-normal initialisation is drawn from a ``torch.Generator`` seeded by ``seed``.
    """
    del pretrained, weights
    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    width_in = 3
    for width in TINY_WIDTHS:
        # skip_init: nn.Conv2d would otherwise draw its default init from the global generator.
        conv = nn.utils.skip_init(nn.Conv2d, width_in, width, kernel_size=3, stride=2, padding=1)
        with torch.no_grad():
            conv.weight.normal_(0.0, (2.0 / (width_in * 9)) ** 0.5, generator=generator)
            conv.bias.zero_()
        layers += [conv, nn.ReLU(inplace=True)]
        width_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    transform, transform_id = _classification_transform(
        ImageClassification(crop_size=TINY_INPUT_SIZE, resize_size=TINY_INPUT_SIZE,
                            mean=IMAGENET_MEAN, std=IMAGENET_STD))
    return Backbone(nn.Sequential(*layers), name="tiny_cnn", feature_dim=TINY_WIDTHS[-1],
                    weights_id=f"random-seed{seed}", transform=transform,
                    transform_id=transform_id)
