"""Query encoding of a trained run: images → backbone → hash head → ``sign(u)``, and, for a run
with instance bits, the same features → instance projection → instance code (one forward pass;
the item's code is the semantic code followed by the instance code).

The backbone runs in its inference form (:func:`~ahcl.models.inference.inference_model`: BN
folded, channels_last, on the placement, under its autocast): the run's frozen backbone with the
feature cache in frozen mode, the run's finetuned one without it in finetune mode. The hash head
follows on the same device; ``u`` comes back as float32 and its signs are taken from that
float32 copy whatever the precision (``sign(0) = +1``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ahcl.device import Placement
from ahcl.errors import RunError
from ahcl.index.packing import pack_codes
from ahcl.methods.instance import InstanceProjection
from ahcl.models.backbones import Backbone, create_backbone
from ahcl.models.features import (extract_features, image_features, input_features,
                                  pil_features, pil_inputs)
from ahcl.models.heads import HashNet
from ahcl.models.inference import CPU, InferenceBackbone, inference_model


def build_backbone(config: dict[str, Any]) -> Backbone:
    """The backbone a config names (seeded when not pretrained)."""
    return create_backbone(config["backbone"], pretrained=bool(config["pretrained"]),
                           seed=int(config["seed"]))


class Encoder:
    """Turns image paths (or in-memory images) into codes with a trained network.

    Args:
        net: the trained :class:`HashNet` (with its backbone in finetune mode). It is put in eval
            mode and otherwise left as it is: the encoder runs copies.
        backbone: the frozen backbone (frozen mode) or ``None``.
        feature_cache: feature cache folder for frozen mode.
        batch_size: images per DataLoader batch (and per head pass).
        placement: device and precision; default the CPU in float32.
        num_workers: image-decoding worker processes (``None``: ``default_workers()``).
        compile: ``torch.compile`` the backbone's inference form.
        instance: the run's instance projection (``None``: semantic codes only).

    Raises:
        CompileUnavailableError: ``compile`` where torch.compile cannot work.
    """

    def __init__(self, net: HashNet, backbone: Any | None, feature_cache: str | None = None,
                 batch_size: int = 32, *, placement: Placement | None = None,
                 num_workers: int | None = None, compile: bool = False,
                 instance: InstanceProjection | None = None) -> None:
        self.net = net.eval()
        self.instance = instance
        self.backbone = backbone
        self.feature_cache = feature_cache
        self.batch_size = batch_size
        self.placement = CPU if placement is None else placement
        self.num_workers = num_workers
        source = backbone if backbone is not None else net.backbone
        self._features: InferenceBackbone = inference_model(source, self.placement,
                                                            compile=compile)
        self._head = _head_copy(net).to(self.placement.device)

    @classmethod
    def from_state(cls, blob: dict[str, Any], config: dict[str, Any], n_bits: int,
                   n_classes: int, source: str | Path = "model.pt", *,
                   placement: Placement | None = None, num_workers: int | None = None,
                   compile: bool = False,
                   instance: InstanceProjection | None = None) -> "Encoder":
        """Rebuild a run's network from its saved state (``model.pt``, already loaded safely).

        Args:
            blob: ``{"net": state_dict}`` and, for a random frozen backbone, ``"backbone"``.
            config: the run's resolved config.
            n_bits: bits per item (semantic plus ``instance``'s).
            n_classes: K.
            source: where ``blob`` came from (for error messages).
            placement: device and precision of encoding; default the CPU in float32.
            num_workers: image-decoding worker processes (``None``: ``default_workers()``).
            compile: ``torch.compile`` the backbone's inference form.
            instance: the run's instance projection, if it has one.
        """
        semantic_bits = n_bits - (instance.n_bits if instance is not None else 0)
        finetune = config["mode"] == "finetune"
        # Finetuned weights live in blob["net"]; a random frozen backbone in blob["backbone"].
        need_imagenet = bool(config["pretrained"]) and not finetune and "backbone" not in blob
        backbone = build_backbone({**config, "pretrained": need_imagenet})
        if "backbone" in blob:
            backbone.load_state_dict(blob["backbone"])
        net = HashNet(backbone.feature_dim, semantic_bits, n_classes, int(config["hidden"]),
                      backbone if finetune else None, float(config.get("dropout", 0.0)))
        try:
            net.load_state_dict(blob["net"])
        except (RuntimeError, KeyError) as exc:
            raise RunError(f"{source} does not match the run's config: "
                           f"{str(exc).splitlines()[0]}", path=source) from None
        return cls(net, None if finetune else backbone.eval(), config.get("feature_cache"),
                   int(config.get("batch_size_features", 32)), placement=placement,
                   num_workers=num_workers, compile=compile, instance=instance)

    @property
    def semantic_bits(self) -> int:
        """Bits of the network's (semantic) code."""
        return self.net.classifier.in_features

    @property
    def n_bits(self) -> int:
        """Bits per code: semantic plus instance."""
        return self.semantic_bits + (self.instance.n_bits if self.instance is not None else 0)

    def features(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Backbone features ``float32 (len(paths), d)`` of image files.

        Raises:
            ImageReadError: a file cannot be read (finetune mode: the first one).
            UnreadableImagesError: frozen mode, some images cannot be decoded (the others are
                cached first).
        """
        paths = [str(p) for p in paths]
        if self.backbone is not None:
            return extract_features(paths, self._features, cache_dir=self.feature_cache,
                                    batch_size=self.batch_size, num_workers=self.num_workers)
        # finetuned weights are not what the backbone's weights_id says: no cache
        return image_features(paths, self._features, batch_size=self.batch_size,
                              num_workers=self.num_workers)

    def encode_u(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Network outputs ``u``: float32 (len(paths), semantic_bits)."""
        return self.u_of_features(self.features(paths))

    def encode(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Codes, packed uint8 (len(paths), n_bits/8): ``sign(u)`` (sign(0) = +1), then the
        instance code when the run has one."""
        return self.codes_of_features(self.features(paths))

    def codes_of_features(self, features: np.ndarray) -> np.ndarray:
        """Packed codes of backbone features (semantic code, then instance code)."""
        semantic = pack_codes(self.u_of_features(features))
        if self.instance is None:
            return semantic
        return np.ascontiguousarray(np.hstack([semantic, self.instance.codes(features)]))

    def instance_codes(self, paths: Sequence[str | Path] = (), *,
                       images: Sequence[Any] | None = None) -> np.ndarray:
        """The instance codes alone, packed uint8 (n, instance bits / 8), of image files or of
        in-memory PIL ``images``."""
        if self.instance is None:
            raise RunError("this run has no instance codes (trained with instance_bits 0)")
        feats = self.image_features(images) if images is not None else self.features(paths)
        return self.instance.codes(feats)

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        """Codes of in-memory PIL images (uploads; the feature cache is not used).

        Returns:
            packed uint8 (len(images), n_bits/8).
        """
        return self.codes_of_features(self.image_features(images))

    def image_features(self, images: Sequence[Any]) -> np.ndarray:
        """Backbone features ``float32 (len(images), d)`` of in-memory PIL images."""
        return pil_features(images, self._features, self.batch_size)

    def image_inputs(self, images: Sequence[Any]) -> list[torch.Tensor]:
        """The network inputs of in-memory PIL images (the backbone's transform, in this
        thread): :meth:`encode_inputs` of them equals :meth:`encode_images` of the images."""
        return pil_inputs(images, self._features)

    def encode_inputs(self, inputs: Sequence[torch.Tensor]) -> np.ndarray:
        """Codes of network inputs made by :meth:`image_inputs`: packed uint8
        ``(len(inputs), n_bits/8)``; the forward passes alone."""
        return self.codes_of_features(input_features(inputs, self._features, self.batch_size))

    def u_of_features(self, features: np.ndarray) -> np.ndarray:
        """The head on backbone features: float (n, d) → ``u`` float32 (n, semantic_bits), run on the
        placement under its autocast, in batches of ``batch_size``."""
        out = []
        with torch.inference_mode(), self.placement.autocast():
            for start in range(0, len(features), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(features[start:start + self.batch_size],
                                                          dtype=np.float32))
                u, _ = self._head.forward_head(self.placement.to_device(x))
                out.append(u.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.semantic_bits), np.float32)


def _head_copy(net: HashNet) -> HashNet:
    """An eval-mode copy of ``net`` without its backbone (the head layers only).

    The memo maps the backbone to ``None``, so deepcopy neither copies it nor touches it: the
    inference form is what runs the backbone, and the original stays where training put it.
    """
    memo: dict[int, Any] = {} if net.backbone is None else {id(net.backbone): None}
    return copy.deepcopy(net, memo).eval().requires_grad_(False)
