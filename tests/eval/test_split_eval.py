"""evaluate(..., semantic_bits=): split codes ranked by (semantic, instance, row), against a
brute-force numpy reference on heavily tied codes; plain codes unchanged."""

from __future__ import annotations

import json
from math import comb

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ahcl.eval import EvaluationError, evaluate

SPLITS = [(16, 8), (64, 16), (72, 8), (128, 32), (136, 72), (64, 56)]
TOPK = (1, 3, 10, 1000)
CURVE_KS = (1, 2, 5, 20)


# ---------------------------------------------------------------- brute-force reference


def _distances(q: np.ndarray, db: np.ndarray, semantic_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``(d_sem, d_inst)``, each ``int (nq, n)``, from unpacked bits (little bit order)."""
    qb = np.unpackbits(q, axis=1, bitorder="little").astype(bool)
    db_b = np.unpackbits(db, axis=1, bitorder="little").astype(bool)
    diff = qb[:, None, :] != db_b[None, :, :]
    return diff[:, :, :semantic_bits].sum(2), diff[:, :, semantic_bits:].sum(2)


def _tie_aware(keys_sorted: np.ndarray, rel_sorted: np.ndarray) -> float:
    """Expected AP over random orders within equal keys, by the position distribution of the
    m-th relevant item of a bin (hypergeometric), not the harmonic closed form."""
    n_rel = int(rel_sorted.sum())
    if n_rel == 0:
        return 0.0
    total, before, rel_before = 0.0, 0, 0
    for key in np.unique(keys_sorted):
        in_bin = keys_sorted == key
        t, r = int(in_bin.sum()), int(rel_sorted[in_bin].sum())
        for m in range(1, r + 1):
            for p in range(m, t - r + m + 1):
                prob = comb(p - 1, m - 1) * comb(t - p, r - m) / comb(t, r)
                total += prob * (rel_before + m) / (before + p)
        before, rel_before = before + t, rel_before + r
    return total / n_rel


def reference(q: np.ndarray, db: np.ndarray, relevant: np.ndarray, semantic_bits: int,
              topk, curve_ks, radius: int) -> dict:
    """Every report field by np.lexsort per query (keys: semantic, instance, row)."""
    nq, n = relevant.shape
    d_sem, d_inst = _distances(q, db, semantic_bits)
    radix = q.shape[1] * 8 - semantic_bits + 1
    rows = np.arange(n)
    out = {"ap": [], "tie": [], "no_rel": 0}
    ap_at = {k: [] for k in topk}
    p_at = {k: [] for k in list(topk) + list(curve_ks)}
    r_at = {k: [] for k in topk}
    pr_p, pr_r = np.zeros(semantic_bits + 1), np.zeros(semantic_bits + 1)
    for i in range(nq):
        order = np.lexsort((rows, d_inst[i], d_sem[i]))
        rel = relevant[i][order].astype(bool)
        keys = (d_sem[i] * radix + d_inst[i])[order]
        assert (np.diff(keys) >= 0).all()  # the key has the lexicographic order
        n_rel = int(rel.sum())
        out["no_rel"] += n_rel == 0
        prec = np.cumsum(rel) / np.arange(1, n + 1)
        out["ap"].append(prec[rel].sum() / n_rel if n_rel else 0.0)
        out["tie"].append(_tie_aware(keys, rel))
        for k in p_at:
            top = rel[:k]
            p_at[k].append(top.sum() / min(k, n))
            if k in ap_at:
                ap_at[k].append(prec[:k][top].sum() / top.sum() if top.sum() else 0.0)
                r_at[k].append(top.sum() / n_rel if n_rel else 0.0)
        for r in range(semantic_bits + 1):
            got = relevant[i][d_sem[i] <= r].astype(bool)
            pr_p[r] += got.mean() if got.size else 0.0
            pr_r[r] += got.sum() / n_rel if n_rel else 0.0
    return {"map": np.mean(out["ap"]), "map_tie_aware": np.mean(out["tie"]),
            "map_at": {k: np.mean(v) for k, v in ap_at.items()},
            "precision_at": {k: np.mean(p_at[k]) for k in topk},
            "recall_at": {k: np.mean(v) for k, v in r_at.items()},
            "precision_curve": [np.mean(p_at[k]) for k in curve_ks if k <= n],
            "pr_precision": pr_p / nq, "pr_recall": pr_r / nq,
            "precision_at_radius": pr_p[min(radius, semantic_bits)] / nq,
            "no_rel": out["no_rel"]}


def assert_matches(report, ref: dict, semantic_bits: int) -> None:
    assert report.map == pytest.approx(ref["map"], abs=1e-12)
    assert report.map_tie_aware == pytest.approx(ref["map_tie_aware"], abs=1e-9)
    for name in ("map_at", "precision_at", "recall_at"):
        assert getattr(report, name) == pytest.approx(ref[name], abs=1e-12), name
    assert report.precision_curve == pytest.approx(ref["precision_curve"], abs=1e-12)
    assert list(report.pr_curve.radius) == list(range(semantic_bits + 1))
    assert report.pr_curve.precision == pytest.approx(ref["pr_precision"], abs=1e-12)
    assert report.pr_curve.recall == pytest.approx(ref["pr_recall"], abs=1e-12)
    assert report.precision_at_radius == pytest.approx(ref["precision_at_radius"], abs=1e-12)
    assert report.n_queries_without_relevant == ref["no_rel"]


def tied_split_codes(rng: np.random.Generator, count: int, n_bits: int, semantic_bits: int,
                     n_sem: int, n_inst: int) -> np.ndarray:
    """Packed codes whose semantic and instance parts each come from a few distinct values,
    combined independently: many ties on the semantic part, on the instance part and on both."""
    sb, nb = semantic_bits // 8, n_bits // 8
    sem_pool = rng.integers(0, 256, (n_sem, sb), dtype=np.uint8)
    inst_pool = rng.integers(0, 256, (n_inst, nb - sb), dtype=np.uint8)
    return np.concatenate([sem_pool[rng.integers(0, n_sem, count)],
                           inst_pool[rng.integers(0, n_inst, count)]], axis=1)


def _case(seed: int, split: int, nq: int, n: int, n_sem: int, n_inst: int, multi_hot: bool):
    n_bits, semantic_bits = SPLITS[split]
    rng = np.random.default_rng(seed)
    codes = tied_split_codes(rng, nq + n, n_bits, semantic_bits, n_sem, n_inst)
    if multi_hot:
        labels = rng.integers(0, 2, (nq + n, 3))
        relevant = (labels[:nq] @ labels[nq:].T) > 0
    else:
        labels = rng.integers(0, 3, nq + n)
        relevant = labels[:nq, None] == labels[None, nq:]
    return (codes[:nq], labels[:nq], codes[nq:], labels[nq:], relevant, n_bits, semantic_bits)


# ---------------------------------------------------------------- split codes


@settings(max_examples=60, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1), split=st.integers(0, len(SPLITS) - 1),
       nq=st.integers(1, 6), n=st.integers(1, 40), n_sem=st.integers(1, 3),
       n_inst=st.integers(1, 3), multi_hot=st.booleans(), radius=st.integers(0, 80))
def test_split_matches_lexsort_reference(seed, split, nq, n, n_sem, n_inst, multi_hot,
                                         radius) -> None:
    q, ql, db, dl, relevant, n_bits, sb = _case(seed, split, nq, n, n_sem, n_inst, multi_hot)
    report = evaluate(q, ql, db, dl, topk=TOPK, radius=radius, curve_ks=CURVE_KS,
                      semantic_bits=sb)
    assert_matches(report, reference(q, db, relevant, sb, TOPK, CURVE_KS, radius), sb)
    assert report.semantic_bits == sb and report.n_bits == n_bits
    assert report.radius == radius


@pytest.mark.parametrize("n_bits, semantic_bits", SPLITS)
def test_split_on_a_larger_tied_database(n_bits: int, semantic_bits: int) -> None:
    rng = np.random.default_rng(n_bits + semantic_bits)
    codes = tied_split_codes(rng, 400, n_bits, semantic_bits, 4, 5)
    # a few rows with random instance bits: distinct keys within semantic ties
    codes[::7, semantic_bits // 8:] = rng.integers(0, 256, (len(codes[::7]),
                                                            (n_bits - semantic_bits) // 8))
    labels = rng.integers(0, 4, 400)
    q, ql, db, dl = codes[:30], labels[:30], codes[30:], labels[30:]
    report = evaluate(q, ql, db, dl, topk=TOPK, radius=3, curve_ks=CURVE_KS,
                      semantic_bits=semantic_bits)
    ref = reference(q, db, ql[:, None] == dl[None, :], semantic_bits, TOPK, CURVE_KS, 3)
    assert_matches(report, ref, semantic_bits)


def test_split_order_is_semantic_first_hand_worked() -> None:
    # 16 bits, 8 semantic. Query 0. Row 0: semantic distance 1, instance 0 (Hamming 1);
    # row 1: semantic 0, instance 8 (Hamming 8); row 2: semantic 0, instance 1 (Hamming 1).
    q = np.zeros((1, 2), np.uint8)
    db = np.array([[1, 0], [0, 255], [0, 1]], np.uint8)
    labels = np.array([1, 0, 0])
    plain = evaluate(q, np.array([1]), db, labels, topk=(1,))
    split = evaluate(q, np.array([1]), db, labels, topk=(1,), semantic_bits=8)
    assert plain.map == 1.0 and plain.precision_at[1] == 1.0  # plain: row 0 first (tied, lower)
    assert split.map == pytest.approx(1 / 3) and split.precision_at[1] == 0.0  # split: 2, 1, 0
    # semantic radius 0: rows 1 and 2 (neither relevant); radius >= 1: all three rows
    assert split.pr_curve.precision.tolist() == [0.0] + [pytest.approx(1 / 3)] * 8
    assert split.precision_at_radius == pytest.approx(1 / 3)  # semantic radius 2: all three rows


def test_split_ties_need_both_distances_equal() -> None:
    # rows 0 and 1 have the same key (0, 1), row 2 the same Hamming distance but key (1, 0):
    # the tie-aware AP of the one relevant row (1) mixes positions 1 and 2 only.
    q = np.zeros((1, 2), np.uint8)
    db = np.array([[0, 1], [0, 2], [1, 0]], np.uint8)
    rep = evaluate(q, np.array([0]), db, np.array([1, 0, 1]), semantic_bits=8)
    assert rep.map == pytest.approx(0.5)
    assert rep.map_tie_aware == pytest.approx((1 + 0.5) / 2)
    plain = evaluate(q, np.array([0]), db, np.array([1, 0, 1]))  # all three tied
    assert plain.map_tie_aware == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_threads_and_chunks_do_not_change_a_split_report() -> None:
    q, ql, db, dl, _, _, sb = _case(3, 3, 40, 300, 3, 4, False)
    base = evaluate(q, ql, db, dl, semantic_bits=sb).to_dict()
    for kwargs in (dict(threads=1), dict(chunk=1), dict(chunk=7, threads=2)):
        other = evaluate(q, ql, db, dl, semantic_bits=sb, **kwargs).to_dict()
        assert other.keys() == base.keys()
        assert other["map"] == pytest.approx(base["map"], abs=1e-12)
        assert other["map_tie_aware"] == pytest.approx(base["map_tie_aware"], abs=1e-12)
        for name in ("precision", "recall"):
            assert other["pr_curve"][name] == pytest.approx(base["pr_curve"][name], abs=1e-12)


def test_split_report_to_dict() -> None:
    q, ql, db, dl, _, _, sb = _case(5, 1, 3, 20, 2, 2, False)
    d = json.loads(json.dumps(evaluate(q, ql, db, dl, semantic_bits=sb).to_dict()))
    assert d["semantic_bits"] == sb == 16 and d["n_bits"] == 64
    assert d["pr_curve"]["radius"] == list(range(17))


# ---------------------------------------------------------------- plain codes


@settings(max_examples=30, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1), split=st.integers(0, len(SPLITS) - 1),
       nq=st.integers(1, 6), n=st.integers(1, 40), multi_hot=st.booleans())
def test_plain_codes_are_unchanged(seed, split, nq, n, multi_hot) -> None:
    """None and n_bits give the same report, with no ``semantic_bits`` key in to_dict, equal to
    the reference with no instance bits (ranking by Hamming distance, ties by row)."""
    q, ql, db, dl, relevant, n_bits, _ = _case(seed, split, nq, n, 2, 2, multi_hot)
    none = evaluate(q, ql, db, dl, topk=TOPK, curve_ks=CURVE_KS)
    full = evaluate(q, ql, db, dl, topk=TOPK, curve_ks=CURVE_KS, semantic_bits=n_bits)
    assert json.dumps(none.to_dict()) == json.dumps(full.to_dict())
    assert none.semantic_bits is None and full.semantic_bits is None
    assert "semantic_bits" not in none.to_dict()
    assert_matches(none, reference(q, db, relevant, n_bits, TOPK, CURVE_KS, 2), n_bits)


def test_plain_numbers_are_pinned() -> None:
    """Figures of evaluate before split codes existed (same seeded inputs), to the last bit."""
    rng = np.random.default_rng(12)
    codes = rng.integers(0, 4, (120, 8), dtype=np.uint8)
    labels = rng.integers(0, 3, 120)
    rep = evaluate(codes[:20], labels[:20], codes[20:], labels[20:], topk=(5, 50), radius=6)
    assert rep.map == PINNED["map"]
    assert rep.map_tie_aware == PINNED["map_tie_aware"]
    assert rep.map_at == PINNED["map_at"] and rep.precision_at == PINNED["precision_at"]
    assert rep.precision_at_radius == PINNED["precision_at_radius"]
    assert len(rep.pr_curve.radius) == 65


# evaluate of the commit before semantic_bits existed, on the inputs of the test above
PINNED = {"map": 0.3555720669805836, "map_tie_aware": 0.3570899461065637,
          "map_at": {5: 0.46722222222222215, 50: 0.36508310947166317},
          "precision_at": {5: 0.3, 50: 0.331}, "precision_at_radius": 0.32083619833848676}


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("semantic_bits", [0, 4, 12, -8, 72, 8.0, True, "8"])
def test_bad_semantic_bits_raise(semantic_bits) -> None:
    q = np.zeros((2, 8), np.uint8)
    with pytest.raises(EvaluationError, match="semantic_bits"):
        evaluate(q, np.zeros(2, int), q, np.zeros(2, int), semantic_bits=semantic_bits)


def test_numpy_integer_semantic_bits_accepted() -> None:
    q = np.zeros((2, 8), np.uint8)
    rep = evaluate(q, np.zeros(2, int), q, np.zeros(2, int), semantic_bits=np.int64(16))
    assert rep.semantic_bits == 16
