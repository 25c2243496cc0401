"""Baselines: each loss against a hand-worked case and an explicit loop; every method learns on
Gaussian clusters, is byte-identical under a seed and leaves the global random state alone."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from ahcl.errors import AhclError
from ahcl.eval import evaluate
from ahcl.index.packing import pack_codes
from ahcl.methods.losses import (class_centers, csq_loss, dpsh_loss, dsh_loss, hadamard,
                                 hashnet_loss, similarity)
from ahcl.methods.registry import GRIDS, KINDS, MAX_TRIALS, METHODS, create_method, get_method


LOG1PE = math.log(1 + math.e)


# ---------------------------------------------------------------- losses: hand-worked cases
def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_dpsh_hand_case() -> None:
    # Two identical similar items, u = (1, 1): Θ = ½·2 = 1 → log(1 + e) − 1; b = u → no quantisation.
    u = t([[1, 1], [1, 1]])
    assert dpsh_loss(u, similarity(torch.tensor([0, 0])), eta=5.0).item() == pytest.approx(
        LOG1PE - 1, rel=1e-6)
    # Dissimilar: Θ = 1 → log(1 + e). u = 0.5 adds η·mean_i Σ_k (1 − 0.5)² = η·0.5.
    u = t([[0.5, 0.5], [0.5, 0.5]])
    expected = math.log(1 + math.exp(0.25)) + 0.1 * 0.5
    assert dpsh_loss(u, similarity(torch.tensor([0, 1])), eta=0.1).item() == pytest.approx(
        expected, rel=1e-6)


def test_hashnet_hand_case() -> None:
    # Only similar pairs: every weight is |S|/|S1| = 1; α·uᵀu = 1 → log(1 + e) − 1.
    u = t([[1, 0], [1, 0]])
    assert hashnet_loss(u, similarity(torch.tensor([3, 3])), alpha=1.0).item() == pytest.approx(
        LOG1PE - 1, rel=1e-6)


def test_dsh_hand_case() -> None:
    u = t([[1, 1], [-1, -1]])  # ‖u_i − u_j‖² = 8, | |u| − 1 | = 0
    similar = dsh_loss(u, similarity(torch.tensor([0, 0])), margin=4.0, alpha=1.0)
    assert similar.item() == pytest.approx(4.0)  # ½ · 8
    dissimilar = dsh_loss(u, similarity(torch.tensor([0, 1])), margin=10.0, alpha=1.0)
    assert dissimilar.item() == pytest.approx(1.0)  # ½ · max(10 − 8, 0)
    half = dsh_loss(t([[0.5, 0.5], [0.5, 0.5]]), similarity(torch.tensor([0, 0])), 4.0, 1.0)
    assert half.item() == pytest.approx(1.0)  # distance 0; α · (0.5 + 0.5)


def test_csq_hand_case() -> None:
    # u = 0: h = ½ → BCE = log 2 for either target bit; (|0| − 1)² = 1.
    u = torch.zeros(3, 4)
    centers = t([[1, -1, 1, -1]] * 3)
    assert csq_loss(u, centers, lam=0.3).item() == pytest.approx(math.log(2) + 0.3, rel=1e-6)


# ---------------------------------------------------------------- losses: explicit loops
def _case(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(5, 3, generator=g) * 2 - 1
    return u, torch.tensor([0, 1, 0, 2, 1])


def _pairs(n: int):
    return [(i, j) for i in range(n) for j in range(n) if i != j]


def test_pairwise_losses_match_loops() -> None:
    u, y = _case(0)
    U = u.tolist()
    n, c = len(U), len(U[0])
    s = lambda i, j: float(y[i] == y[j])  # noqa: E731
    dot = lambda i, j: sum(U[i][k] * U[j][k] for k in range(c))  # noqa: E731
    pairs = _pairs(n)

    dpsh = sum(math.log(1 + math.exp(0.5 * dot(i, j))) - s(i, j) * 0.5 * dot(i, j)
               for i, j in pairs) / len(pairs)
    dpsh += 0.2 * sum((math.copysign(1, U[i][k]) - U[i][k]) ** 2
                      for i in range(n) for k in range(c)) / n
    assert dpsh_loss(u, similarity(y), 0.2).item() == pytest.approx(dpsh, rel=1e-5)

    n_sim = sum(s(i, j) for i, j in pairs)
    w = lambda i, j: len(pairs) / n_sim if s(i, j) else len(pairs) / (len(pairs) - n_sim)  # noqa
    num = sum(w(i, j) * (math.log(1 + math.exp(0.7 * dot(i, j))) - 0.7 * s(i, j) * dot(i, j))
              for i, j in pairs)
    hashnet = num / sum(w(i, j) for i, j in pairs)
    assert hashnet_loss(u, similarity(y), 0.7).item() == pytest.approx(hashnet, rel=1e-5)

    d2 = lambda i, j: sum((U[i][k] - U[j][k]) ** 2 for k in range(c))  # noqa: E731
    dsh = sum(0.5 * s(i, j) * d2(i, j) + 0.5 * (1 - s(i, j)) * max(1.5 - d2(i, j), 0)
              for i, j in pairs) / len(pairs)
    dsh += 0.3 * sum(abs(abs(U[i][k]) - 1) for i in range(n) for k in range(c)) / n
    assert dsh_loss(u, similarity(y), 1.5, 0.3).item() == pytest.approx(dsh, rel=1e-5)


def test_csq_matches_loop() -> None:
    u, y = _case(1)
    centers = class_centers(3, 4, seed=0)[:, :3].astype(np.float32)
    cb = torch.from_numpy(centers)[y]
    U, C = u.tolist(), cb.tolist()
    total = 0.0
    for i in range(len(U)):
        for k in range(3):
            h, tk = (U[i][k] + 1) / 2, (C[i][k] + 1) / 2
            total += -(tk * math.log(h) + (1 - tk) * math.log(1 - h)) + 0.5 * (abs(U[i][k]) - 1) ** 2
    assert csq_loss(u, cb, 0.5).item() == pytest.approx(total / (len(U) * 3), rel=1e-5)


# ---------------------------------------------------------------- hash centres
def test_hadamard_and_centers() -> None:
    h = hadamard(8).astype(int)
    assert (h @ h.T == 8 * np.eye(8)).all()
    with pytest.raises(ValueError):
        hadamard(12)
    c = class_centers(10, 8, seed=3).astype(int)  # 10 ≤ 2·8: rows of H and −H
    d = (c[:, None, :] != c[None, :, :]).sum(-1)
    assert set(d[~np.eye(10, dtype=bool)].tolist()) <= {4, 8}
    assert np.array_equal(c, class_centers(10, 8, seed=3))
    r = class_centers(5, 48, seed=0)  # 48 is not a power of 2: seeded Bernoulli
    assert r.shape == (5, 48) and set(np.unique(r)) <= {-1, 1}
    assert not np.array_equal(r, class_centers(5, 48, seed=1))


# ---------------------------------------------------------------- the methods
K, D, BITS = 4, 24, 16
FAST = {
    "ahcl": {"outer_iters": 4, "epochs": 1, "num_samples": None, "lr_milestones": []},
    "adsh": {"outer_iters": 4, "epochs": 1, "num_samples": None, "lr_milestones": []},
    **{m: {"epochs": 8, "batch_size": 32} for m in ("dpsh", "hashnet", "dsh", "csq")},
    "classifier": {"epochs": 15, "batch_size": 32, "lr": 3e-3},
    "sdh": {"n_anchors": 60},
}


@pytest.fixture(scope="module")
def clusters() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    means = rng.standard_normal((K, D)) * 1.5
    y_db, y_q = rng.integers(0, K, 120), rng.integers(0, K, 40)
    x_db = (means[y_db] + rng.standard_normal((120, D))).astype(np.float32)
    x_q = (means[y_q] + rng.standard_normal((40, D))).astype(np.float32)
    return x_db, y_db, x_q, y_q


_FITTED: dict[tuple[str, int], object] = {}


def _fit(name: str, data, seed: int = 0, fresh: bool = False):
    """A fitted method; reused across tests unless ``fresh`` (the tests only read it)."""
    key = (name, seed)
    if fresh or key not in _FITTED:
        x_db, y_db, _, _ = data
        model = create_method(name, n_bits=BITS, seed=seed, **FAST.get(name, {})).fit(
            x_db, y_db, n_classes=K)
        if fresh:
            return model
        _FITTED[key] = model
    return _FITTED[key]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_learns_and_is_deterministic(name: str, clusters) -> None:
    x_db, y_db, x_q, y_q = clusters
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    a = _fit(name, clusters)
    b = _fit(name, clusters, fresh=True)
    assert torch.equal(torch.get_rng_state(), torch_state), "global torch RNG was used"
    assert np.array_equal(np.random.get_state()[1], np_state), "global numpy RNG was used"
    q = a.encode(x_q)
    assert q.dtype == np.uint8 and q.shape == (len(x_q), BITS // 8)
    assert a.db_codes_.dtype == np.uint8 and a.db_codes_.shape == (len(x_db), BITS // 8)
    assert a.db_codes_.tobytes() == b.db_codes_.tobytes()
    assert q.tobytes() == b.encode(x_q).tobytes()
    # Chance mAP with 4 balanced classes is about 0.25-0.3; every method must clear it widely.
    assert evaluate(q, y_q, a.db_codes_, y_db).map > 0.7
    cfg = a.get_config()
    assert cfg["method"] == name == a.name and cfg["seed"] == 0 and cfg["n_bits"] == BITS


def test_seed_changes_codes(clusters) -> None:
    for name in ("csq", "lsh", "sdh"):
        assert _fit(name, clusters, 0).db_codes_.tobytes() != \
            _fit(name, clusters, 1).db_codes_.tobytes(), name


def test_symmetric_db_codes_are_a_forward_pass(clusters) -> None:
    x_db = clusters[0]
    for name in ("hashnet", "csq", "classifier", "sdh"):
        m = _fit(name, clusters)
        assert np.array_equal(m.db_codes_, m.encode(x_db)), name
        assert m.timings_["db_codes_s"] > 0 and m.timings_["train_s"] > 0


@pytest.mark.parametrize("name", ["csq", "itq"])
def test_timings_split_training_from_the_database_pass(clusters, monkeypatch, name) -> None:
    """``db_codes_s`` times the database pass alone: slowing ``encode`` down shows up there and
    not in ``train_s``."""
    plain = _fit(name, clusters)
    cls = METHODS[name]
    original = cls.encode

    def slow_encode(self, inputs):
        time.sleep(0.3)
        return original(self, inputs)

    monkeypatch.setattr(cls, "encode", slow_encode)
    m = create_method(name, n_bits=BITS, **FAST.get(name, {})).fit(clusters[0], clusters[1])
    assert m.timings_["db_codes_s"] >= 0.3
    assert 0 < m.timings_["train_s"] < m.timings_["db_codes_s"] + 60
    assert plain.timings_["db_codes_s"] < m.timings_["db_codes_s"] - 0.25


def test_lsh_is_random_hyperplanes(clusters) -> None:
    x_db = clusters[0]
    m = _fit("lsh", clusters)
    x = x_db.astype(np.float64)
    ref = np.empty((len(x), BITS))
    for i in range(len(x)):  # explicit loop: sign((x − μ)·w_k)
        for k in range(BITS):
            ref[i, k] = sum((x[i, j] - x[:, j].mean()) * m.W_[j, k] for j in range(x.shape[1]))
    assert np.array_equal(m.db_codes_, pack_codes(ref))


def test_itq_rotation_is_orthogonal_and_lowers_quantisation(clusters) -> None:
    x = clusters[0].astype(np.float64)
    m0 = create_method("itq", n_bits=BITS, n_iter=0).fit(x, clusters[1])
    m = create_method("itq", n_bits=BITS, n_iter=50).fit(x, clusters[1])
    assert np.allclose(m.R_ @ m.R_.T, np.eye(BITS), atol=1e-8)

    def quant(model) -> float:
        v = (x - model.mean_) @ model.P_ @ model.R_
        return float(((np.where(v >= 0, 1, -1) - v) ** 2).sum())

    assert quant(m) < quant(m0)


def test_classifier_predicts_and_codes_its_class(clusters) -> None:
    x_db, y_db, x_q, y_q = clusters
    m = _fit("classifier", clusters)
    pred = m.predict(x_q)
    assert (pred == y_q).mean() > 0.9
    assert np.array_equal(m.encode(x_q), pack_codes(m.centers_[pred]))


def test_finetune_mode_trains_the_backbone(tmp_path) -> None:
    from ahcl.data.folder import read_image_folder
    from ahcl.data.synthetic import write_synthetic_dataset
    from ahcl.methods.feeders import ImageFeeder
    from ahcl.models.backbones import create_backbone

    root = write_synthetic_dataset(tmp_path / "scenes", per_class=4, size=32,
                                   classes=["water", "forest", "desert"])
    folder = read_image_folder(root)
    backbone = create_backbone("tiny_cnn", seed=0)
    before = [p.detach().clone() for p in backbone.parameters()]
    feeder = ImageFeeder([str(p) for p in folder.absolute_paths], backbone.transform)
    m = create_method("csq", n_bits=8, epochs=1, batch_size=4).fit(feeder, folder.labels,
                                                                    backbone=backbone)
    assert m.db_codes_.shape == (12, 1)
    assert any(not torch.equal(a, b) for a, b in zip(before, backbone.parameters()))
    assert np.array_equal(m.encode(feeder), m.db_codes_)


# ---------------------------------------------------------------- registry and errors
def test_registry_covers_every_method() -> None:
    assert {"ahcl", "adsh", "dpsh", "hashnet", "dsh", "csq", "lsh", "itq", "sdh",
            "classifier"} <= set(METHODS)
    for name in METHODS:
        assert get_method(name).name == name
        assert name in KINDS
        assert 1 <= len(GRIDS[name]) <= MAX_TRIALS
        create_method(name, **GRIDS[name][0])  # every grid setting is a valid parameter
    with pytest.raises(AhclError, match="unknown method"):
        get_method("nope")


def test_user_errors(clusters) -> None:
    x_db, y_db = clusters[0], clusters[1]
    with pytest.raises(AhclError, match="multiple of 8"):
        create_method("dpsh", n_bits=12)
    with pytest.raises(AhclError, match="multiple of 8"):
        create_method("itq", n_bits=12)
    with pytest.raises(AhclError):
        create_method("dsh", no_such_param=1)
    with pytest.raises(AhclError, match="frozen"):
        create_method("lsh").fit(x_db, y_db, backbone=object())
    with pytest.raises(AhclError, match="n_bits <="):
        create_method("itq", n_bits=32).fit(x_db[:, :16], y_db)
    with pytest.raises(AhclError, match="inputs but"):
        create_method("csq").fit(x_db, y_db[:-1])
