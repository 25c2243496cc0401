"""The classifier baseline: predict a class, return that class's fixed code.

On single-label protocols a retrieval system that just classifies is strong: every item of the
predicted class sits at Hamming distance 0, every other class at about ``c/2``. The issue asks
for it beside the hashing methods in every table so their gains are read against it.

Construction (documented choice): an MLP ``features → [Linear(d, hidden) → ReLU] → Linear(·, K)``
trained with cross entropy; class ``k`` gets the fixed code ``centers[k]`` of
:func:`~ahcl.methods.losses.class_centers` (Hadamard rows when ``c`` is a power of 2, pairwise
distance ``c/2``; seeded random codes otherwise), and an item's code is the code of its
*predicted* class. Database codes are predictions too (a forward pass, like the symmetric
methods; on the training items these are almost always the true labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ahcl.methods.base import MethodSpec, lr_dropout_grid
from ahcl.methods.losses import class_centers
from ahcl.methods.symmetric import DeepParams, MiniBatchMethod
from ahcl.models.heads import mlp_head


class ClassifierNet(nn.Module):
    """(optional backbone) → [Linear(d, hidden) → ReLU] → Linear(·, K): class logits."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 0,
                 backbone: nn.Module | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = mlp_head(in_dim, n_classes, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features (B, d) — or images (B, 3, H, W) with a backbone — → logits float (B, K)."""
        feats = x if self.backbone is None else self.backbone.forward_features(x)
        return self.head(feats)


@dataclass
class ClassifierParams(DeepParams):
    """Classifier baseline: the shared mini-batch parameters (``hidden`` 0 = linear)."""

    hidden: int = 0


class ClassifierCodes(MiniBatchMethod):
    """Softmax classifier on the features; code = the fixed code of the predicted class.

    Loss: ``L = mean_i CE(f(x_i), y_i)``. Fitted ``centers_`` int8 (K, c): the class codes.
    """

    spec = MethodSpec("classifier", "classifier", grid=lr_dropout_grid("hidden", (0, 512)),
                      budget={"epochs": 20})
    Params = ClassifierParams

    def build_net(self, in_dim: int, n_classes: int, backbone: nn.Module | None) -> nn.Module:
        p = self.params
        return ClassifierNet(in_dim, n_classes, p.hidden, backbone, p.dropout)

    def prepare(self, labels: np.ndarray, n_classes: int) -> None:
        self.centers_ = class_centers(n_classes, self.params.n_bits, self.params.seed)

    def loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        return F.cross_entropy(net(x), y)

    def real_codes(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        predicted = net(x).argmax(1).cpu().numpy()
        return torch.from_numpy(self.centers_[predicted].astype(np.float32))

    def predict(self, inputs: Any) -> np.ndarray:
        """Predicted class ids: int64 (n,)."""
        codes = self.encode_real(inputs)
        # The codes are distinct rows of centers_: map each back to its class.
        match = codes @ self.centers_.T.astype(np.float32)
        return match.argmax(1).astype(np.int64)
