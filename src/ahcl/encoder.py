"""Query encoding of a trained run: images → backbone → hash head → ``sign(u)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ahcl.errors import RunError
from ahcl.index.packing import pack_codes
from ahcl.methods.feeders import FeatureFeeder, ImageFeeder
from ahcl.models.backbones import Backbone, create_backbone
from ahcl.models.features import extract_features
from ahcl.models.heads import HashNet


def build_backbone(config: dict[str, Any]) -> Backbone:
    """The backbone a config names (seeded when not pretrained)."""
    return create_backbone(config["backbone"], pretrained=bool(config["pretrained"]),
                           seed=int(config["seed"]))


class Encoder:
    """Turns image paths into codes with a trained network.

    Args:
        net: the trained :class:`HashNet` (with its backbone in finetune mode).
        backbone: the frozen backbone (frozen mode) or ``None``.
        feature_cache: feature cache folder for frozen mode.
        batch_size: images per forward pass.
    """

    def __init__(self, net: HashNet, backbone: Any | None, feature_cache: str | None = None,
                 batch_size: int = 32) -> None:
        self.net = net.eval()
        self.backbone = backbone
        self.feature_cache = feature_cache
        self.batch_size = batch_size

    @classmethod
    def from_state(cls, blob: dict[str, Any], config: dict[str, Any], n_bits: int,
                   n_classes: int, source: str | Path = "model.pt") -> "Encoder":
        """Rebuild a run's network from its saved state (``model.pt``, already loaded safely).

        Args:
            blob: ``{"net": state_dict}`` and, for a random frozen backbone, ``"backbone"``.
            config: the run's resolved config.
            n_bits: code length.
            n_classes: K.
            source: where ``blob`` came from (for error messages).
        """
        finetune = config["mode"] == "finetune"
        # Finetuned weights live in blob["net"]; a random frozen backbone in blob["backbone"].
        need_imagenet = bool(config["pretrained"]) and not finetune and "backbone" not in blob
        backbone = build_backbone({**config, "pretrained": need_imagenet})
        if "backbone" in blob:
            backbone.load_state_dict(blob["backbone"])
        net = HashNet(backbone.feature_dim, n_bits, n_classes, int(config["hidden"]),
                      backbone if finetune else None, float(config.get("dropout", 0.0)))
        try:
            net.load_state_dict(blob["net"])
        except (RuntimeError, KeyError) as exc:
            raise RunError(f"{source} does not match the run's config: "
                           f"{str(exc).splitlines()[0]}", path=source) from None
        return cls(net, None if finetune else backbone.eval(), config.get("feature_cache"),
                   int(config.get("batch_size_features", 32)))

    @torch.inference_mode()
    def encode_u(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Network outputs ``u``: float32 (len(paths), n_bits)."""
        paths = [str(p) for p in paths]
        rows = np.arange(len(paths))
        batches = [rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        if self.backbone is not None:
            feats = extract_features(paths, self.backbone, cache_dir=self.feature_cache,
                                     batch_size=self.batch_size)
            feeder: FeatureFeeder | ImageFeeder = FeatureFeeder(feats)
        else:
            feeder = ImageFeeder(paths, self.net.backbone.transform)
        out = [self.net(x)[0].numpy() for x in feeder.batches(batches)]
        n_bits = self.net.classifier.in_features
        return np.concatenate(out) if out else np.zeros((0, n_bits), np.float32)

    def encode(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Codes ``sign(u)`` (sign(0) = +1), packed uint8 (len(paths), n_bits/8)."""
        return pack_codes(self.encode_u(paths))

    @torch.inference_mode()
    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        """Codes of in-memory RGB PIL images (uploads; the feature cache is not used).

        Returns:
            packed uint8 (len(images), n_bits/8).
        """
        backbone = self.backbone if self.backbone is not None else self.net.backbone
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([backbone.transform(img.convert("RGB"))
                                 for img in images[start:start + self.batch_size]])
            feats = backbone.forward_features(batch) if self.backbone is not None else batch
            out.append(self.net.forward_head(feats)[0].numpy() if self.backbone is not None
                       else self.net(batch)[0].numpy())
        n_bits = self.net.classifier.in_features
        return pack_codes(np.concatenate(out) if out else np.zeros((0, n_bits), np.float32))
