"""Shallow hashing on frozen features: LSH, ITQ (unsupervised) and SDH (supervised).

They take the same frozen backbone features as the deep methods (float32 (n, d)); a backbone
(finetune mode) is refused with a clear error. Every random draw comes from a
``np.random.default_rng`` seeded by ``seed``; linear algebra runs in float64.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from ahcl._checks import check_float, check_int, check_n_bits, check_seed, store_floats
from ahcl.errors import AhclError
from ahcl.index.packing import pack_codes
from ahcl.methods.base import FitInputs, HashingMethod, MethodSpec
from ahcl.methods.feeders import FeatureFeeder


def _features(inputs: Any, name: str) -> np.ndarray:
    if isinstance(inputs, FeatureFeeder):
        return inputs.features.astype(np.float64)
    if isinstance(inputs, np.ndarray) and inputs.ndim == 2:
        return inputs.astype(np.float64)
    raise AhclError(f"{name} works on frozen features only: use --mode frozen")


@dataclass
class ShallowParams:
    """Shared by the shallow methods: ``n_bits`` (multiple of 8) and ``seed``."""

    n_bits: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        check_n_bits(self.n_bits)
        check_seed(self.seed)
        # The subclasses' own settings: counts are integers >= 0, weights finite numbers >= 0.
        for f in dataclasses.fields(self):
            if f.name in ("n_bits", "seed"):
                continue
            if f.type in ("int", int):
                check_int(f.name, getattr(self, f.name), 0)
            elif f.type in ("float", float):
                check_float(f.name, getattr(self, f.name), lo=0)
        store_floats(self)


class ShallowMethod(HashingMethod):
    """Base: ``fit`` learns a projection, ``encode`` = sign(projection), sign(0) = +1.

    Fitted attributes: ``mean_`` float64 (d,), ``db_codes_`` packed uint8 (n, c/8),
    ``timings_`` (``train_s``, ``db_codes_s``). A subclass writes :meth:`_fit_projection` and
    :meth:`_project`.
    """

    Params: ClassVar[type[ShallowParams]] = ShallowParams


    def _fit(self, data: FitInputs, *, checkpoint: Any,
             on_iteration: Callable[[dict[str, Any]], None] | None) -> None:
        """Learn from float (n, d) features (and labels, for supervised methods); ``checkpoint``
        and ``on_iteration`` are accepted for interface compatibility and unused."""
        del checkpoint, on_iteration
        x = _features(data.inputs, self.name)  # the caller's dtype, in float64
        tic = time.perf_counter()
        self.mean_ = x.mean(0)
        self._fit_projection(x - self.mean_, data.labels, data.n_classes)
        train_s = time.perf_counter() - tic
        tic = time.perf_counter()
        self.db_codes_ = self.encode(x)
        self.timings_ = {"train_s": train_s, "db_codes_s": time.perf_counter() - tic}

    def encode(self, inputs: Any) -> np.ndarray:
        """Packed uint8 (n, n_bits/8) codes of float (n, d) features."""
        x = _features(inputs, self.name)
        return pack_codes(self._project(x - self.mean_))

    def _fit_projection(self, x: np.ndarray, labels: np.ndarray, n_classes: int) -> None:
        raise NotImplementedError

    def _project(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class LSH(ShallowMethod):
    """Locality-sensitive hashing by random hyperplanes (Charikar, STOC 2002).

    ``b = sign((x − μ) W)`` with ``W`` float64 (d, c) i.i.d. N(0, 1), seeded. The features are
    centred on the training mean (``μ``) so each bit splits the data roughly in half.
    """

    spec = MethodSpec("lsh", "shallow")

    def _fit_projection(self, x: np.ndarray, labels: np.ndarray, n_classes: int) -> None:
        rng = np.random.default_rng([self.params.seed, 0x15A])
        self.W_ = rng.standard_normal((x.shape[1], self.params.n_bits))

    def _project(self, x: np.ndarray) -> np.ndarray:
        return x @ self.W_


@dataclass
class ITQParams(ShallowParams):
    """ITQ: ``n_iter`` alternations of the rotation and the codes (paper: 50)."""

    n_iter: int = 50


class ITQ(ShallowMethod):
    """Iterative Quantization (Gong & Lazebnik, CVPR 2011).

    PCA to ``c`` dimensions, ``V = (x − μ) P``, then an orthogonal rotation ``R`` minimising the
    quantisation loss ``‖B − V R‖²_F`` by alternating ``B = sign(V R)`` and ``R = Ŝ Sᵀ`` from
    the SVD ``Bᵀ V = S Ω Ŝᵀ``, starting from a seeded random rotation. Needs ``c <= d``.
    """

    spec = MethodSpec("itq", "shallow", budget={"n_iter": 50})
    Params = ITQParams

    def _fit_projection(self, x: np.ndarray, labels: np.ndarray, n_classes: int) -> None:
        c = self.params.n_bits
        if c > min(x.shape):
            raise AhclError(f"ITQ needs n_bits <= min(n, feature dim) = {min(x.shape)}, got {c}")
        # Principal directions from the SVD of the centred data (sign-fixed for determinism).
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        P = vt[:c].T
        P *= np.where(P[np.abs(P).argmax(0), np.arange(c)] < 0, -1.0, 1.0)
        V = x @ P
        rng = np.random.default_rng([self.params.seed, 0x177])
        R, _ = np.linalg.qr(rng.standard_normal((c, c)))
        for _ in range(self.params.n_iter):
            B = np.where(V @ R >= 0, 1.0, -1.0)
            S, _, Sh_t = np.linalg.svd(B.T @ V)
            R = (S @ Sh_t).T
        self.P_, self.R_ = P, R

    def _project(self, x: np.ndarray) -> np.ndarray:
        return x @ self.P_ @ self.R_


@dataclass
class SDHParams(ShallowParams):
    """SDH: anchors for the RBF map, ``lam`` (λ, ridge on W), ``nu`` (ν, fit of B to F(x)),
    outer iterations ``n_iter`` and code-step sweeps ``sweeps``. Paper: 1000 anchors, λ = 1,
    ν = 1e-5, 5 outer iterations."""

    n_anchors: int = 1000
    lam: float = 1.0
    nu: float = 1e-5
    n_iter: int = 5
    sweeps: int = 3


class SDH(ShallowMethod):
    """Supervised Discrete Hashing (Shen, Shen, Liu & Shen, CVPR 2015).

    RBF features ``φ(x)_a = exp(−‖x − x_a‖² / 2σ²)`` on ``n_anchors`` seeded training anchors
    (σ = mean anchor distance), centred; ``F(x) = φ(x) P``; with one-hot labels ``Y`` (n, K)::

        min_{B, W, P}  ‖Y − B W‖² + λ ‖W‖² + ν ‖B − φ(X) P‖²,   B ∈ {−1, +1}^{n×c}

    alternating ``W = (BᵀB + λI)⁻¹ BᵀY``, ``P = (φᵀφ + εI)⁻¹ φᵀB`` and the discrete cyclic
    coordinate step for each bit ``k``: ``B[:, k] = sign(Q[:, k] − B_{≠k} W_{≠k} w_kᵀ)`` with
    ``Q = Y Wᵀ + ν φ(X) P`` (the exact minimiser of that column). Codes: ``sign(φ(x) P)``.
    """

    spec = MethodSpec("sdh", "shallow", budget={"n_anchors": 1000, "n_iter": 5},
                      grid=tuple({"nu": nu, "lam": lam} for nu in (1e-5, 1e-2)
                                 for lam in (1.0, 0.01)))
    Params = SDHParams

    def _rbf(self, x: np.ndarray) -> np.ndarray:
        d2 = ((x ** 2).sum(1)[:, None] - 2 * x @ self.anchors_.T
              + (self.anchors_ ** 2).sum(1)[None, :])
        return np.exp(-np.maximum(d2, 0) / (2 * self.sigma_ ** 2))

    def _fit_projection(self, x: np.ndarray, labels: np.ndarray, n_classes: int) -> None:
        p = self.params
        n, c = len(x), p.n_bits
        rng = np.random.default_rng([p.seed, 0x5D4])
        self.anchors_ = x[np.sort(rng.choice(n, min(p.n_anchors, n), replace=False))]
        d2 = ((x ** 2).sum(1)[:, None] - 2 * x @ self.anchors_.T
              + (self.anchors_ ** 2).sum(1)[None, :])
        self.sigma_ = float(np.sqrt(np.maximum(d2, 0)).mean()) or 1.0
        phi = self._rbf(x)
        self.phi_mean_ = phi.mean(0)
        phi -= self.phi_mean_
        Y = np.eye(n_classes)[labels]
        B = np.where(rng.random((n, c)) < 0.5, -1.0, 1.0)
        gram_phi = phi.T @ phi + 1e-6 * np.eye(phi.shape[1])
        for _ in range(p.n_iter):
            P = np.linalg.solve(gram_phi, phi.T @ B)
            W = np.linalg.solve(B.T @ B + p.lam * np.eye(c), B.T @ Y)
            Q = Y @ W.T + p.nu * (phi @ P)
            for _ in range(p.sweeps):
                for k in range(c):
                    rest = np.arange(c) != k
                    col = Q[:, k] - B[:, rest] @ (W[rest] @ W[k])
                    B[:, k] = np.where(col >= 0, 1.0, -1.0)
        self.P_ = np.linalg.solve(gram_phi, phi.T @ B)

    def _project(self, x: np.ndarray) -> np.ndarray:
        return (self._rbf(x) - self.phi_mean_) @ self.P_

