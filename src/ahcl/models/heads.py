"""The hash network: (optional backbone) → hash layer → tanh = ``u``; classifier on ``u``."""

from __future__ import annotations

import torch
from torch import nn


def mlp_head(in_dim: int, out_dim: int, hidden: int = 0, dropout: float = 0.0) -> nn.Sequential:
    """[Dropout] → [Linear(in_dim, hidden) → ReLU] → Linear(·, out_dim), the head every deep
    method puts on backbone features (layer indices, hence state-dict keys, depend on the options)."""
    layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
    if hidden:
        layers += [nn.Linear(in_dim, hidden), nn.ReLU()]
    layers.append(nn.Linear(hidden or in_dim, out_dim))
    return nn.Sequential(*layers)


class HashNet(nn.Module):
    """Backbone features → [Linear(d, hidden) → ReLU] → Linear(·, n_bits) → tanh; Linear(n_bits, K).

    In frozen mode ``backbone`` is ``None`` and inputs are cached backbone features ``(B, d)``;
    in finetune mode ``backbone`` is a module with ``forward_features`` and inputs are images.

    Args:
        in_dim: feature dimension ``d`` of the backbone.
        n_bits: code length ``c``.
        n_classes: number of classes ``K`` of the classifier on ``u``.
        hidden: width of the optional MLP layer before the hash layer (0: none).
        dropout: dropout on the features entering the head (training only; 0: none).
        backbone: trainable backbone for finetune mode.
    """

    def __init__(self, in_dim: int, n_bits: int, n_classes: int, hidden: int = 0,
                 backbone: nn.Module | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.hash = mlp_head(in_dim, n_bits, hidden, dropout)
        self.classifier = nn.Linear(n_bits, n_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) → features (B, d) in finetune mode; identity in frozen mode."""
        return x if self.backbone is None else self.backbone.forward_features(x)

    def forward_head(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, d) → (``u`` float (B, n_bits) in (−1, 1), class logits (B, K))."""
        u = torch.tanh(self.hash(features))
        return u, self.classifier(u)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_head(self.forward_features(x))
