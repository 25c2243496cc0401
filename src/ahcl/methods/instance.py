"""Instance codes: the bits that order scenes *within* a class (issue #12).

The learned database codes of the asymmetric methods collapse to about one code per class, so
they rank a class well but carry no order inside it. Each item therefore gets a second,
instance-level code computed from its backbone features, and search ranks by the exact key
(semantic distance, instance distance, id) (:class:`ahcl.index.HammingIndex` with
``semantic_bits``).

The projection is an instance-discriminant one, learned from the database's own features:

1. every feature is L2-normalised;
2. each database image is seen in its four quarter turns (overhead scenes have no canonical
   orientation, so a 90° rotation must not change an item's code); ``S_w`` is the scatter of the
   views around each image's mean view, ``S_b`` the scatter of those means;
3. the ``b`` leading generalised eigenvectors of ``S_b v = λ (S_w + ε·tr(S_w)/d·I) v`` keep what
   tells images apart and drop what a rotation changes;
4. an ITQ rotation (Gong & Lazebnik, 2011; 50 alternating steps) spreads the variance over the
   bits before the sign is taken.

A query needs one forward pass: its single view goes through the same projection. Measured on
RSSCN7 (frozen MobileNetV2, altered copies of archive images, within the true class): a 48-bit
sign of PCA finds the source in the top 10 83% of the time, this projection 92–96%.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ahcl.index.packing import pack_codes

QUARTER_TURNS = 4  # views per database image: rotations by 0, 90, 180 and 270 degrees
RIDGE = 0.1  # ε: regularisation of the within-image scatter, relative to its mean eigenvalue
ITQ_STEPS = 50


@dataclass(frozen=True)
class InstanceProjection:
    """``codes = sign((normalise(f) - mean) @ weights)``, ``sign(0) = +1``.

    Attributes:
        mean: ``float32 (d,)`` mean of the normalised database views.
        weights: ``float32 (d, n_bits)`` projection (discriminant directions times ITQ rotation).
    """

    mean: np.ndarray
    weights: np.ndarray

    @property
    def n_bits(self) -> int:
        return int(self.weights.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.weights.shape[0])

    def project(self, features: np.ndarray) -> np.ndarray:
        """Real-valued projections ``float32 (n, n_bits)`` of backbone features ``(n, d)``."""
        x = _normalise(np.asarray(features, dtype=np.float32))
        return (x - self.mean) @ self.weights

    def codes(self, features: np.ndarray) -> np.ndarray:
        """Packed instance codes ``uint8 (n, n_bits/8)`` of backbone features ``(n, d)``."""
        return pack_codes(self.project(features))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """What :func:`numpy.savez` stores (and :meth:`from_arrays` reads back)."""
        return {"mean": self.mean, "weights": self.weights}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "InstanceProjection":
        """Rebuild from :meth:`to_arrays`' output, checking shapes and finiteness.

        Raises:
            ValueError: missing arrays, wrong shapes, or non-finite values.
        """
        mean = np.asarray(arrays["mean"], dtype=np.float32)
        weights = np.asarray(arrays["weights"], dtype=np.float32)
        if mean.ndim != 1 or weights.ndim != 2 or weights.shape[0] != mean.shape[0] \
                or weights.shape[1] % 8 or weights.shape[1] == 0:
            raise ValueError(f"instance projection of shapes {mean.shape} and {weights.shape} "
                             "(want (d,) and (d, b), b a positive multiple of 8)")
        if not (np.isfinite(mean).all() and np.isfinite(weights).all()):
            raise ValueError("instance projection holds NaN or infinite values")
        return cls(mean, weights)


def fit_instance_projection(views: Sequence[np.ndarray], n_bits: int, *, seed: int = 0,
                            ridge: float = RIDGE, itq_steps: int = ITQ_STEPS
                            ) -> InstanceProjection:
    """Learn the projection from the database's features in several views.

    Args:
        views: ``V`` arrays ``float (n, d)``: row ``i`` of each is image ``i`` in one view (the
            first is the unaltered image; :data:`QUARTER_TURNS` rotations in training).
        n_bits: instance code length, a positive multiple of 8, at most ``d``.
        seed: seed of ITQ's initial rotation.
        ridge: ε above.
        itq_steps: ITQ iterations.

    Raises:
        ValueError: no views, mismatched shapes, non-finite features, or ``n_bits`` out of range.
    """
    if not views:
        raise ValueError("need at least one view of the database features")
    xs = [_normalise(np.asarray(v, dtype=np.float64)) for v in views]
    n, d = xs[0].shape
    if any(x.shape != (n, d) for x in xs):
        raise ValueError(f"views of different shapes: {[x.shape for x in xs]}")
    if not all(np.isfinite(x).all() for x in xs):
        raise ValueError("database features hold NaN or infinite values")
    if n_bits <= 0 or n_bits % 8 or n_bits > d:
        raise ValueError(f"instance bits must be a positive multiple of 8 and at most the "
                         f"feature dimension {d}, got {n_bits}")
    centre = sum(xs) / len(xs)
    mean = centre.mean(axis=0)
    between = np.cov((centre - mean).T, bias=True) if n > 1 else np.zeros((d, d))
    within = sum(((x - centre).T @ (x - centre)) for x in xs) / (len(xs) * max(n, 1))
    scale = float(np.trace(within)) / d
    within = within + (ridge * scale if scale > 0 else 1e-6) * np.eye(d)
    directions = _leading_generalised(np.atleast_2d(between), within, n_bits)
    rotation = _itq_rotation((centre - mean) @ directions, seed, itq_steps)
    return InstanceProjection(mean.astype(np.float32),
                              (directions @ rotation).astype(np.float32))


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def _leading_generalised(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` generalised eigenvectors of ``a v = λ b v`` with the largest ``λ`` (``b``
    symmetric positive definite), through ``b``'s Cholesky factor."""
    low = np.linalg.cholesky(b)
    inv = np.linalg.inv(low)
    values, vectors = np.linalg.eigh(inv @ a @ inv.T)
    return inv.T @ vectors[:, np.argsort(values)[::-1][:k]]


def _itq_rotation(v: np.ndarray, seed: int, steps: int) -> np.ndarray:
    """ITQ: the orthogonal ``R`` minimising ``||sign(V R) - V R||`` by alternating steps."""
    b = v.shape[1]
    rotation = np.linalg.qr(np.random.default_rng(seed).standard_normal((b, b)))[0]
    for _ in range(steps):
        codes = np.where(v @ rotation >= 0, 1.0, -1.0)
        left, _, right = np.linalg.svd(codes.T @ v)
        rotation = (left @ right).T
    return rotation
