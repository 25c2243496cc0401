"""The scalable AHCL steps equal their dense definitions (METHOD.md) on small random problems."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ahcl.methods.solver import (_ubar, code_step, code_step_from_stats,
                                 code_step_from_stats_torch, database_stats, dissimilar_weight,
                                 omega_stats, pairwise_loss)


def _problem(seed: int, n: int = 40, m: int = 12, c: int = 8, K: int = 4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    labels[:K] = np.arange(K)  # every class present
    V = np.where(rng.random((n, c)) < 0.5, -1, 1).astype(np.int8)
    omega = rng.choice(n, m, replace=False)
    U = np.tanh(rng.normal(size=(m, c)) * 2).astype(np.float64)
    return rng, labels, V, omega, U, K


def _dense_S(omega_labels, labels, r):
    same = omega_labels[:, None] == labels[None, :]
    return np.where(same, 1.0, -r)


def _dense_code_step(V, U, omega, labels, r, lam):
    """METHOD.md verbatim: Q = −2c SᵀU − 2λŪ, then bit by bit with M = UᵀU."""
    V = V.astype(np.float64).copy()
    n, c = V.shape
    S = _dense_S(labels[omega], labels, r)
    ubar = np.zeros((n, c))
    for i, j in enumerate(omega):
        ubar[j] += U[i]
    Q = -2 * c * S.T @ U - 2 * lam * ubar
    M = U.T @ U
    for k in range(c):
        others = [l for l in range(c) if l != k]
        x = Q[:, k] + 2 * V[:, others] @ M[others, k]
        V[:, k] = np.where(x >= 0, -1.0, 1.0)
    return V.astype(np.int8)


def _objective(V, U, omega, labels, r, lam):
    c = V.shape[1]
    S = _dense_S(labels[omega], labels, r)
    Vf = V.astype(np.float64)
    return ((U @ Vf.T - c * S) ** 2).sum() + lam * ((Vf[omega] - U) ** 2).sum()


@pytest.mark.parametrize("similarity", ["soft", "hard"])
def test_dissimilar_weight_matches_block_count(similarity):
    _, labels, _, omega, _, K = _problem(0)
    counts = np.bincount(labels, minlength=K)
    r = dissimilar_weight(labels[omega], counts, similarity)
    same = labels[omega][:, None] == labels[None, :]
    expected = same.sum() / (~same).sum() if similarity == "soft" else 1.0
    assert r == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("similarity", ["soft", "hard"])
def test_pairwise_loss_and_gradient_equal_dense(seed, similarity):
    _, labels, V, omega, U, K = _problem(seed)
    c = V.shape[1]
    r = dissimilar_weight(labels[omega], np.bincount(labels, minlength=K), similarity)
    stats = database_stats(V, labels, K, chunk=7)  # odd chunk exercises the chunk loop
    u_fast = torch.tensor(U, requires_grad=True)
    u_dense = torch.tensor(U, requires_grad=True)
    fast = pairwise_loss(u_fast, torch.as_tensor(labels[omega]), stats, r, c)
    S = torch.as_tensor(_dense_S(labels[omega], labels, r))
    dense = ((u_dense @ torch.as_tensor(V, dtype=torch.float64).T - c * S) ** 2).sum()
    fast.backward()
    dense.backward()
    assert fast.item() == pytest.approx(dense.item(), rel=1e-5)
    torch.testing.assert_close(u_fast.grad, u_dense.grad, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("similarity", ["soft", "hard"])
def test_code_step_equals_dense(seed, similarity):
    _, labels, V, omega, U, K = _problem(seed, n=53, m=17, c=16)
    lam = [0.0, 1.0, 200.0][seed % 3]
    r = dissimilar_weight(labels[omega], np.bincount(labels, minlength=K), similarity)
    expected = _dense_code_step(V, U, omega, labels, r, lam)
    got = code_step(V.copy(), U, omega, labels, K, r, lam, chunk=10, dtype=np.float64)
    np.testing.assert_array_equal(got, expected)
    assert set(np.unique(got)) <= {-1, 1}


def test_code_step_never_increases_objective():
    _, labels, V, omega, U, K = _problem(7, n=60, m=20, c=12)
    r = dissimilar_weight(labels[omega], np.bincount(labels, minlength=K), "soft")
    before = _objective(V, U, omega, labels, r, 200.0)
    after_V = code_step(V.copy(), U, omega, labels, K, r, 200.0, dtype=np.float64)
    assert _objective(after_V, U, omega, labels, r, 200.0) <= before + 1e-9


def test_code_step_rows_slice_equals_full_on_those_rows():
    # The rows are independent given (U, Ω): updating a slice equals the full update there.
    _, labels, V, omega, U, K = _problem(3, n=50, m=15, c=8)
    full = code_step(V.copy(), U, omega, labels, K, 0.5, 10.0, dtype=np.float64)
    part = code_step(V.copy(), U, omega, labels, K, 0.5, 10.0, rows=slice(20, 37), dtype=np.float64)
    np.testing.assert_array_equal(part[20:37], full[20:37])
    np.testing.assert_array_equal(part[:20], V[:20])
    np.testing.assert_array_equal(part[37:], V[37:])


def test_code_step_repeated_omega_rows_add_up():
    _, labels, V, omega, U, K = _problem(5, n=30, m=10, c=8)
    omega = omega.copy()
    omega[1] = omega[0]  # the same database row sampled twice
    expected = _dense_code_step(V, U, omega, labels, 0.3, 50.0)
    got = code_step(V.copy(), U, omega, labels, K, 0.3, 50.0, dtype=np.float64)
    np.testing.assert_array_equal(got, expected)


def test_code_step_float32_default_agrees():
    _, labels, V, omega, U, K = _problem(11, n=200, m=50, c=32)
    a = code_step(V.copy(), U, omega, labels, K, 0.2, 200.0)
    b = code_step(V.copy(), U, omega, labels, K, 0.2, 200.0, dtype=np.float64)
    assert (a != b).mean() < 0.01


@pytest.mark.parametrize("seed", range(4))
def test_torch_code_step_equals_numpy(seed):
    """The device form of the code step (run here on the CPU) makes the same updates in the
    same order: equal bit for bit in float64, and in float32 on all but rounding-level ties."""
    _, labels, V, omega, U, K = _problem(seed, n=300, m=40, c=16)
    r = dissimilar_weight(labels[omega], np.bincount(labels, minlength=K), "soft")
    M, R = omega_stats(U, labels[omega], K, np.float64)
    rows, ubar = _ubar(omega, U, np.float64)
    expected = code_step_from_stats(V.copy(), labels, M, R, r, 5.0, rows, ubar, sweeps=2,
                                    chunk=64, dtype=np.float64)
    got = code_step_from_stats_torch(V.copy(), labels, M, R, r, 5.0, rows, ubar, sweeps=2,
                                     chunk=70, dtype=torch.float64)
    np.testing.assert_array_equal(got, expected)
    got32 = code_step_from_stats_torch(V.copy(), labels, M, R, r, 5.0, rows, ubar, sweeps=2)
    assert np.mean(got32 == expected) > 0.999
