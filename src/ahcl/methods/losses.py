"""Losses of the symmetric deep-hashing baselines, as plain functions of a mini-batch.

Every loss takes ``u`` float (B, c), the network's relaxed codes in (−1, 1), and the batch's
supervision; the pairwise ones use ``s`` float (B, B) with ``s_ij = 1`` for a same-class pair and
0 otherwise, over the ordered pairs ``i ≠ j`` of the batch (the diagonal is left out: an item is
trivially similar to itself and would only add a constant pull towards ``|u| = 1``). Values are
means, so the scale does not depend on the batch size. The formulas are written out in each
docstring and checked in the tests against explicit loops.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def similarity(labels: torch.Tensor) -> torch.Tensor:
    """Pairwise same-class indicator: float (B, B), ``s_ij = 1`` iff ``labels[i] == labels[j]``."""
    return (labels[:, None] == labels[None, :]).to(torch.float32)


def _off_diagonal(b: int, device: torch.device | None = None) -> torch.Tensor:
    return ~torch.eye(b, dtype=torch.bool, device=device)


def dpsh_loss(u: torch.Tensor, s: torch.Tensor, eta: float) -> torch.Tensor:
    """DPSH (Li, Wang & Kang, IJCAI 2016): pairwise likelihood plus quantisation.

    ``Θ_ij = ½ u_iᵀu_j``;
    ``L = mean_{i≠j} [ log(1 + e^{Θ_ij}) − s_ij Θ_ij ] + η · mean_i ‖b_i − u_i‖²``
    with ``b_i = sign(u_i)`` held fixed (no gradient), sign(0) = +1.

    Args:
        u: float (B, c).
        s: float (B, B) 0/1 similarity.
        eta: η, weight of the quantisation term.

    Returns:
        scalar tensor.
    """
    theta = 0.5 * u @ u.T
    mask = _off_diagonal(len(u), u.device)
    # softplus(Θ) = log(1 + e^Θ) without overflow for large Θ.
    nll = (F.softplus(theta) - s * theta)[mask].mean()
    b = torch.where(u >= 0, 1.0, -1.0).detach()
    return nll + eta * ((b - u) ** 2).sum(1).mean()


def hashnet_loss(u: torch.Tensor, s: torch.Tensor, alpha: float) -> torch.Tensor:
    """HashNet (Cao, Long, Wang & Yu, ICCV 2017): weighted pairwise cross entropy.

    ``L = Σ_{i≠j} w_ij [ log(1 + e^{α u_iᵀu_j}) − α s_ij u_iᵀu_j ] / Σ_{i≠j} w_ij`` with the
    paper's class-balance weights ``w_ij = |S| / |S₁|`` for similar pairs and ``|S| / |S₀|`` for
    dissimilar ones (``S`` the batch's pairs, ``S₁``/``S₀`` its similar/dissimilar ones).
    ``u = tanh(βz)`` with the continuation β growing during training is applied by the caller.

    Args:
        u: float (B, c).
        s: float (B, B) 0/1 similarity.
        alpha: α, the sigmoid's scale.

    Returns:
        scalar tensor.
    """
    mask = _off_diagonal(len(u), u.device)
    ip = alpha * (u @ u.T)
    s_off = s[mask]
    n_pairs = float(s_off.numel())
    n_sim = float(s_off.sum())
    n_dis = n_pairs - n_sim
    w = torch.where(s_off > 0, n_pairs / max(n_sim, 1.0), n_pairs / max(n_dis, 1.0))
    terms = F.softplus(ip[mask]) - s_off * ip[mask]
    return (w * terms).sum() / w.sum()


def dsh_loss(u: torch.Tensor, s: torch.Tensor, margin: float, alpha: float) -> torch.Tensor:
    """DSH (Liu, Wang, Shan & Chen, CVPR 2016): contrastive loss plus a push towards ±1.

    ``L = mean_{i≠j} [ ½ s_ij ‖u_i − u_j‖² + ½ (1 − s_ij) max(m − ‖u_i − u_j‖², 0) ]
    + α · mean_i ‖ |u_i| − 1 ‖₁`` with margin ``m`` (the paper uses ``m = 2c``).

    Args:
        u: float (B, c).
        s: float (B, B) 0/1 similarity.
        margin: m.
        alpha: α, weight of the regulariser.

    Returns:
        scalar tensor.
    """
    d2 = ((u[:, None, :] - u[None, :, :]) ** 2).sum(-1)
    mask = _off_diagonal(len(u), u.device)
    pair = 0.5 * s * d2 + 0.5 * (1 - s) * torch.clamp(margin - d2, min=0)
    return pair[mask].mean() + alpha * (u.abs() - 1).abs().sum(1).mean()


def csq_loss(u: torch.Tensor, centers: torch.Tensor, lam: float) -> torch.Tensor:
    """CSQ (Yuan et al., CVPR 2020): binary cross entropy to each item's hash centre.

    With ``h = (u + 1)/2`` and ``t = (c_y + 1)/2`` (the item's class centre in {0, 1}):
    ``L = mean_{i,k} −[ t_ik log h_ik + (1 − t_ik) log(1 − h_ik) ] + λ · mean_{i,k} (|u_ik| − 1)²``.
    The quantisation term is the authors' code's squared form (the paper writes log cosh).

    Args:
        u: float (B, c).
        centers: float (B, c) ±1, the centre of each item's class.
        lam: λ, weight of the quantisation term.

    Returns:
        scalar tensor.
    """
    h = ((u + 1) / 2).clamp(1e-7, 1 - 1e-7)  # log(0) guard at |u| = 1
    t = (centers + 1) / 2
    bce = F.binary_cross_entropy(h, t)
    return bce + lam * ((u.abs() - 1) ** 2).mean()


def hadamard(n: int) -> np.ndarray:
    """Sylvester Hadamard matrix: int8 (n, n) of ±1 with orthogonal rows; ``n`` a power of 2."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Sylvester Hadamard matrices exist for powers of 2, got {n}")
    h = np.ones((1, 1), np.int8)
    while len(h) < n:
        h = np.block([[h, h], [h, -h]])
    return h


def class_centers(n_classes: int, n_bits: int, seed: int) -> np.ndarray:
    """One ±1 code per class, far apart: int8 (n_classes, n_bits).

    CSQ's construction: when ``n_bits`` is a power of 2 and ``n_classes <= 2·n_bits``, rows of
    the Hadamard matrix ``H`` and then of ``−H`` (pairwise distance ``n_bits/2``, or ``n_bits``
    between a row and its negation); which rows go to which class is a seeded permutation.
    Otherwise each centre is a seeded Bernoulli(½) draw (the paper's fallback).
    """
    rng = np.random.default_rng([seed, 0xC5A])
    if n_bits & (n_bits - 1) == 0 and n_classes <= 2 * n_bits:
        h = hadamard(n_bits)
        rows = np.concatenate([h, -h])[:max(n_classes, n_bits)] if n_classes > n_bits else h
        return rows[rng.permutation(len(rows))[:n_classes]].astype(np.int8)
    return np.where(rng.random((n_classes, n_bits)) < 0.5, -1, 1).astype(np.int8)
