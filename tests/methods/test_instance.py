"""The instance projection (ahcl.methods.instance): shapes, invariance it learns, safe arrays."""

from __future__ import annotations

import numpy as np
import pytest

from ahcl.config import split_bits
from ahcl.errors import InvalidValueError
from ahcl.methods.instance import InstanceProjection, fit_instance_projection


def _views(n: int = 200, d: int = 48, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Images = a per-image signal in d/2 dims; a 'rotation' adds a large view-specific nuisance
    in the other d/2 dims. Returns 4 views and a fresh altered view (view noise + small jitter)."""
    rng = np.random.default_rng(seed)
    h = d // 2
    signal = np.zeros((n, d))
    signal[:, :h] = rng.standard_normal((n, h))
    nuisance = rng.standard_normal((4, n, d)) * 3.0
    nuisance[:, :, :h] = 0
    views = [signal + nuisance[k] for k in range(4)]
    altered = signal + rng.standard_normal((n, d)) * 3.0 * (np.arange(d) >= h) \
        + rng.standard_normal((n, d)) * 0.05
    return views, altered


def test_codes_have_the_asked_width_and_are_deterministic():
    views, _ = _views()
    a = fit_instance_projection(views, 16, seed=3)
    b = fit_instance_projection(views, 16, seed=3)
    assert a.n_bits == 16 and a.feature_dim == 48
    codes = a.codes(views[0])
    assert codes.dtype == np.uint8 and codes.shape == (200, 2)
    np.testing.assert_array_equal(codes, b.codes(views[0]))


def test_learns_to_ignore_what_the_views_change():
    """An altered copy must find its source far more often than with a plain PCA sign."""
    views, altered = _views()
    proj = fit_instance_projection(views, 16)
    db, q = proj.codes(views[0]), proj.codes(altered)
    dist = np.unpackbits(db[None] ^ q[:, None], axis=2).sum(2)  # (q, db)
    top1 = np.mean(dist.argmin(1) == np.arange(len(q)))
    # plain PCA of the first view, same width
    x = views[0] / np.linalg.norm(views[0], axis=1, keepdims=True)
    xq = altered / np.linalg.norm(altered, axis=1, keepdims=True)
    mu = x.mean(0)
    _, _, vt = np.linalg.svd(x - mu, full_matrices=False)
    pdb, pq = (x - mu) @ vt[:16].T > 0, (xq - mu) @ vt[:16].T > 0
    pca_top1 = np.mean(((pq[:, None] != pdb[None]).sum(2)).argmin(1) == np.arange(len(q)))
    assert top1 > 0.8 and top1 > pca_top1 + 0.3


def test_bad_inputs_are_refused():
    views, _ = _views(n=20, d=16)
    with pytest.raises(ValueError, match="at most the feature dimension"):
        fit_instance_projection(views, 24)
    with pytest.raises(ValueError, match="multiple of 8"):
        fit_instance_projection(views, 12)
    with pytest.raises(ValueError, match="different shapes"):
        fit_instance_projection([views[0], views[1][:5]], 8)
    bad = [v.copy() for v in views]
    bad[1][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_instance_projection(bad, 8)


def test_round_trip_through_arrays_checks_them():
    views, _ = _views(n=30, d=16)
    proj = fit_instance_projection(views, 8)
    again = InstanceProjection.from_arrays(proj.to_arrays())
    np.testing.assert_array_equal(again.codes(views[2]), proj.codes(views[2]))
    arrays = proj.to_arrays()
    with pytest.raises(ValueError, match="shapes"):
        InstanceProjection.from_arrays({"mean": arrays["mean"][:3], "weights": arrays["weights"]})
    with pytest.raises(ValueError, match="NaN"):
        InstanceProjection.from_arrays({"mean": arrays["mean"],
                                        "weights": np.full_like(arrays["weights"], np.nan)})


@pytest.mark.parametrize("n_bits, expected", [(8, (8, 0)), (16, (8, 8)), (32, (8, 24)),
                                              (64, (16, 48)), (128, (32, 96)),
                                              (256, (64, 192))])
def test_auto_split(n_bits, expected):
    assert split_bits(n_bits) == expected


def test_split_respects_the_feature_dimension_and_explicit_values():
    assert split_bits(128, "auto", feature_dim=64) == (64, 64)
    assert split_bits(64, 0) == (64, 0)
    assert split_bits(64, 56) == (8, 56)
    for bad in (-8, 12, 64, 60, True, 8.0, "half"):
        with pytest.raises(InvalidValueError, match="instance_bits"):
            split_bits(64, bad)
    with pytest.raises(InvalidValueError, match="feature dimensions"):
        split_bits(64, 48, feature_dim=32)
