"""Retrieval metrics against hand-worked cases, explicit loops and brute-force tie enumeration."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction

import numpy as np
import pytest

from ahcl.errors import AhclError
from ahcl.eval import EvaluationError, RetrievalReport, evaluate
from ahcl.index.packing import pack_codes, unpack_codes

# ---------------------------------------------------------------- explicit-loop reference


def _ap(rel_in_order: list[bool]) -> float:
    hits, total = 0, 0.0
    for rank, rel in enumerate(rel_in_order, start=1):
        if rel:
            hits += 1
            total += hits / rank
    return total / hits if hits else 0.0


def _tie_aware_ap(dist: list[int], rel: list[bool]) -> float:
    """Expected AP over random orders within each distance: enumerate relevant positions."""
    n_rel = sum(rel)
    if n_rel == 0:
        return 0.0
    total, before, rel_before = 0.0, 0, 0
    for d in sorted(set(dist)):
        t = sum(1 for x in dist if x == d)
        r = sum(1 for x, y in zip(dist, rel) if x == d and y)
        if r:
            subsets = list(itertools.combinations(range(1, t + 1), r))
            for positions in subsets:
                for m, pos in enumerate(positions, start=1):
                    total += (rel_before + m) / (before + pos) / len(subsets)
        before, rel_before = before + t, rel_before + r
    return total / n_rel


def reference(q_codes: np.ndarray, db_codes: np.ndarray, relevant: np.ndarray, topk: list[int],
              radius: int, curve_ks: list[int]) -> dict:
    """Every report field by loops over queries and ranks; ``relevant`` is bool (nq, n)."""
    q_bits, db_bits = np.unpackbits(q_codes, axis=1), np.unpackbits(db_codes, axis=1)
    nq, n, n_bits = len(q_codes), len(db_codes), q_bits.shape[1]
    aps, ties, no_rel = [], [], 0
    ap_at = {k: 0.0 for k in topk}
    p_at = {k: 0.0 for k in topk + curve_ks}
    r_at = {k: 0.0 for k in topk}
    pr_p, pr_r = [0.0] * (n_bits + 1), [0.0] * (n_bits + 1)
    for i in range(nq):
        dist = [int(np.sum(q_bits[i] != db_bits[j])) for j in range(n)]
        rel = [bool(relevant[i, j]) for j in range(n)]
        order = sorted(range(n), key=lambda j: (dist[j], j))
        ranked = [rel[j] for j in order]
        n_rel = sum(rel)
        no_rel += n_rel == 0
        aps.append(_ap(ranked))
        ties.append(_tie_aware_ap(dist, rel))
        for k in set(topk + curve_ks):
            top = ranked[:k]
            p_at[k] += sum(top) / min(k, n)
            if k in ap_at:
                ap_at[k] += _ap(top)
                r_at[k] += sum(top) / n_rel if n_rel else 0.0
        for r in range(n_bits + 1):
            got = [rel[j] for j in range(n) if dist[j] <= r]
            pr_p[r] += sum(got) / len(got) if got else 0.0
            pr_r[r] += sum(got) / n_rel if n_rel else 0.0
    return {
        "map": sum(aps) / nq, "map_tie_aware": sum(ties) / nq,
        "map_at": {k: v / nq for k, v in ap_at.items()},
        "precision_at": {k: p_at[k] / nq for k in topk},
        "recall_at": {k: v / nq for k, v in r_at.items()},
        "precision_curve": [p_at[k] / nq for k in curve_ks],
        "pr_precision": [p / nq for p in pr_p], "pr_recall": [r / nq for r in pr_r],
        "precision_at_radius": pr_p[min(radius, n_bits)] / nq,
        "n_queries_without_relevant": no_rel,
    }


def assert_matches(report: RetrievalReport, ref: dict) -> None:
    close = dict(rel=1e-9, abs=1e-12)
    assert report.map == pytest.approx(ref["map"], **close)
    assert report.map_tie_aware == pytest.approx(ref["map_tie_aware"], **close)
    for name in ("map_at", "precision_at", "recall_at"):
        got = getattr(report, name)
        assert list(got) == list(ref[name])
        for k in got:
            assert got[k] == pytest.approx(ref[name][k], **close), (name, k)
    assert report.precision_curve == pytest.approx(ref["precision_curve"], **close)
    np.testing.assert_allclose(report.pr_curve.precision, ref["pr_precision"], rtol=1e-9)
    np.testing.assert_allclose(report.pr_curve.recall, ref["pr_recall"], rtol=1e-9)
    assert report.precision_at_radius == pytest.approx(ref["precision_at_radius"], **close)
    assert report.n_queries_without_relevant == ref["n_queries_without_relevant"]


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested report dict -> {"a.b": scalar}, lists expanded, for pytest.approx."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        elif isinstance(value, list):
            out.update({f"{name}.{i}": v for i, v in enumerate(value)})
        else:
            out[name] = value
    return out


def _clustered(rng: np.random.Generator, n: int, n_bits: int, labels: np.ndarray,
               flip: float) -> np.ndarray:
    """±1 codes near a random centre per class, so metrics are far from chance and ties abound."""
    centres = rng.choice([-1, 1], size=(int(labels.max()) + 1, n_bits))
    flips = rng.random((n, n_bits)) < flip
    return pack_codes(np.where(flips, -centres[labels], centres[labels]))


# ---------------------------------------------------------------- hand-worked cases

# Query 0 has code 0x00 and label 0. Database (index: byte, distance, label):
#   0: 0b011 d=2 lab 0 | 1: 0b001 d=1 lab 1 | 2: 0b000 d=0 lab 1 | 3: 0b001 d=1 lab 0 |
#   4: 0b111 d=3 lab 0
# Stable order by (distance, index): 2, 1, 3, 0, 4 -> relevance 0 0 1 1 1 (ranks 3, 4, 5).
#   AP = (1/3 + 2/4 + 3/5) / 3 = 43/90.
#   Tie-aware: only distance 1 is tied ({1, 3}, one relevant after 1 item): the relevant item is
#   at rank 2 or 3 -> E[precision] = (1/2 + 1/3) / 2 = 5/12; then 2/4 and 3/5:
#   (5/12 + 1/2 + 3/5) / 3 = 91/180.
#   P@1 = P@2 = 0, P@3 = 1/3, P@5 = 3/5; R@3 = 1/3, R@5 = 1.
#   AP@3 = (1/3) / 1 = 1/3 (one relevant in the top 3); AP@4 = (1/3 + 2/4) / 2 = 5/12.
#   Radius 0: {2} -> P 0, R 0; 1: {2,1,3} -> P 1/3, R 1/3; 2: +{0} -> P 1/2, R 2/3;
#   3..8: all -> P 3/5, R 1.
# Query 1 has code 0x00 and label 2: no relevant item, so every metric is 0 for it.
HAND_DB = np.array([[0b011], [0b001], [0b000], [0b001], [0b111]], dtype=np.uint8)
HAND_DB_LABELS = np.array([0, 1, 1, 0, 0])


def test_hand_worked_single_query() -> None:
    q = np.zeros((1, 1), dtype=np.uint8)
    rep = evaluate(q, np.array([0]), HAND_DB, HAND_DB_LABELS, topk=(1, 2, 3, 4, 5), radius=2)
    assert rep.map == pytest.approx(43 / 90)
    assert rep.map_tie_aware == pytest.approx(91 / 180)
    assert rep.precision_at == pytest.approx({1: 0, 2: 0, 3: 1 / 3, 4: 2 / 4, 5: 3 / 5})
    assert rep.recall_at == pytest.approx({1: 0, 2: 0, 3: 1 / 3, 4: 2 / 3, 5: 1})
    assert rep.map_at == pytest.approx({1: 0, 2: 0, 3: 1 / 3, 4: 5 / 12, 5: 43 / 90})
    assert rep.pr_curve.precision == pytest.approx([0, 1 / 3, 1 / 2] + [3 / 5] * 6)
    assert rep.pr_curve.recall == pytest.approx([0, 1 / 3, 2 / 3] + [1] * 6)
    assert list(rep.pr_curve.radius) == list(range(9))
    assert rep.precision_at_radius == pytest.approx(1 / 2)
    assert (rep.n_queries, rep.n_db, rep.n_bits, rep.n_queries_without_relevant) == (1, 5, 8, 0)


def test_query_without_relevant_counts_as_zero() -> None:
    q = np.zeros((2, 1), dtype=np.uint8)
    rep = evaluate(q, np.array([0, 2]), HAND_DB, HAND_DB_LABELS, topk=(3,), radius=1)
    assert rep.n_queries_without_relevant == 1
    assert rep.map == pytest.approx(43 / 90 / 2)
    assert rep.map_tie_aware == pytest.approx(91 / 180 / 2)
    assert rep.map_at[3] == pytest.approx(1 / 3 / 2)
    assert rep.precision_at[3] == pytest.approx(1 / 3 / 2)
    assert rep.recall_at[3] == pytest.approx(1 / 3 / 2)
    assert rep.precision_at_radius == pytest.approx(1 / 3 / 2)


def test_ties_follow_database_index() -> None:
    # Four items at distance 0, relevance by index 0 1 0 1: ranks 2 and 4 -> AP = (1/2 + 2/4)/2.
    # Tie-aware: mean AP over the 6 placements of 2 relevant among 4 =
    #   (1 + 5/6 + 3/4 + 7/12 + 1/2 + 5/12) / 6 = 49/72.
    db = np.zeros((4, 1), dtype=np.uint8)
    rep = evaluate(np.zeros((1, 1), np.uint8), np.array([1]), db, np.array([0, 1, 0, 1]),
                   topk=(1, 2))
    assert rep.map == pytest.approx(1 / 2)
    assert rep.map_tie_aware == pytest.approx(49 / 72)
    assert rep.precision_at == pytest.approx({1: 0, 2: 1 / 2})
    # Reversing the database index order changes the stable AP but not the tie-aware one.
    rev = evaluate(np.zeros((1, 1), np.uint8), np.array([1]), db, np.array([1, 0, 1, 0]))
    assert rev.map == pytest.approx((1 + 2 / 3) / 2)
    assert rev.map_tie_aware == pytest.approx(49 / 72)


# ---------------------------------------------------------------- tie-aware vs all permutations


def _ap_over_all_tie_orders(dist: np.ndarray, rel: np.ndarray) -> Fraction:
    """Mean AP over every ordering of items within each distance (exact, with fractions)."""
    groups = [list(np.flatnonzero(dist == d)) for d in np.unique(dist)]
    total, count = Fraction(0), 0
    for orders in itertools.product(*(itertools.permutations(g) for g in groups)):
        ranked = [bool(rel[j]) for g in orders for j in g]
        hits, ap = 0, Fraction(0)
        for rank, r in enumerate(ranked, start=1):
            if r:
                hits += 1
                ap += Fraction(hits, rank)
        total += ap / hits if hits else 0
        count += 1
    return total / count


@pytest.mark.parametrize("seed", range(6))
def test_tie_aware_equals_permutation_enumeration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 7))
    # Bytes with only the low 2 bits set: distances 0..2, so most items tie.
    db = rng.integers(0, 4, (n, 1), dtype=np.uint8)
    db_labels = rng.integers(0, 2, n)
    q = rng.integers(0, 4, (3, 1), dtype=np.uint8)
    q_labels = rng.integers(0, 2, 3)
    rep = evaluate(q, q_labels, db, db_labels, topk=(1,))
    want = []
    for i in range(3):
        dist = np.unpackbits(q[i] ^ db, axis=1).sum(axis=1)
        want.append(_ap_over_all_tie_orders(dist, db_labels == q_labels[i]))
    assert rep.map_tie_aware == pytest.approx(float(sum(want) / 3), rel=1e-12)


# ---------------------------------------------------------------- random cases vs the loops

TOPK = [1, 5, 10, 37, 500]
CURVE = [1, 2, 20]


@pytest.mark.parametrize("n_bits, n_db, n_classes, flip, chunk",
                         [(8, 40, 3, 0.25, None), (8, 60, 5, 0.3, 7), (16, 45, 4, 0.2, 1),
                          (24, 30, 3, 0.3, 4)])
def test_integer_labels_match_reference(n_bits: int, n_db: int, n_classes: int, flip: float,
                                        chunk: int | None) -> None:
    rng = np.random.default_rng(n_bits * 1000 + n_db)
    db_labels = rng.integers(0, n_classes, n_db)
    q_labels = np.append(rng.integers(0, n_classes, 11), n_classes + 3)  # last: no relevant
    all_labels = np.concatenate([q_labels[:-1], [0], db_labels])
    codes = _clustered(rng, len(all_labels), n_bits, all_labels, flip)
    q, db = codes[:len(q_labels)], codes[len(q_labels):]
    rep = evaluate(q, q_labels, db, db_labels, topk=TOPK, radius=2, curve_ks=CURVE, chunk=chunk)
    relevant = q_labels[:, None] == db_labels[None, :]
    assert_matches(rep, reference(q, db, relevant, TOPK, 2, CURVE))
    assert rep.n_queries_without_relevant >= 1


def test_multi_hot_labels_match_reference() -> None:
    rng = np.random.default_rng(7)
    n_db, nq, n_labels = 50, 9, 4
    db_hot = (rng.random((n_db, n_labels)) < 0.3).astype(np.uint8)
    q_hot = (rng.random((nq, n_labels)) < 0.3).astype(np.uint8)
    q_hot[0] = 0  # a query with no label shares nothing
    codes = rng.integers(0, 4, (nq + n_db, 2), dtype=np.uint8)  # 16 bits, distances 0..4
    q, db = codes[:nq], codes[nq:]
    rep = evaluate(q, q_hot, db, db_hot, topk=TOPK, radius=1, curve_ks=CURVE, chunk=4)
    relevant = (q_hot.astype(int) @ db_hot.T.astype(int)) > 0
    assert_matches(rep, reference(q, db, relevant, TOPK, 1, CURVE))
    assert rep.n_queries_without_relevant >= 1


def test_one_hot_equals_integer_labels() -> None:
    rng = np.random.default_rng(3)
    db_labels, q_labels = rng.integers(0, 4, 70), rng.integers(0, 4, 13)
    codes = _clustered(rng, 83, 16, np.concatenate([q_labels, db_labels]), 0.3)
    by_int = evaluate(codes[:13], q_labels, codes[13:], db_labels)
    eye = np.eye(4, dtype=np.float64)
    by_hot = evaluate(codes[:13], eye[q_labels], codes[13:], eye[db_labels])
    assert _flat(by_hot.to_dict()) == pytest.approx(_flat(by_int.to_dict()))


def test_wide_codes_use_uint16_distances() -> None:
    # 1024 bits: distances above 255 need the uint16 path.
    rng = np.random.default_rng(4)
    db_labels, q_labels = rng.integers(0, 3, 25), rng.integers(0, 3, 4)
    codes = _clustered(rng, 29, 1024, np.concatenate([q_labels, db_labels]), 0.45)
    rep = evaluate(codes[:4], q_labels, codes[4:], db_labels, topk=[3, 10], curve_ks=[2],
                   radius=500)
    relevant = q_labels[:, None] == db_labels[None, :]
    assert_matches(rep, reference(codes[:4], codes[4:], relevant, [3, 10], 500, [2]))


# ---------------------------------------------------------------- inputs and consistency


def test_pm1_and_real_codes_equal_packed() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 40)
    packed = _clustered(rng, 40, 32, labels, 0.3)
    pm1 = unpack_codes(packed)
    real = pm1 * rng.uniform(0.1, 2.0, pm1.shape)  # tanh-like outputs: only the sign matters
    want = evaluate(packed[:8], labels[:8], packed[8:], labels[8:]).to_dict()
    assert evaluate(pm1[:8], labels[:8], pm1[8:], labels[8:]).to_dict() == want
    assert evaluate(real[:8], labels[:8], packed[8:], labels[8:]).to_dict() == want


def test_full_depth_ap_at_equals_map_and_chunks_agree() -> None:
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 4, 90)
    codes = _clustered(rng, 90, 16, labels, 0.3)
    reps = [evaluate(codes[:20], labels[:20], codes[20:], labels[20:], topk=(70, 1000), chunk=c)
            for c in (None, 1, 3)]
    assert reps[0].map_at[70] == pytest.approx(reps[0].map)
    assert reps[0].map_at[1000] == pytest.approx(reps[0].map)
    assert reps[0].precision_at[1000] == pytest.approx(reps[0].precision_at[70])
    assert reps[0].precision_curve_ks == [1, 5, 10, 20, 50]
    for other in reps[1:]:
        assert _flat(other.to_dict()) == pytest.approx(_flat(reps[0].to_dict()))


def test_to_dict_is_json_safe() -> None:
    rep = evaluate(np.zeros((1, 1), np.uint8), np.array([0]), HAND_DB, HAND_DB_LABELS,
                   topk=(np.int64(3), 5))
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["map_at"].keys() == {"3", "5"}
    assert d["pr_curve"]["radius"] == list(range(9))
    assert d["n_bits"] == 8 and isinstance(d["map"], float)


@pytest.mark.parametrize("kwargs, match", [
    (dict(db_codes=np.zeros((5, 2), np.uint8)), "same n_bits"),
    (dict(db_labels=np.zeros(4, int)), "database labels"),
    (dict(query_labels=np.zeros((1, 3))), "same kind"),
    (dict(query_labels=np.array([0.5])), "integers"),
    (dict(topk=(0, 3)), "positive"),
    (dict(radius=-1), "radius"),
    (dict(chunk=0), "chunk"),
    (dict(query_codes=np.zeros((0, 1), np.uint8), query_labels=np.zeros(0, int)), "at least"),
])
def test_bad_inputs_raise_one_clear_error(kwargs: dict, match: str) -> None:
    args = dict(query_codes=np.zeros((1, 1), np.uint8), query_labels=np.array([0]),
                db_codes=HAND_DB, db_labels=HAND_DB_LABELS)
    args.update(kwargs)
    with pytest.raises(EvaluationError, match=match) as info:
        evaluate(**args)
    assert isinstance(info.value, AhclError) and "\n" not in str(info.value)


@pytest.mark.slow
def test_eval_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, ahcl.eval, ahcl.eval.plots, ahcl.index.hamming; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_threads_and_blocks_do_not_change_the_report() -> None:
    # per-query values are summed in query order, whatever the threads and the blocks
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 5, 400)
    codes = _clustered(rng, 400, 64, labels, 0.3)
    args = (codes[:150], labels[:150], codes[150:], labels[150:])
    one = evaluate(*args, threads=1).to_dict()
    assert evaluate(*args, threads=2).to_dict() == one
    blocks = evaluate(*args, threads=2, chunk=7).to_dict()
    assert _flat(blocks) == pytest.approx(_flat(one), rel=1e-12)


def test_counting_ranks_match_a_stable_sort_on_wide_ties() -> None:
    # 24-bit codes from 3 patterns: huge distance bins, where the rank inside a bin decides AP
    rng = np.random.default_rng(9)
    patterns = rng.integers(0, 256, (3, 3), dtype=np.uint8)
    db = patterns[rng.integers(0, 3, 500)]
    q = patterns[rng.integers(0, 3, 6)]
    db_labels, q_labels = rng.integers(0, 3, 500), rng.integers(0, 3, 6)
    rep = evaluate(q, q_labels, db, db_labels, topk=(1, 17, 250))
    dist = np.unpackbits(q[:, None, :] ^ db[None, :, :], axis=2).sum(axis=2)
    order = np.argsort(dist, axis=1, kind="stable")  # ties by database index
    ranked = (db_labels[order] == q_labels[:, None]).tolist()
    assert rep.map == pytest.approx(np.mean([_ap(r) for r in ranked]), rel=1e-12)
    for k in (1, 17, 250):
        assert rep.map_at[k] == pytest.approx(np.mean([_ap(r[:k]) for r in ranked]), rel=1e-12)
        assert rep.precision_at[k] == pytest.approx(np.mean([sum(r[:k]) / k for r in ranked]))
